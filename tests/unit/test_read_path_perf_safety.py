"""What the faster read path must still guarantee (issue 13): a block an earlier mount
left is checked by the read that first serves it, and never served if it is wrong;
one not in the page cache is checked in a thread instead; a read's buffer is used
again only once nothing refers to it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

from amigofs.cache.block_format import HEADER, FileKey, footprint
from amigofs.cache.block_reader import Unchecked
from amigofs.cache.block_writer import BlockWriter
from amigofs.cache.disk_cache import DiskCache
from amigofs.cache.store import BlockStore
from tests.unit.block_doubles import block_file
from tests.unit.test_block_store_disk import FakeWorker, stored_file

BLOCK = 64 << 10


@pytest.fixture
def data() -> bytes:
    return random.Random(13).randbytes(8 * BLOCK + 321)


def open_disk(root: Path) -> DiskCache:
    disk = DiskCache(
        root, max_bytes=64 * footprint(BLOCK), block_size=BLOCK, min_free_bytes=0, count_other=False
    )
    disk.open()
    return disk


def earlier_mount(root: Path, key: FileKey, data: bytes) -> Path:
    """Every block of `data` written as an earlier mount left it; the blocks' folder."""
    open_disk(root).close()
    with BlockWriter(str(root), key.relative_dir, BLOCK) as writer:
        writer.write(0, memoryview(data))
    return root / key.relative_dir


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x80]))


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_the_first_read_of_a_left_block_checks_it_whole(tmp_path: Path, data: bytes) -> None:
    key = FileKey("ws", "call", "a", len(data))
    directory = earlier_mount(tmp_path, key, data)
    # Damage where no read asks: the end of block 1, the start of block 2.
    flip(block_file(directory, 1), HEADER.size + BLOCK - 1)
    flip(block_file(directory, 2), HEADER.size)
    with open(block_file(directory, 8), "ab") as f:  # the last block, longer than its header says
        f.write(b"x")
    (block_file(directory, 5)).write_bytes(
        (block_file(directory, 4)).read_bytes()
    )  # block 4 under 5's name
    disk = open_disk(tmp_path)
    try:
        # Bytes that miss every damaged byte: still, no damaged block is served.
        assert disk.copy(key, 100, BLOCK + 10) is None  # block 1's head
        assert disk.copy(key, 2 * BLOCK + 10, 3 * BLOCK) is None  # block 2's tail
        assert disk.copy(key, 8 * BLOCK, 8 * BLOCK + 10) is None
        assert disk.copy(key, 5 * BLOCK, 5 * BLOCK + 10) is None
        present = [disk.has(key, i) for i in range(9)]
        assert present == [True, False, False, True, True, False, True, True, False]
        assert disk.damaged_blocks == 4
        # Sound blocks are served, checked once.
        assert disk.copy(key, 10, BLOCK - 10) == data[10 : BLOCK - 10]
        assert disk.copy(key, 4 * BLOCK + 7, 5 * BLOCK) == data[4 * BLOCK + 7 : 5 * BLOCK]
        assert disk.is_ready(key, 0) and disk.is_ready(key, 4)
        assert disk.copy(key, 6 * BLOCK, 8 * BLOCK) == data[6 * BLOCK : 8 * BLOCK]
    finally:
        disk.close()


def test_a_left_block_not_in_the_page_cache_is_left_to_a_thread(
    tmp_path: Path, data: bytes
) -> None:
    key = FileKey("ws", "call", "a", len(data))
    directory = earlier_mount(tmp_path, key, data)
    for index in range(3):
        drop_from_page_cache(block_file(directory, index))
    disk = open_disk(tmp_path)
    try:
        got = disk.copy(key, 0, 3 * BLOCK)
        if not isinstance(got, Unchecked):
            pytest.skip("this filesystem reads with RWF_NOWAIT as if all were cached")
        assert got.indexes and not any(disk.is_ready(key, i) for i in got.indexes)
        blocks = disk.unverified(key, got.indexes)
        assert disk.apply_checks(key, disk.check_blocks(key, blocks)) == 0
        assert disk.copy(key, 0, 3 * BLOCK) == data[: 3 * BLOCK]
    finally:
        disk.close()


async def test_a_store_read_after_a_remount_checks_and_refetches(
    tmp_path: Path, data: bytes
) -> None:
    key = FileKey("ws", "call", "a", len(data))
    directory = earlier_mount(tmp_path, key, data)
    drop_from_page_cache(block_file(directory, 0))
    (block_file(directory, 3)).write_bytes(b"")  # torn to nothing
    flip(block_file(directory, 5), HEADER.size + 3)
    disk = open_disk(tmp_path)
    worker = FakeWorker(tmp_path, {"a": data})
    file = stored_file("a", len(data))
    try:
        async with trio.open_nursery() as nursery:
            store = BlockStore(disk, worker, nursery)  # type: ignore[arg-type]
            got = await store.read(file, 0, len(data))
            assert bytes(got) == data
            # Only the damaged ones were fetched again.
            assert set(worker.fetched) <= {("a", 3), ("a", 5)}
            assert ("a", 5) in worker.fetched
            nursery.cancel_scope.cancel()
    finally:
        disk.close()


def test_a_read_buffer_is_not_used_again_while_anything_holds_it(
    tmp_path: Path, data: bytes
) -> None:
    key = FileKey("ws", "call", "a", len(data))
    disk = open_disk(tmp_path)
    try:
        with BlockWriter(str(tmp_path), key.relative_dir, BLOCK) as writer:
            for index, length, crc in writer.write(0, memoryview(data)):
                disk.added(key, index, length, crc)
        first = disk.copy(key, 0, BLOCK)
        view = memoryview(first)[10:20]  # type: ignore[arg-type]
        del first
        second = disk.copy(key, BLOCK, 2 * BLOCK)
        assert view == data[10:20]  # the second read went elsewhere
        assert second == data[BLOCK : 2 * BLOCK]
        held = [disk.copy(key, i * BLOCK, (i + 1) * BLOCK) for i in range(8)]
        assert (
            [bytes(h) for h in held]
            == [  # type: ignore[arg-type]
                data[i * BLOCK : (i + 1) * BLOCK] for i in range(8)
            ]
        )
        del view, second, held
        again = disk.copy(key, 0, BLOCK)
        assert again == data[:BLOCK]
    finally:
        disk.close()
