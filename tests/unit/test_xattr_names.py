"""Extended attributes without records: a node's attribute names are known without
loading its call, questions that are not ours (ACLs, security labels) load nothing,
and a user.amigo.* value is what the call's metadata says."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
import trio

from amigofs.api import errors as api
from amigofs.api.client import PlatformClient
from amigofs.api.models import CallSummary
from amigofs.cache.index import CallIndex
from amigofs.fs.errors import FsError
from amigofs.fs.namespace import ROOT_INODE, InodeT, Namespace
from amigofs.fs.records import (
    CALL,
    FILE_NAMES,
    INBOUND,
    METADATA,
    OUTBOUND,
    CallRecord,
    PresentedFile,
    RecordingSource,
)
from amigofs.fs.xattrs import (
    ARCHIVED_NAMES,
    CALL_NAMES,
    XATTR_PREFIX,
    archived_xattrs,
    call_xattrs,
    file_xattrs,
)
from amigofs.policy.inodes import DIR_SLOT, call_inode, file_slot
from tests.unit.test_nodes import SALES, _Client, _config, _sid, _Source

NOT_OURS = ("security.selinux", "system.posix_acl_access", "system.posix_acl_default")
ARCHIVED = _sid(2)
RESTORE = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@dataclass
class _CountingSource(_Source):
    """Counts the records loaded (each costs requests on a mount); one call archived."""

    loads: int = 0
    archived: set[str] = field(default_factory=lambda: {ARCHIVED})

    async def load(
        self,
        workspace_id: str,
        call_sid: str,
        summary: CallSummary | None,
        *,
        fresh: bool = False,
        links: bool = True,
    ) -> CallRecord:
        self.loads += 1
        if call_sid in self.archived:
            raise api.Archived("archived", restore_eta=RESTORE, retry_after=None)
        return await super().load(workspace_id, call_sid, summary, fresh=fresh, links=links)


@dataclass
class _Listed:
    ns: Namespace
    source: _CountingSource
    index: CallIndex

    def inode(self, call_sid: str, slot: int = DIR_SLOT) -> InodeT:
        """The inode of a listed call's slot, as the kernel has it from readdirplus:
        no lookup (which would load the record of a call file's directory)."""
        row = self.index.by_sid(SALES, call_sid)
        assert row is not None
        return InodeT(call_inode(row.row_id, slot))

    async def value(self, inode: InodeT, name: str) -> str:
        return (await self.ns.getxattr(inode, name)).decode()


@contextlib.asynccontextmanager
async def _listed(tmp_path: Path) -> AsyncIterator[_Listed]:
    """A tree whose SALES workspace has been listed, as after `ls` of it."""
    index = CallIndex(tmp_path)
    index.open()
    source = _CountingSource()
    try:
        async with trio.open_nursery() as nursery:
            ns = Namespace(
                cast(PlatformClient, _Client()), cast(RecordingSource, source), nursery,
                _config(), index=index,
            )  # fmt: skip
            workspace = await ns.lookup(ROOT_INODE, SALES)
            handle = await ns.opendir(workspace.inode)
            offset = 0
            while entries := await ns.readdir(handle, offset):
                offset = entries[-1][0]
            ns.releasedir(handle)
            assert source.loads == 0
            yield _Listed(ns, source, index)
            nursery.cancel_scope.cancel()
    finally:
        index.close()


def _full(names: tuple[str, ...]) -> list[str]:
    return [XATTR_PREFIX + name for name in names]


async def test_a_call_s_and_its_files_names_are_listed_without_loading_the_call(
    tmp_path: Path,
) -> None:
    async with _listed(tmp_path) as tree:
        call = tree.inode(_sid(1))
        assert list(tree.ns.xattr_names(call)) == _full(CALL_NAMES)
        for position, name in enumerate(FILE_NAMES):
            names = tree.ns.xattr_names(tree.inode(_sid(1), file_slot(position)))
            assert list(names) == ([] if name == METADATA else _full(CALL_NAMES)), name
        assert tree.source.loads == 0


async def test_questions_that_are_not_ours_are_answered_without_loading_anything(
    tmp_path: Path,
) -> None:
    async with _listed(tmp_path) as tree:
        for inode in (tree.inode(_sid(1)), tree.inode(_sid(1), file_slot(0))):
            for name in NOT_OURS:  # namespaces amigofs has nothing in
                with pytest.raises(FsError) as error:
                    await tree.ns.getxattr(inode, name)
                assert error.value.errno == errno.EOPNOTSUPP, name
            for name in ("user.other", "user.amigo.no_such_name"):  # not set
                with pytest.raises(FsError) as error:
                    await tree.ns.getxattr(inode, name)
                assert error.value.errno == errno.ENODATA, name
        assert tree.source.loads == 0


async def test_a_value_loads_the_call_once_and_is_what_its_metadata_says(
    tmp_path: Path,
) -> None:
    async with _listed(tmp_path) as tree:
        call = tree.inode(_sid(3))
        assert await tree.value(call, "user.amigo.duration_seconds") == "90.5"
        assert await tree.value(call, "user.amigo.call_start") == "2024-05-02T23:30:00.000Z"
        audio = tree.inode(_sid(3), file_slot(FILE_NAMES.index(INBOUND)))
        assert await tree.value(audio, "user.amigo.sample_rate") == "8000"
        assert tree.source.loads == 1
        metadata = tree.inode(_sid(3), file_slot(FILE_NAMES.index(METADATA)))
        with pytest.raises(FsError) as error:
            await tree.ns.getxattr(metadata, "user.amigo.format")
        assert error.value.errno == errno.ENODATA


async def test_an_archived_call_shows_a_recorded_call_s_names_then_its_own(
    tmp_path: Path,
) -> None:
    async with _listed(tmp_path) as tree:
        call = tree.inode(ARCHIVED)
        # Not known archived yet: its names are a recorded call's, each with a value.
        assert list(tree.ns.xattr_names(call)) == _full(CALL_NAMES)
        assert await tree.value(call, "user.amigo.direction") == "outbound"
        assert await tree.value(call, "user.amigo.tts_provider") == "unknown"
        # Known archived now (it took one load): its restore time is listed too.
        assert list(tree.ns.xattr_names(call)) == _full(ARCHIVED_NAMES)
        assert await tree.value(call, "user.amigo.restore_eta") == "2030-01-02T03:04:05.000Z"
        assert tree.source.loads == 1


async def test_every_name_listed_has_a_value_and_every_value_is_listed(
    tmp_path: Path,
) -> None:
    async with _listed(tmp_path) as tree:
        record = await tree.source.load(SALES, _sid(1), None)
    record.files[CALL] = PresentedFile(CALL, 0)
    assert tuple(call_xattrs(record)) == CALL_NAMES
    for name in (INBOUND, OUTBOUND, CALL):
        assert tuple(file_xattrs(record, name)) == CALL_NAMES, name
    summaries = [None, CallSummary(SALES, ARCHIVED, None, None, None)]
    for summary in summaries:
        archived = api.Archived("archived", restore_eta=None, retry_after=None)
        assert tuple(archived_xattrs(summary, archived)) == ARCHIVED_NAMES
