"""A re-read's bookkeeping (issue 22): reading blocks from the cache records their last
use in memory; the block index on disk is written with the next batch (blocks stored,
found or lost; eviction; unmount), never once per read, and the order eviction reads
still has the blocks read last at its end.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amigofs.cache import block_index
from amigofs.cache.block_format import FileKey, footprint
from amigofs.cache.block_writer import BlockWriter
from amigofs.cache.disk_cache import DiskCache

BLOCK = 64 << 10
BLOCKS = 6


class Clock:
    """time.monotonic for the block index: each look at it is 10 s after the last, so
    no batch is ever held back for want of time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(block_index.time, "monotonic", fake)
    return fake


@pytest.fixture
def data() -> bytes:
    return random.Random(22).randbytes(BLOCKS * BLOCK)


def open_disk(root: Path) -> DiskCache:
    disk = DiskCache(
        root, max_bytes=64 * footprint(BLOCK), block_size=BLOCK, min_free_bytes=0, count_other=False
    )
    disk.open()
    return disk


def connection(cache: DiskCache) -> sqlite3.Connection:
    conn = cache.index._conn
    assert conn is not None
    return conn


def writes(conn: sqlite3.Connection) -> list[str]:
    """The statements that write the `blocks` table, as sqlite runs them (one a row)."""
    seen: list[str] = []

    def trace(statement: str) -> None:
        head = statement.lstrip().upper()
        if head.startswith(("INSERT", "UPDATE", "DELETE")) and " BLOCKS" in head:
            seen.append(statement)

    conn.set_trace_callback(trace)
    return seen


def used_order(conn: sqlite3.Connection) -> list[int]:
    """Block indexes, least recently read first (blocks fetched ahead and never read,
    which eviction takes last, are among them by when they landed)."""
    return [index for (index,) in conn.execute("SELECT idx FROM blocks ORDER BY used")]


def read_ones(conn: sqlite3.Connection) -> list[int]:
    return [index for (index,) in conn.execute("SELECT idx FROM blocks WHERE ahead = 0")]


@dataclass(frozen=True, slots=True)
class Cached:
    """A cache holding `data` in BLOCKS blocks, its index flushed; `writes` lists the
    index's writes from then on."""

    cache: DiskCache
    key: FileKey
    conn: sqlite3.Connection
    writes: list[str]


@pytest.fixture
def cached(tmp_path: Path, data: bytes, clock: Clock) -> Iterator[Cached]:
    key = FileKey("ws", "call", "a", len(data))
    disk = open_disk(tmp_path)
    with BlockWriter(str(tmp_path), key.relative_dir, BLOCK) as writer:
        for index, length, crc in writer.write(0, memoryview(data)):
            disk.added(key, index, length, crc)
    disk.blocks.flush()
    conn = connection(disk)
    try:
        yield Cached(disk, key, conn, writes(conn))
    finally:
        disk.close()


def test_reads_of_a_cached_block_write_the_index_once_with_the_next_batch(
    cached: Cached, data: bytes
) -> None:
    cache, key, conn, seen = cached.cache, cached.key, cached.conn, cached.writes
    for _ in range(200):
        assert cache.copy(key, 10, BLOCK - 10) == data[10 : BLOCK - 10]
    assert seen == []  # 200 reads, long apart: not one write
    cache.blocks.flush()
    assert len(seen) == 1  # the block's last use, once
    assert used_order(conn)[-1] == 0
    assert read_ones(conn) == [0]


def test_reads_over_many_blocks_are_one_batch_and_keep_the_order_eviction_reads(
    cached: Cached, data: bytes
) -> None:
    cache, key, conn, seen = cached.cache, cached.key, cached.conn, cached.writes
    order = [3, 1, 4, 0, 5, 2]
    for _ in range(20):
        for index in order:
            got = cache.copy(key, index * BLOCK, (index + 1) * BLOCK)
            assert got == data[index * BLOCK : (index + 1) * BLOCK]
    assert seen == []
    cache.blocks.flush()
    assert len(seen) == BLOCKS  # one row a block, however often it was read
    assert used_order(conn) == order
    seen.clear()
    cache.blocks.flush()  # nothing new: nothing written
    assert seen == []


def test_touches_ride_with_a_block_stored(cached: Cached, data: bytes, tmp_path: Path) -> None:
    cache, key, conn = cached.cache, cached.key, cached.conn
    for index in (4, 2):
        cache.copy(key, index * BLOCK, index * BLOCK + 1)
    other = FileKey("ws", "call", "b", BLOCK)
    with BlockWriter(str(tmp_path), other.relative_dir, BLOCK) as writer:
        for index, length, crc in writer.write(0, memoryview(data[:BLOCK])):
            cache.added(other, index, length, crc)
    # The store was due (the clock moved on): the touches went with it, in their order.
    rows = conn.execute("SELECT idx, used FROM blocks ORDER BY used").fetchall()
    assert len(rows) == BLOCKS + 1
    assert [index for index, _ in rows[-3:-1]] == [4, 2]


def test_an_unmount_keeps_the_last_reads(tmp_path: Path, data: bytes, clock: Clock) -> None:
    key = FileKey("ws", "call", "a", len(data))
    cache = open_disk(tmp_path)
    with BlockWriter(str(tmp_path), key.relative_dir, BLOCK) as writer:
        for index, length, crc in writer.write(0, memoryview(data)):
            cache.added(key, index, length, crc)
    for index in (5, 0):
        cache.copy(key, index * BLOCK, index * BLOCK + 100)
    cache.close()
    conn = sqlite3.connect(tmp_path / block_index.NAME)
    try:
        assert used_order(conn)[-2:] == [5, 0]
        assert sorted(read_ones(conn)) == [0, 5]
    finally:
        conn.close()


def test_touches_held_are_bounded(
    cached: Cached, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(block_index, "TOUCHES_HELD", 4)
    cache, key, seen = cached.cache, cached.key, cached.writes
    for index in range(3):
        cache.copy(key, index * BLOCK, index * BLOCK + 1)
    assert seen == []
    cache.copy(key, 3 * BLOCK, 3 * BLOCK + 1)  # the fourth block held: written now
    assert len(seen) == 4
    assert used_order(cached.conn)[-4:] == [0, 1, 2, 3]
