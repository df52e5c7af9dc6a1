"""Opening a cache costs the same whatever it holds (issue 21: a remount with a million
calls cached is live within 2 s, "no scan of the whole cache at start").

A cache of 100,000 calls (their records, the rows of their blocks, the call index) is
opened as a mount opens it, and what the opening does is counted: the steps of SQLite's
virtual machine on every connection the stores make (a progress handler), and the
directory entries listed. Both must be what opening a cache of a few hundred calls takes,
give or take a little: a row count, a sum of sizes, an integrity check or a walk of the
block files would multiply them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from amigofs.api.models import CallSummary
from amigofs.cache import index as call_index
from amigofs.cache.block_format import FileKey, footprint
from amigofs.cache.block_index import BlockIndex
from amigofs.cache.block_writer import BlockWriter
from amigofs.cache.disk_cache import DiskCache
from amigofs.cache.index import CallIndex
from amigofs.cache.meta import MetaStore

LARGE = 100_000
SMALL = 300
# Block files really written (the rest have rows only): a walk of them would show.
BLOCK_FILES = 1_000
BLOCK = 256 << 10
WORKSPACE = "ws-large"
# blocks.v3/<xx>/: listed to measure what the directories take.
BLOCK_DIRS = 256
# SQLite's progress handler is called every this many virtual machine steps.
STEP = 10
# What the large cache's opening may take beyond the small one's: a few B-tree levels
# more per lookup, nothing per row.
SLACK = 1.5


def summaries(count: int) -> list[CallSummary]:
    return [
        CallSummary(WORKSPACE, f"CA{number:032x}", None, 60.0, "inbound") for number in range(count)
    ]


def build(root: Path, calls: int) -> None:
    """A cache as a mount leaves it after caching `calls` calls: a record each, the block
    of each one's metadata.json (a row each; a file for the first BLOCK_FILES), the call
    index listing them."""
    listed = summaries(calls)
    meta = MetaStore(root)
    blocks = BlockIndex(root)
    blocks.open()
    try:
        for call in listed[:SMALL]:
            meta.save(
                {"metadata_body": "{}" * 100, "urls": None}, "records", WORKSPACE, call.call_sid
            )
        meta.save({"identity": "x", "workspaces": [WORKSPACE]}, "root")
        files = [FileKey(WORKSPACE, call.call_sid, "metadata.json", 600) for call in listed]
        for key in files[:BLOCK_FILES]:
            with BlockWriter(str(root), key.relative_dir, BLOCK) as writer:
                writer.write(0, memoryview(b"{" * key.size))
        # In the rows' order: written at random, they take the test seconds longer.
        for key in sorted(files, key=lambda key: key.relative_dir):
            blocks.stored((key.relative_dir, 0), footprint(key.size), ahead=False)
        blocks.flush()
    finally:
        blocks.close()
        meta.close()
    copy_records(root / "meta.sqlite", calls - SMALL)
    index = CallIndex(root)
    index.open()
    try:
        for start in range(0, calls, 10_000):
            index.add(WORKSPACE, listed[start : start + 10_000])
    finally:
        index.close()


def copy_records(path: Path, count: int) -> None:
    """`count` more records, copies of the first (MetaStore.save takes 80 µs a record:
    what is opened is rows, whatever they hold)."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT OR IGNORE INTO documents (key, digest, body) "
            "SELECT random(), d.digest, d.body FROM n, (SELECT * FROM documents LIMIT 1) d",
            (count,),
        )
    conn.close()


@dataclass(slots=True)
class Counts:
    sqlite_steps: int = 0
    listed_entries: int = 0


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    """Counts, from now on, SQLite's steps on every new connection and the entries of
    every directory listed."""
    counts = Counts()
    connect = sqlite3.connect

    def tick() -> int:
        counts.sqlite_steps += STEP
        return 0  # go on

    def counting_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_progress_handler(tick, STEP)
        return conn

    def counting(list_dir: Callable[..., Any]) -> Callable[..., Any]:
        def listed(*args: Any, **kwargs: Any) -> Any:
            entries = list(list_dir(*args, **kwargs))
            counts.listed_entries += len(entries)
            return entries

        return listed

    monkeypatch.setattr(sqlite3, "connect", counting_connect)
    monkeypatch.setattr(os, "listdir", counting(os.listdir))
    monkeypatch.setattr(os, "scandir", _CountingScandir.wrapping(os.scandir, counts))
    monkeypatch.setattr(os, "walk", counting(os.walk))
    yield counts


class _CountingScandir:
    """os.scandir as a context manager and iterator, its entries counted."""

    def __init__(self, inner: Any, counts: Counts) -> None:
        self._inner = inner
        self._counts = counts

    @classmethod
    def wrapping(cls, scandir: Callable[..., Any], counts: Counts) -> Callable[..., Any]:
        return lambda *args, **kwargs: cls(scandir(*args, **kwargs), counts)

    def __enter__(self) -> _CountingScandir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._inner.close()

    def __iter__(self) -> Iterator[os.DirEntry[str]]:
        for entry in self._inner:
            self._counts.listed_entries += 1
            yield entry

    def close(self) -> None:
        self._inner.close()


def open_as_a_mount(root: Path) -> None:
    """What a mount opens at start, in its order (daemon.mount.serve and the preflight's
    look for a tree an earlier mount kept), then closes."""
    call_index.lists_calls_of(root, ["ws-other", WORKSPACE])
    disk = DiskCache(root, max_bytes=1 << 40, block_size=BLOCK, min_free_bytes=0)
    disk.open()
    try:
        meta = MetaStore(root)
        disk.add_tenant(meta)
        index = CallIndex(root)
        index.open()
        index.close()
        meta.close()
    finally:
        disk.close()


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    small = tmp_path_factory.mktemp("small") / "cache"
    large = tmp_path_factory.mktemp("large") / "cache"
    build(small, SMALL)
    build(large, LARGE)
    return small, large


def cost_of_opening(root: Path, counts: Counts) -> Counts:
    counts.sqlite_steps = counts.listed_entries = 0
    open_as_a_mount(root)
    return Counts(counts.sqlite_steps, counts.listed_entries)


def test_opening_a_cache_of_100000_calls_reads_what_opening_one_of_300_does(
    caches: tuple[Path, Path], counted: Counts
) -> None:
    small, large = caches
    open_as_a_mount(small)  # once before: a first open may convert or make things
    open_as_a_mount(large)
    few = cost_of_opening(small, counted)
    many = cost_of_opening(large, counted)
    assert few.sqlite_steps > 0, "the counting sees the stores' connections"
    assert many.sqlite_steps <= SLACK * few.sqlite_steps + 10_000, (
        f"opening {LARGE} calls took {many.sqlite_steps} SQLite steps, {SMALL} calls "
        f"{few.sqlite_steps}: something at start reads every row"
    )
    assert many.listed_entries <= BLOCK_DIRS + 16, (
        f"opening {LARGE} calls listed {many.listed_entries} directory entries: "
        "something at start walks the block files"
    )


def test_a_cache_opened_again_still_knows_what_its_blocks_take(caches: tuple[Path, Path]) -> None:
    """The bytes counted toward --cache-size come back from the running total, not a sum."""
    _small, large = caches
    disk = DiskCache(large, max_bytes=1 << 40, block_size=BLOCK, min_free_bytes=0)
    disk.open()
    try:
        assert disk.blocks.file_bytes == LARGE * footprint(600)
    finally:
        disk.close()


def checked_after_open(root: Path) -> None:
    """Opens the call index, has its pages checked at once, and closes it."""
    index = CallIndex(root)
    index.open()
    try:
        check = index.check_in_background(delay=0)
        assert check is not None
        check.join(30)
    finally:
        index.close()


def test_damage_inside_the_index_found_after_start_has_the_next_open_rebuild_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pages are checked in a thread, not at open: damage past the header (which
    opening does not read) is found there, and the next open starts the index again."""
    build(tmp_path, SMALL)
    path = tmp_path / call_index.NAME
    size = path.stat().st_size
    with open(path, "r+b") as f:  # the last pages: the calls' rows, not the schema
        f.seek(size // 4096 * 3 // 4 * 4096)
        f.write(b"\x13" * (size - f.tell()))
    checked_after_open(tmp_path)  # opening reads the header and the format row only
    assert "is damaged" in caplog.text and "unusable" not in caplog.text
    index = CallIndex(tmp_path)
    index.open()
    try:
        assert "unusable" in caplog.text
        assert index.listed_count(WORKSPACE) == 0  # rebuilt from the API, never served wrong
        index.add(WORKSPACE, summaries(3))
        assert index.listed_count(WORKSPACE) == 3
    finally:
        index.close()
    assert not (tmp_path / f"{call_index.NAME}{call_index.DAMAGED_SUFFIX}").exists()


def test_a_sound_index_checked_after_start_is_kept(tmp_path: Path) -> None:
    build(tmp_path, SMALL)
    checked_after_open(tmp_path)
    index = CallIndex(tmp_path)
    index.open()
    try:
        assert index.listed_count(WORKSPACE) == SMALL
    finally:
        index.close()
