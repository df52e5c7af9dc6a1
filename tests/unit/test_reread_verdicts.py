"""A block an earlier mount left is checked against its CRC once per mount (issue 22):
its verdict outlives its entry in the bounded block table, so a second read of a file
larger than the table holds does not read and check every block again; a block file
replaced meanwhile is still found out (by its header) and fetched again."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs.cache import block_reader, blocks
from amigofs.cache.block_format import FileKey
from amigofs.cache.disk_cache import DiskCache
from tests.unit.block_doubles import block_file
from tests.unit.test_read_path_perf_safety import BLOCK, earlier_mount, open_disk

BLOCKS = 24
TABLE = 8  # idle blocks the table keeps: a third of the file


@pytest.fixture
def data() -> bytes:
    return random.Random(7).randbytes(BLOCKS * BLOCK - 99)


@pytest.fixture
def left(
    tmp_path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DiskCache, FileKey, Path]]:
    monkeypatch.setattr(blocks, "IDLE_BLOCKS", TABLE)
    monkeypatch.setattr(block_reader, "MAX_OPEN_BLOCKS", TABLE // 2)
    key = FileKey("ws", "call", "a", len(data))
    directory = earlier_mount(tmp_path, key, data)
    disk = open_disk(tmp_path)
    try:
        yield disk, key, directory
    finally:
        disk.close()


def read_through(disk: DiskCache, key: FileKey, data: bytes) -> None:
    step = BLOCK // 2 + 17  # reads across block boundaries, as a header's offset makes
    for start in range(0, len(data), step):
        end = min(len(data), start + step)
        assert disk.copy(key, start, end) == data[start:end]


def test_each_left_block_is_checked_once_in_a_mount(
    left: tuple[DiskCache, FileKey, Path], data: bytes
) -> None:
    disk, key, _ = left
    read_through(disk, key, data)
    assert disk.checked_blocks == BLOCKS
    assert len(disk.blocks) <= TABLE + 1  # the table stayed bounded
    read_through(disk, key, data)
    read_through(disk, key, data)
    assert disk.checked_blocks == BLOCKS
    assert disk.damaged_blocks == 0


def test_a_block_replaced_after_its_check_is_not_served(
    left: tuple[DiskCache, FileKey, Path], data: bytes
) -> None:
    disk, key, directory = left
    read_through(disk, key, data)
    # Block 0 is long out of the table and its descriptor closed: a file of other
    # bytes (block 1's) put in its place is found out by its header.
    other = directory.with_name("other")
    other.write_bytes(block_file(directory, 1).read_bytes())
    other.rename(block_file(directory, 0))
    assert disk.copy(key, 0, 100) is None
    assert not disk.has(key, 0)
    assert disk.copy(key, BLOCK, BLOCK + 100) == data[BLOCK : BLOCK + 100]
    # Cut short in place: found out by the read that serves it.
    with open(block_file(directory, 2), "r+b") as f:
        f.truncate(100)
    assert disk.copy(key, 2 * BLOCK, 2 * BLOCK + 200) is None
    assert not disk.has(key, 2)
