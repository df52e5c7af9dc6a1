"""The tree driven as the adapter drives it, without a mount: a Namespace over in-memory
stand-ins of the API client and the recording source, and a call index in a temporary
directory. What is asserted is what a program sees: names, links, sizes, bytes, errnos."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from amigofs.api import errors as api
from amigofs.api.client import PAGE_LIMIT, CallPage, PlatformClient
from amigofs.api.models import CallSummary, RecordingMetadata, Workspace
from amigofs.api.stats import ClientStats
from amigofs.cache.index import CallIndex
from amigofs.config import Settings
from amigofs.daemon.mount import namespace_config
from amigofs.fs.attributes import IMMUTABLE_TIMEOUT
from amigofs.fs.errors import FsError
from amigofs.fs.namespace import (
    CONTROL_NAME,
    ROOT_INODE,
    Attributes,
    FileHandleT,
    InodeT,
    Namespace,
    NamespaceConfig,
)
from amigofs.fs.records import (
    INBOUND,
    METADATA,
    OUTBOUND,
    CallRecord,
    PresentedFile,
    Reader,
    RecordingSource,
    WorkspaceAccess,
)
from amigofs.policy.inodes import DIR_SLOT, call_inode

SALES = "5b0e2f4c-2d8e-4c39-9a53-1f7d7c1e0a42"
SUPPORT = "7c1e0a42-2d8e-4c39-9a53-5b0e2f4c1f7d"
UNNAMED = "9a531f7d-2d8e-4c39-5b0e-2f4c7c1e0a42"  # its slug is another's too: no by-name entry
MAY_1 = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
MAY_2 = dt.datetime(2024, 5, 2, 23, 30, tzinfo=dt.UTC)
AUDIO = bytes(range(256)) * 40


def _sid(n: int) -> str:
    return f"CA{n:032x}"


CALLS = [
    CallSummary(SALES, _sid(1), MAY_1, 60.0, "inbound"),
    CallSummary(SALES, _sid(2), MAY_1 + dt.timedelta(minutes=5), 30.0, "outbound"),
    CallSummary(SALES, _sid(3), MAY_2, 90.5, "inbound"),
    CallSummary(SUPPORT, _sid(4), MAY_2, 10.0, "inbound"),
]


class _Client:
    """The part of PlatformClient the tree uses: workspaces and pages of calls, and
    the counters (429 answers slow down the records loaded ahead)."""

    def __init__(self) -> None:
        self.pages = 0
        self.stats = ClientStats()

    async def list_workspaces(self) -> list[Workspace]:
        return [
            Workspace(SALES, "sales", "Sales"),
            Workspace(SUPPORT, "support", "Support"),
            Workspace(UNNAMED, "support", "Support too"),
        ]

    async def list_calls_page(
        self,
        workspace_id: str,
        offset: int,
        *,
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
    ) -> CallPage:
        self.pages += 1
        calls = [
            c
            for c in CALLS
            if c.workspace_id == workspace_id
            and c.started_at is not None
            and (date_from is None or date_from <= c.started_at.date())
            and (date_to is None or c.started_at.date() <= date_to)
        ]
        page = calls[offset : offset + PAGE_LIMIT]
        return CallPage(page, len(page), len(calls), offset + PAGE_LIMIT < len(calls))


@dataclass
class _Source:
    """A RecordingSource of in-memory files; `down`: reads fail as a network does."""

    access: WorkspaceAccess = field(default_factory=WorkspaceAccess)
    down: bool = False
    reads: int = 0
    closed_files: list[str] = field(default_factory=list)
    # The files whose sizes a record kept from an earlier mount has not had confirmed.
    unconfirmed: set[str] = field(default_factory=set)

    async def load(
        self,
        workspace_id: str,
        call_sid: str,
        summary: CallSummary | None,
        *,
        fresh: bool = False,
        links: bool = True,
    ) -> CallRecord:
        # The API's answer for a call not listed yet: what the listing would say.
        summary = next(c for c in CALLS if c.call_sid == call_sid)
        assert summary.started_at is not None
        start, duration = summary.started_at, summary.duration_seconds or 0.0
        metadata = RecordingMetadata(
            workspace_id, call_sid, summary.direction or "inbound", duration, "pcm_s16le",
            8000, "pcm_s16le", 8000, "none", start, start + dt.timedelta(seconds=duration),
            len(AUDIO), 0, 0.0,
        )  # fmt: skip
        document = b'{"call": "%s"}' % call_sid.encode()
        files = {
            INBOUND: PresentedFile(INBOUND, len(AUDIO), content=AUDIO),
            METADATA: PresentedFile(METADATA, len(document), content=document),
        }
        return CallRecord(
            workspace_id, call_sid, start, metadata, files, unconfirmed=set(self.unconfirmed)
        )

    async def read_checked(
        self,
        reader: Reader,
        offset: int,
        size: int,
        reload: Callable[[CallRecord, Exception], Awaitable[CallRecord]],
    ) -> bytes:
        self.reads += 1
        if self.down:
            raise api.TransportError("connection refused")
        assert reader.file.content is not None
        return reader.file.content[offset : offset + size]

    def prefetch(self, file: PresentedFile, offset: int, end: int) -> None:
        pass

    def closed(self, file: PresentedFile) -> None:
        self.closed_files.append(file.name)


def _config(**given: object) -> NamespaceConfig:
    # As the mount makes it from the default settings (no walk prefetch: no disk cache).
    made = namespace_config(
        Settings(),
        identity="",
        max_readahead=32 << 20,
        control=lambda: b"reads 7\n",
        walk_room=None,
    )
    return dataclasses.replace(made, **given)  # type: ignore[arg-type]


@dataclass
class _Tree:
    ns: Namespace
    client: _Client
    source: _Source
    index: CallIndex

    async def at(self, *path: str) -> Attributes:
        attrs = await self.ns.getattr(ROOT_INODE)
        for name in path:
            attrs = await self.ns.lookup(attrs.inode, name)
        return attrs

    async def listing(self, *path: str) -> list[str]:
        handle = await self.ns.opendir((await self.at(*path)).inode)
        names: list[str] = []
        offset = 0
        while entries := await self.ns.readdir(handle, offset):
            names += [entry.name for _, entry in entries]
            offset = entries[-1][0]
        self.ns.releasedir(handle)
        return names


@contextlib.asynccontextmanager
async def _tree(tmp_path: Path, **config: object) -> AsyncIterator[_Tree]:
    index = CallIndex(tmp_path)
    index.open()
    client, source = _Client(), _Source()
    try:
        async with trio.open_nursery() as nursery:
            ns = Namespace(
                cast(PlatformClient, client), cast(RecordingSource, source), nursery,
                _config(**config), index=index,
            )  # fmt: skip
            yield _Tree(ns, client, source, index)
            nursery.cancel_scope.cancel()
    finally:
        index.close()


def _errno(error: pytest.ExceptionInfo[FsError]) -> int:
    return error.value.errno


async def test_the_root_lists_workspaces_and_views_and_hides_the_control_file(
    tmp_path: Path,
) -> None:
    async with _tree(tmp_path) as tree:
        assert await tree.listing() == [*sorted([SALES, SUPPORT, UNNAMED]), "by-date", "by-name"]
        control = await tree.at(CONTROL_NAME)
        assert control.private and not control.is_dir
        with pytest.raises(FsError) as missing:
            await tree.at("no-such-workspace")
        assert _errno(missing) == errno.ENOENT


async def test_a_workspace_lists_its_calls_and_each_keeps_the_number_of_its_row(
    tmp_path: Path,
) -> None:
    async with _tree(tmp_path) as tree:
        assert sorted(await tree.listing(SALES)) == [_sid(1), _sid(2), _sid(3)]
        call = await tree.at(SALES, _sid(2))
        row = tree.index.by_sid(SALES, _sid(2))
        assert row is not None and call.inode == call_inode(row.row_id, DIR_SLOT)
        assert call.is_dir and call.mtime_ns == row.started_ns
        assert await tree.ns.getattr(call.inode) == call
        assert tree.ns.describe(call.inode) == f"{SALES}/{_sid(2)}"


async def test_a_call_directory_holds_its_files_and_a_file_reads_its_bytes(
    tmp_path: Path,
) -> None:
    async with _tree(tmp_path) as tree:
        assert await tree.listing(SALES, _sid(1)) == [INBOUND, METADATA]
        audio = await tree.at(SALES, _sid(1), INBOUND)
        assert (await tree.ns.getattr(audio.inode)).size == len(AUDIO)
        handle = await tree.ns.open(audio.inode)
        assert not tree.ns.direct_io(audio.inode)
        assert tree.ns.describe_handle(handle) == f"{SALES}/{_sid(1)}/{INBOUND}"
        assert await tree.ns.read(handle, 100, 50) == AUDIO[100:150]
        tree.ns.release(handle)
        assert tree.source.closed_files == [INBOUND]
        assert tree.ns.describe_handle(handle) == f"handle {handle}"


async def test_a_file_open_twice_is_forgotten_at_its_last_close_only(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        audio = await tree.at(SALES, _sid(1), INBOUND)
        first, second = await tree.ns.open(audio.inode), await tree.ns.open(audio.inode)
        tree.ns.release(first)
        assert tree.source.closed_files == []
        tree.ns.release(second)
        assert tree.source.closed_files == [INBOUND]


async def test_a_failed_read_is_answered_again_for_a_moment_then_tried_anew(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with _tree(tmp_path) as tree:
        handle = await tree.ns.open((await tree.at(SALES, _sid(1), INBOUND)).inode)
        tree.source.down = True
        for _ in range(3):
            with pytest.raises(api.TransportError):
                await tree.ns.read(handle, 0, 10)
        assert tree.source.reads == 1  # the kernel's retries cost no request
        tree.source.down = False
        mock_clock.jump(2.0)
        assert await tree.ns.read(handle, 0, 10) == AUDIO[:10]


async def test_the_control_file_is_made_at_each_open_and_not_cached(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        control = await tree.at(CONTROL_NAME)
        handle = await tree.ns.open(control.inode)
        assert tree.ns.direct_io(control.inode)
        assert await tree.ns.read(handle, 0, 100) == b"reads 7\n"
        assert tree.ns.describe(control.inode) == CONTROL_NAME


async def test_by_date_has_days_of_calls_and_links_back_to_the_call(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        assert await tree.listing("by-date", SALES) == ["2024-05-01", "2024-05-02"]
        assert await tree.listing("by-date", SALES, "2024-05-01") == [
            f"09-00-00_{_sid(1)}",
            f"09-05-00_{_sid(2)}",
        ]
        entry = await tree.at("by-date", SALES, "2024-05-02", f"23-30-00_{_sid(3)}")
        assert await tree.ns.readlink(entry.inode) == f"../../../{SALES}/{_sid(3)}"
        assert tree.ns.describe(entry.inode) == f"by-date/{SALES}/{_sid(3)}"


async def test_a_day_of_a_workspace_not_synced_is_listed_by_the_api_s_date_filter(
    tmp_path: Path,
) -> None:
    async with _tree(tmp_path) as tree:
        names = await tree.listing("by-date", SUPPORT, "2024-05-02")
        assert names == [f"23-30-00_{_sid(4)}"]
        assert not tree.index.sync_state(SUPPORT).complete  # one day asked for, not all
        asked = tree.client.pages
        assert await tree.listing("by-date", SUPPORT, "2024-05-02") == names
        assert tree.client.pages == asked  # then from the index, for a listing TTL


async def test_by_name_links_each_unique_slug_to_its_workspace(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        assert await tree.listing("by-name") == ["sales"]  # "support" names two
        link = await tree.at("by-name", "sales")
        assert await tree.ns.readlink(link.inode) == f"../{SALES}"
        assert tree.ns.describe(link.inode) == f"by-name/{SALES}"


async def test_each_kind_of_node_refuses_what_it_is_not(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        audio = await tree.at(SALES, _sid(1), INBOUND)
        call = await tree.at(SALES, _sid(1))
        checks: list[tuple[Callable[[], Awaitable[object]], int]] = [
            (lambda: tree.ns.lookup(audio.inode, "x"), errno.ENOTDIR),
            (lambda: tree.ns.opendir(audio.inode), errno.ENOTDIR),
            (lambda: tree.ns.open(call.inode), errno.EISDIR),
            (lambda: tree.ns.open(ROOT_INODE), errno.EISDIR),
            (lambda: tree.ns.readlink(call.inode), errno.EINVAL),
            (lambda: tree.ns.lookup(call.inode, "other.wav"), errno.ENOENT),
            (lambda: tree.ns.getattr(InodeT(call.inode + 6)), errno.ENOENT),  # no such slot
            (lambda: tree.ns.getxattr(call.inode, "security.selinux"), errno.EOPNOTSUPP),
            (lambda: tree.ns.lookup(ROOT_INODE, "by-date"), -1),
        ]
        for check, expected in checks:
            if expected < 0:
                await check()
                continue
            with pytest.raises(FsError) as error:
                await check()
            assert _errno(error) == expected


async def test_a_call_directory_and_its_audio_carry_the_call_s_attributes(
    tmp_path: Path,
) -> None:
    async with _tree(tmp_path) as tree:
        call = await tree.at(SALES, _sid(3))
        assert await tree.ns.getxattr(call.inode, "user.amigo.duration_seconds") == b"90.5"
        start = await tree.ns.getxattr(call.inode, "user.amigo.call_start")
        assert start == b"2024-05-02T23:30:00.000Z"
        audio = await tree.at(SALES, _sid(3), INBOUND)
        assert await tree.ns.getxattr(audio.inode, "user.amigo.sample_rate") == b"8000"
        metadata = await tree.at(SALES, _sid(3), METADATA)
        assert tree.ns.xattr_names(metadata.inode) == ()


async def test_the_same_call_has_the_same_inode_after_a_remount(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        first = (await tree.at(SALES, _sid(2), INBOUND)).inode
    async with _tree(tmp_path) as tree:
        # Not listed yet in this mount: the number comes from the index kept on disk.
        assert tree.ns.describe(first) == f"{SALES}/{_sid(2)}/{INBOUND}"
        assert (await tree.at(SALES, _sid(2), INBOUND)).inode == first


async def test_a_handle_that_is_not_open_is_described_by_its_number(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        assert tree.ns.describe_handle(FileHandleT(99)) == "handle 99"
        assert tree.ns.describe(InodeT(12345)) == "inode 12345"


async def test_a_file_s_size_is_asked_again_only_while_its_own_is_unconfirmed(
    tmp_path: Path,
) -> None:
    # A record kept from an earlier mount: a file whose read confirmed its size is
    # cached by the kernel again, though its neighbour stays unread (a getattr before
    # every read of a re-read, otherwise).
    async with _tree(tmp_path) as tree:
        tree.source.unconfirmed = {OUTBOUND}
        assert (await tree.at(SALES, _sid(1), INBOUND)).timeout == IMMUTABLE_TIMEOUT
    (tmp_path / "again").mkdir()
    async with _tree(tmp_path / "again") as tree:
        tree.source.unconfirmed = {INBOUND}
        assert (await tree.at(SALES, _sid(1), INBOUND)).timeout == 0.0
