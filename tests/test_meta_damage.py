"""What the mount keeps on disk about the tree (listings, call records) and what the API says
about a call decide what the mount serves: a damaged copy is dropped and fetched again, a record
the server contradicts is loaded again, and a metadata answer no parser can take (or any bug in a
task started in the background) costs that call only, never the mount."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from amigofs.api.client import CallPage, PlatformClient
from amigofs.api.models import CallSummary
from amigofs.api.stats import ClientStats
from amigofs.cache import meta
from amigofs.cache.index import CallIndex
from amigofs.config import Settings
from amigofs.daemon.mount import namespace_config
from amigofs.emulator.data import METADATA_FILENAME, Recording
from amigofs.fs.namespace import ROOT_INODE, Namespace
from amigofs.fs.records import CallRecord, RecordingSource, WorkspaceAccess
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted, wait_until, workspace_names
from tests.reliability import LISTED, PRESENTED, errno_of, presented_bytes, request_log

pytestmark = pytest.mark.mount

DEADLINE = 20.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recordings_of(emulator: EmulatorProc, workspace_id: str) -> list[Recording]:
    return [c.recording for c in emulator.data.calls(workspace_id) if c.recording is not None]


def read_everything(emulator: EmulatorProc, mnt: Mount, workspace_id: str) -> None:
    """Lists the tree and reads every file, each compared with what the emulator serves."""
    recordings = recordings_of(emulator, workspace_id)
    assert sorted(workspace_names(mnt.path)) == [workspace_id]
    assert sorted(os.listdir(mnt.path / workspace_id)) == sorted(r.call_sid for r in recordings)
    for recording in recordings:
        call_dir = mnt.path / workspace_id / recording.call_sid
        assert sorted(os.listdir(call_dir)) == sorted(LISTED)
        for name in PRESENTED:
            got = sha256((call_dir / name).read_bytes())
            assert got == sha256(presented_bytes(emulator, recording, name)), f"{call_dir}/{name}"


def _other_hex(text: bytes) -> bytes:
    """`text` with its last character replaced by another hex digit: still a valid id."""
    return text[:-1] + (b"0" if text[-1:] != b"0" else b"1")


def _edit(pattern: bytes, change: Callable[[re.Match[bytes]], bytes]) -> Callable[[bytes], bytes]:
    def edit(content: bytes) -> bytes:
        edited, count = re.subn(pattern, change, content, count=1)
        assert count == 1, f"{pattern!r} not in {content[:200]!r}"
        return edited

    return edit


def _bump(m: re.Match[bytes]) -> bytes:
    return m[1] + str(int(m[2]) + 2).encode()


# The metadata answer is kept as text in the record: its quotes escaped.
_bigger_size = _edit(rb'(\\"inbound_size_bytes\\": )(\d+)', _bump)
# The kept metadata.json (the metadata answer) with another duration: still JSON.
_other_metadata_json = _edit(rb'(\\"duration_seconds\\": )(\d+)', _bump)


def _truncated(content: bytes) -> bytes:
    return content[: len(content) // 2]


def _garbage(content: bytes) -> bytes:
    return b"\x00\xff not a record \x80\n" * 3


RECORD_DAMAGE: tuple[Callable[[bytes], bytes], ...] = (
    _bigger_size,
    _other_metadata_json,
    _truncated,
    _garbage,
)


def _stored(cache: Path, *parts: str) -> tuple[int, bytes, bytes]:
    """The row of a document in the store the mount left: its key, checksum and JSON."""
    key = meta._key("/".join(parts))
    with contextlib.closing(sqlite3.connect(cache / meta.NAME)) as conn:
        digest, body = conn.execute(
            "SELECT digest, body FROM documents WHERE key = ?", (key,)
        ).fetchone()
    assert body[:1] == b"\x01", "stored compressed"
    return key, digest, zlib.decompress(body[1:])


def _damage(cache: Path, change: Callable[[bytes], bytes], *parts: str) -> None:
    """The document's JSON changed on disk, and stored as the store stores it: only its
    checksum can tell."""
    key, _, content = _stored(cache, *parts)
    body = b"\x01" + zlib.compress(change(content))
    with contextlib.closing(sqlite3.connect(cache / meta.NAME)) as conn, conn:
        conn.execute("UPDATE documents SET body = ? WHERE key = ?", (body, key))


def _filed_under(cache: Path, source: tuple[str, ...], target: tuple[str, ...]) -> None:
    """The target's row given the source's (valid) document and checksum."""
    _, digest, content = _stored(cache, *source)
    body = b"\x01" + zlib.compress(content)
    with contextlib.closing(sqlite3.connect(cache / meta.NAME)) as conn, conn:
        conn.execute(
            "UPDATE documents SET digest = ?, body = ? WHERE key = ?",
            (digest, body, meta._key("/".join(target))),
        )


def test_damaged_listings_and_records_on_disk_are_dropped_and_fetched_again() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=10, max_duration=8.0) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        recordings = recordings_of(emulator, workspace_id)
        assert len(recordings) >= len(RECORD_DAMAGE) + 1
        with mounted(emulator.url, emulator.api_key, "--timeout", "5") as first:
            read_everything(emulator, first, workspace_id)
        cache = first.cache_dir
        assert cache is not None
        index = cache / "index.sqlite"  # the listings
        assert not (cache / "meta").exists()  # one file, not a file per call
        # The root listing, one of the workspace's ids changed (still a valid id).
        _damage(cache, _edit(workspace_id.encode(), lambda m: _other_hex(m[0])), "root")
        damaged = ["root", str(index)]
        for leftover in cache.glob("index.sqlite-*"):
            leftover.unlink()
        index.write_bytes(b"\x00\xff not a database \x80\n" * 3)
        for recording, damage in zip(recordings, RECORD_DAMAGE, strict=False):
            _damage(cache, damage, "records", workspace_id, recording.call_sid)
            damaged.append(f"records/{workspace_id}/{recording.call_sid}")
        # And one given another call's (valid) record: never served as its own.
        mover, moved = recordings[-2].call_sid, recordings[-1].call_sid
        _filed_under(cache, ("records", workspace_id, mover), ("records", workspace_id, moved))
        damaged.append(f"records/{workspace_id}/{moved}")

        with mounted(
            emulator.url, emulator.api_key, "--timeout", "5", "--cache-dir", str(cache)
        ) as mnt:
            read_everything(emulator, mnt, workspace_id)
            log = mnt.log().splitlines()
            for name in damaged:
                naming = [line for line in log if f"{name} " in line or f"{name}:" in line]
                assert len(naming) == 1, f"{name}: {naming or 'not in the log'}"
            assert mnt.process.poll() is None


@pytest.mark.parametrize("damage", ["garbage", "symlink"])
def test_a_damaged_or_linked_record_store_is_made_again(damage: str) -> None:
    with running_emulator(workspaces=1, calls_per_workspace=4, max_duration=8.0) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        with mounted(emulator.url, emulator.api_key, "--timeout", "5") as first:
            read_everything(emulator, first, workspace_id)
        cache = first.cache_dir
        assert cache is not None
        store = cache / meta.NAME
        elsewhere = cache.parent / "elsewhere.sqlite"
        for leftover in cache.glob(f"{meta.NAME}-*"):
            leftover.unlink()
        if damage == "garbage":
            store.write_bytes(b"\x00\xff not a database \x80\n" * 300)
        else:  # a valid store of the same records, elsewhere: never followed
            store.rename(elsewhere)
            store.symlink_to(elsewhere)
            before = elsewhere.read_bytes()
        with mounted(
            emulator.url, emulator.api_key, "--timeout", "5", "--cache-dir", str(cache)
        ) as mnt:
            read_everything(emulator, mnt, workspace_id)
            log = mnt.log()
            assert log.count("making it again") == 1, log
            assert "Traceback" not in log
            assert mnt.process.poll() is None
        assert store.is_file() and not store.is_symlink()
        if damage == "symlink":
            assert elsewhere.read_bytes() == before


def test_a_cached_record_the_server_contradicts_is_loaded_again() -> None:
    # The same calls, recorded again longer: every size the first mount kept is now wrong.
    knobs = {"workspaces": 1, "calls_per_workspace": 6}
    with running_emulator(min_duration=2.0, max_duration=4.0, **knobs) as before:
        workspace_id = before.data.workspaces[0].id
        with mounted(before.url, before.api_key, "--timeout", "5") as first:
            # Records kept (metadata.json read), no audio: nothing cached agrees with them.
            for recording in recordings_of(before, workspace_id):
                path = first.path / workspace_id / recording.call_sid / "metadata.json"
                assert path.read_bytes() == recording.metadata_bytes
        cache = first.cache_dir
    with running_emulator(min_duration=6.0, max_duration=9.0, **knobs) as emulator:
        recordings = recordings_of(emulator, workspace_id)
        assert [r.call_sid for r in recordings] == [
            r.call_sid for r in recordings_of(before, workspace_id)
        ]
        with mounted(
            emulator.url, emulator.api_key, "--timeout", "5", "--cache-dir", str(cache)
        ) as mnt:
            for recording in recordings:
                call_dir = mnt.path / workspace_id / recording.call_sid
                # The audio first: only a download can find the record wrong.
                for name in ("inbound.wav", "outbound.wav", "metadata.json"):
                    truth = presented_bytes(emulator, recording, name)
                    path = call_dir / name
                    assert sha256(path.read_bytes()) == sha256(truth), f"{path}"
                    assert os.stat(path).st_size == len(truth)
            urls = [e for e in request_log(emulator) if e["op"] == "get-recording-urls"]
            assert len(urls) == len(recordings), "each record is loaded again once"
            assert mnt.process.poll() is None


def test_metadata_no_parser_can_take_costs_that_call_not_the_mount() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=12, max_duration=6.0) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        # --debug: the loading ahead says when it failed, whatever the error.
        with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id, "--debug") as mnt:
            workspace = mnt.path / workspace_id
            sids = sorted(os.listdir(workspace))
            nested = sids[4]
            emulator.control(nest_metadata=[nested])
            # Three calls entered in name order: a walk, so the next ones load ahead,
            # the nested one among them.
            for sid in sids[:3]:
                os.listdir(workspace / sid)

            def asked() -> bool:
                return any(
                    e["op"] == "get-recording-metadata" and nested in e["path"]
                    for e in request_log(emulator)
                )

            def failed() -> bool:
                return mnt.process.poll() is not None or any(
                    "loading ahead failed" in line and nested in line
                    for line in mnt.log().splitlines()
                )

            wait_until(asked, DEADLINE, "the nested call's metadata to be loaded ahead")
            wait_until(failed, DEADLINE, "the loading ahead to fail")
            assert mnt.process.poll() is None, mnt.log()
            for sid in sids:
                if sid == nested:
                    assert errno_of(lambda s=sid: os.listdir(workspace / s)) == errno.EIO
                else:
                    assert sorted(os.listdir(workspace / sid)) == sorted(LISTED)
            emulator.control(nest_metadata=[])
            assert sorted(os.listdir(workspace / nested)) == sorted(LISTED)
            assert mnt.process.poll() is None


class _Client:
    """The part of PlatformClient a namespace of configured workspaces uses."""

    def __init__(self, calls: list[CallSummary]) -> None:
        self.stats = ClientStats()  # its 429 answers slow down the records loaded ahead
        self.calls = calls
        self.listings = 0
        self.broken = False

    async def list_calls_page(self, workspace_id: str, offset: int) -> CallPage:
        self.listings += 1
        if self.broken:
            raise RuntimeError("a bug in the listing")
        page = self.calls[offset : offset + 100]
        return CallPage(page, len(page), len(self.calls), offset + 100 < len(self.calls))


class _BrokenSource:
    """A RecordingSource whose every load meets a bug."""

    def __init__(self) -> None:
        self.access = WorkspaceAccess()
        self.loads: list[str] = []

    async def load(
        self,
        workspace_id: str,
        call_sid: str,
        summary: object,
        *,
        fresh: bool = False,
        links: bool = True,
    ) -> CallRecord:
        self.loads.append(call_sid)
        raise RuntimeError(f"a bug loading {call_sid}")


async def test_a_bug_in_a_background_task_is_logged_with_its_traceback_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    workspace_id = "5b0e2f4c-2d8e-4c39-9a53-1f7d7c1e0a42"
    sids = [f"CA{i:032x}" for i in range(6)]
    start = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
    calls = [
        CallSummary(workspace_id, sid, start + dt.timedelta(minutes=i), 60.0, "inbound")
        for i, sid in enumerate(sids)
    ]
    client, source = _Client(calls), _BrokenSource()
    config = namespace_config(
        Settings(workspaces=(workspace_id,)),
        identity="",
        max_readahead=32 << 20,
        control=None,
        walk_room=None,
    )
    index = CallIndex(tmp_path)
    index.open()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            namespace = Namespace(
                cast(PlatformClient, client), cast(RecordingSource, source), nursery, config,
                index=index,
            )  # fmt: skip
            workspace = await namespace.lookup(ROOT_INODE, workspace_id)
            handle = await namespace.opendir(workspace.inode)
            listed: list[str] = []
            offset = 0
            while entries := await namespace.readdir(handle, offset):
                listed += [entry.name for _, entry in entries]
                offset = entries[-1][0]
            assert sorted(listed) == sorted(sids)
            # Three calls entered in name order: a walk, so the next ones load ahead.
            for sid in sids[:3]:
                call = await namespace.lookup(workspace.inode, sid)
                with pytest.raises(RuntimeError):
                    await namespace.opendir(call.inode)
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(source.loads) == sorted(sids)
            # And a listing refreshed in the background meets one.
            client.broken = True
            namespace.drop_listings()
            assert (await namespace.lookup(ROOT_INODE, workspace_id)).inode == workspace.inode
            await trio.testing.wait_all_tasks_blocked()
            assert client.listings == 2
            # Still serving, from what it has.
            call = await namespace.lookup(workspace.inode, sids[3])
            assert (await namespace.getattr(call.inode)).is_dir
            nursery.cancel_scope.cancel()
    index.close()
    bugs = [
        record.getMessage()
        for record in caplog.records
        if record.exc_info and isinstance(record.exc_info[1], RuntimeError)
    ]
    for sid in sids[3:]:
        assert any("loading ahead failed" in m and sid in m for m in bugs), (sid, bugs)
    assert any(f"call listing of {workspace_id}: refresh failed" in m for m in bugs), bugs


def test_a_kept_record_the_server_contradicts_is_loaded_again_metadata_json_with_it() -> None:
    """A record on disk (valid checksum) whose metadata the server contradicts (an audio
    size): the first read of the audio loads the record again, and metadata.json is the
    server's metadata answer from then on."""
    with running_emulator(workspaces=1, calls_per_workspace=2, max_duration=8.0) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        recording = recordings_of(emulator, workspace_id)[0]
        with mounted(emulator.url, emulator.api_key) as first:
            read_everything(emulator, first, workspace_id)
        cache = first.cache_dir
        assert cache is not None
        # Edited through the store: a valid checksum, a size the server contradicts.
        store = meta.MetaStore(cache)
        try:
            parts = ("records", workspace_id, recording.call_sid)
            document = store.load(lambda d: cast(dict[str, Any], d), *parts)
            assert document is not None
            kept = json.loads(document["metadata_body"])
            kept["inbound_size_bytes"] += 10
            document["metadata_body"] = json.dumps(kept)
            store.save(document, *parts)
        finally:
            store.close()
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            call_dir = mnt.path / workspace_id / recording.call_sid
            inbound = (call_dir / "inbound.wav").read_bytes()
            assert inbound == presented_bytes(emulator, recording, "inbound.wav")
            got = (call_dir / METADATA_FILENAME).read_bytes()
            assert got == presented_bytes(emulator, recording, METADATA_FILENAME)
