"""The block cache on its own, without a mount or a process: races between reads, eviction
and checks, torn and foreign block files. (The real fetch worker process: test_fetch_worker.py.)

BlockStore takes any object with a worker's `fetch`; FakeWorker writes the blocks
of an in-memory file with the real BlockWriter and can be held between blocks, so
a test can put an eviction exactly where a race would be.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from amigofs.api.models import DownloadPath
from amigofs.cache.block_format import BLOCKS_DIR, HEADER, TMP_DIR, FileKey, footprint
from amigofs.cache.block_writer import BlockWriter
from amigofs.cache.disk_cache import DiskCache
from amigofs.cache.seams import FetchJob
from amigofs.cache.store import BlockStore, StoredFile
from tests.unit.block_doubles import block_file

BLOCK = 64 << 10  # small blocks keep these tests quick


class FakeLink:
    def __init__(self, name: str) -> None:
        self.path = DownloadPath("ws", "call", name, f"/download/{name}")

    async def renew(self, stale: DownloadPath) -> DownloadPath:
        return self.path


class FakeWorker:
    """Serves fetches from in-memory files, writing real block files."""

    def __init__(self, root: Path, files: dict[str, bytes]) -> None:
        self.root = root
        self.files = files
        self.fetched: Counter[tuple[str, int]] = Counter()  # (file, block) -> times
        self.before_block: Callable[[int], Any] | None = None  # awaited before each block

    async def fetch(self, job: FetchJob, *, nursery: trio.Nursery,
                    on_blocks: Callable[[list[tuple[int, int, int]]], None]) -> None:  # fmt: skip
        filename, start, end, block_size = job.filename, job.start, job.end, job.block_size
        directory = job.directory
        data = memoryview(self.files[filename])
        with BlockWriter(str(self.root), directory, block_size) as writer:
            for offset in range(start, end, block_size):
                if self.before_block is not None:
                    await self.before_block(offset // block_size)
                await trio.lowlevel.checkpoint()
                stored = writer.write(offset, data[offset : min(end, offset + block_size)])
                self.fetched[(filename, offset // block_size)] += 1
                on_blocks(stored)


class FakeClient:
    """The mount's own client, for reads served without room in the cache."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.bytes = 0

    async def download_into(self, path: DownloadPath, start: int, buf: memoryview,
                            *, total: int, version: object = None) -> None:  # fmt: skip
        await trio.lowlevel.checkpoint()
        buf[:] = self.files[path.filename][start : start + len(buf)]
        self.bytes += len(buf)


def stored_file(name: str, size: int) -> StoredFile:
    return StoredFile(FileKey("ws", "call", name, size), FakeLink(name))


@pytest.fixture
def files() -> dict[str, bytes]:
    rng = random.Random(1)
    return {name: rng.randbytes(8 * BLOCK + 123) for name in ("a", "b")}


def open_disk(root: Path, blocks: int) -> DiskCache:
    disk = DiskCache(
        root,
        max_bytes=blocks * footprint(BLOCK),
        block_size=BLOCK,
        min_free_bytes=0,
        count_other=False,
    )
    disk.open()
    return disk


async def test_eviction_never_takes_a_block_from_under_a_multi_block_read(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    disk = open_disk(tmp_path, blocks=4)
    worker = FakeWorker(tmp_path, files)
    a, b = stored_file("a", len(files["a"])), stored_file("b", len(files["b"]))
    try:
        async with trio.open_nursery() as nursery:
            store = BlockStore(disk, worker, nursery)  # type: ignore[arg-type]
            assert await store.read(a, 0, BLOCK) == files["a"][:BLOCK]
            assert await store.read(b, 0, 3 * BLOCK) == files["b"][: 3 * BLOCK]
            # The cache is full and a's block 0 is the least recently used. A read of
            # a's blocks 0-2 finds block 0 ready, then fetches 1 and 2, which must
            # make room: never by evicting block 0 before the read has copied it.
            assert await store.read(a, 100, 3 * BLOCK - 7) == files["a"][100 : 3 * BLOCK - 7]
            assert worker.fetched[("a", 0)] == 1
            assert disk.used_bytes <= disk.max_bytes
            nursery.cancel_scope.cancel()
    finally:
        disk.close()


async def test_many_readers_through_a_tiny_cache_get_exact_bytes(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    disk = open_disk(tmp_path, blocks=3)
    worker = FakeWorker(tmp_path, files)
    stored = {name: stored_file(name, len(data)) for name, data in files.items()}
    rng = random.Random(2)

    async def reader(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(30):
            name = local.choice(sorted(files))
            start = local.randrange(len(files[name]))
            end = min(len(files[name]), start + local.randrange(1, 3 * BLOCK))
            assert bytes(await store.read(stored[name], start, end)) == files[name][start:end]

    async def jitter(_index: int) -> None:
        for _ in range(rng.randrange(3)):
            await trio.lowlevel.checkpoint()

    worker.before_block = jitter
    try:
        async with trio.open_nursery() as nursery:
            client = FakeClient(files)
            store = BlockStore(disk, worker, nursery, client=client)  # type: ignore[arg-type]
            async with trio.open_nursery() as readers:
                for seed in range(12):
                    readers.start_soon(reader, seed)
            assert disk.used_bytes <= disk.max_bytes
            # Some reads found no room (every block pinned by other readers).
            assert client.bytes > 0 and store.stats.uncached_bytes == client.bytes
            nursery.cancel_scope.cancel()
    finally:
        disk.close()


def write_earlier_mount(root: Path, key: FileKey, data: bytes, blocks: range) -> None:
    disk = DiskCache(root, max_bytes=1 << 30, block_size=BLOCK, min_free_bytes=0, count_other=False)
    disk.open()
    disk.close()  # makes the directory as a mount would
    with BlockWriter(str(root), key.relative_dir, BLOCK) as writer:
        for index in blocks:
            writer.write(index * BLOCK, memoryview(data)[index * BLOCK : (index + 1) * BLOCK])


def test_a_check_racing_eviction_never_vouches_for_what_is_not_there(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    key = FileKey("ws", "call", "a", len(files["a"]))
    write_earlier_mount(tmp_path, key, files["a"], range(3))
    disk = open_disk(tmp_path, blocks=4)
    try:
        assert disk.has(key, 0) and not disk.is_ready(key, 0)
        blocks = disk.unverified(key, [0, 1, 2])
        results = disk.check_blocks(key, blocks)  # in a thread, in the store
        # Meanwhile: block 0 is evicted, block 1 evicted and fetched again.
        assert disk.reserve(4 * footprint(BLOCK) - 1)
        disk.unreserve(4 * footprint(BLOCK) - 1)
        assert not disk.has(key, 0) and not disk.has(key, 1)
        assert not os.path.exists(block_file(tmp_path / key.relative_dir, 0))
        with BlockWriter(str(tmp_path), key.relative_dir, BLOCK) as writer:
            [(index, length, crc)] = writer.write(BLOCK, memoryview(files["a"])[BLOCK : 2 * BLOCK])
        disk.added(key, index, length, crc)
        assert disk.apply_checks(key, results) == 0
        assert not disk.is_ready(key, 0)  # the check of a block that is gone
        assert disk.is_ready(key, 1)
        assert disk.copy(key, BLOCK, 2 * BLOCK) == files["a"][BLOCK : 2 * BLOCK]
    finally:
        disk.close()


def test_torn_and_foreign_block_files_are_never_served(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    key = FileKey("ws", "call", "a", len(files["a"]))
    data = files["a"]
    write_earlier_mount(tmp_path, key, data, range(6))
    directory = tmp_path / key.relative_dir
    with open(block_file(directory, 0), "r+b") as f:  # torn: cut inside the data
        f.truncate(HEADER.size + 100)
    with open(block_file(directory, 1), "r+b") as f:  # a flipped byte in the header
        f.seek(5)
        f.write(b"\xff")
    with open(block_file(directory, 2), "r+b") as f:  # a flipped byte in the data
        f.seek(HEADER.size + 1000)
        f.write(bytes([data[2 * BLOCK + 1000] ^ 1]))
    (block_file(directory, 3)).write_bytes(
        (block_file(directory, 4)).read_bytes()
    )  # block 4 under 3's name
    killed = tmp_path / BLOCKS_DIR / TMP_DIR / ".5.99.1.tmp"
    killed.write_bytes(b"half a block")  # a killed worker's
    disk = open_disk(tmp_path, blocks=16)
    try:
        assert not killed.exists()
        results = disk.check_blocks(key, disk.unverified(key, list(range(6))))
        assert disk.apply_checks(key, results) == 4
        assert [disk.is_ready(key, i) for i in range(6)] == [False] * 4 + [True] * 2
        assert [disk.has(key, i) for i in range(4)] == [False] * 4
        assert disk.copy(key, 4 * BLOCK, 6 * BLOCK) == data[4 * BLOCK : 6 * BLOCK]
        assert disk.copy(key, 3 * BLOCK, 5 * BLOCK) is None
    finally:
        disk.close()


def test_a_block_file_removed_or_replaced_under_the_mount_is_forgotten(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    key = FileKey("ws", "call", "a", len(files["a"]))
    data = files["a"]
    disk = open_disk(tmp_path, blocks=16)
    try:
        with BlockWriter(str(tmp_path), key.relative_dir, BLOCK) as writer:
            for index, length, crc in writer.write(0, memoryview(data)[: 4 * BLOCK]):
                disk.added(key, index, length, crc)
        directory = tmp_path / key.relative_dir
        (block_file(directory, 0)).unlink()
        (block_file(directory, 1)).write_bytes((block_file(directory, 2)).read_bytes())
        assert disk.copy(key, 0, 4 * BLOCK) is None
        # Both found out at once, so that they are fetched again together.
        assert not disk.has(key, 0) and not disk.has(key, 1)
        assert disk.copy(key, 2 * BLOCK, 4 * BLOCK) == data[2 * BLOCK : 4 * BLOCK]
    finally:
        disk.close()


def test_block_files_of_another_user_are_never_served(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    key = FileKey("ws", "call", "a", len(files["a"]))
    data = files["a"]
    write_earlier_mount(tmp_path, key, data, range(4))
    directory = tmp_path / key.relative_dir
    os.chown(block_file(directory, 0), 65534, 65534)  # planted: a correct header, not ours
    disk = open_disk(tmp_path, blocks=16)
    try:
        assert not disk.has(key, 0) and not (block_file(directory, 0)).exists()
        assert disk.apply_checks(key, disk.check_blocks(key, disk.unverified(key, [1, 2, 3]))) == 0
        assert disk.copy(key, BLOCK, 2 * BLOCK) == data[BLOCK : 2 * BLOCK]
        # Swapped for another user's copy while mounted (the kept descriptor dropped).
        disk.close()
        disk = open_disk(tmp_path, blocks=16)
        disk.apply_checks(key, disk.check_blocks(key, disk.unverified(key, [2])))
        os.chown(block_file(directory, 2), 65534, 65534)
        disk._close_fd((key.relative_dir, 2))
        assert disk.copy(key, 2 * BLOCK, 3 * BLOCK) is None
        assert not disk.has(key, 2)
    finally:
        disk.close()
