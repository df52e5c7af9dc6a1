"""The block table's memory does not grow with the blocks ever looked up, the cache is
not walked at start, and what it holds and in which order persists in SQLite
(blocks.sqlite): what a mount's RSS, start and eviction show, without a mount."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from amigofs.cache import blocks, disk_cache
from amigofs.cache.block_format import BLOCKS_DIR, FileKey, block_path, footprint
from amigofs.cache.block_writer import BlockWriter
from amigofs.cache.blocks import IDLE_BLOCKS, BlockTable, Where
from amigofs.cache.disk_cache import DiskCache

BLOCK = 4096


def open_disk(root: Path, max_bytes: int = 1 << 30) -> DiskCache:
    disk = DiskCache(root, max_bytes=max_bytes, block_size=BLOCK, min_free_bytes=0)
    disk.open()
    return disk


def keys(count: int) -> list[FileKey]:
    return [FileKey("ws", f"call{i:06d}", "metadata.json", 100) for i in range(count)]


def write_earlier_mount(root: Path, files: list[FileKey]) -> None:
    """One block for each file, as a mount that was killed before its index was written
    (or an earlier amigofs) left them."""
    for key in files:
        with BlockWriter(str(root), key.relative_dir, BLOCK) as writer:
            writer.write(0, memoryview(b"x" * key.size))


class CountingJournal:
    """A journal that keeps nothing per block (blocks.sqlite's part is tested below)."""

    def __init__(self) -> None:
        self.total = 0

    def stored(self, where: Where, nbytes: int, *, ahead: bool) -> None:
        self.total += nbytes

    def found(self, where: Where, nbytes: int) -> None:
        self.total += nbytes

    def lost(self, where: Where) -> None:
        raise AssertionError("nothing is lost here")

    def served(self, where: Where) -> None:
        pass

    def due(self) -> bool:
        return False

    def flush(self) -> int:
        return self.total


def test_a_100000_block_walk_leaves_the_table_bounded_and_memory_back_near_the_start() -> None:
    table = BlockTable()
    table.attach(lambda where: 100, lambda where: None, CountingJournal(), 0)
    wheres = [(f"{BLOCKS_DIR}/{n % 256:02x}/{n % 256:02x}{n:030x}", 0) for n in range(100_000)]
    for where in wheres[:IDLE_BLOCKS]:  # the table full of idle blocks: where it stays
        assert table.available(where)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for where in wheres[IDLE_BLOCKS:]:
            assert table.available(where)  # found on disk, as a read asks for it
            table.served(where)
        table.flush()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert len(table) <= IDLE_BLOCKS
    # An entry is about 0.6 KB: 100,000 of them would be some 60 MB.
    assert grown < 2 << 20, f"{grown} bytes kept after 100,000 blocks"
    # Every one counted, on disk.
    assert table.file_bytes == 100_000 * footprint(100)


def test_a_cache_is_not_walked_at_start_and_its_blocks_are_found_as_reads_need_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocks, "IDLE_BLOCKS", 256)
    files = keys(600)
    disk = open_disk(tmp_path)
    disk.close()
    write_earlier_mount(tmp_path, files)
    stats = []
    real_stat = os.stat

    def counting_stat(*args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(args[0])
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    disk = open_disk(tmp_path)
    try:
        # No block file looked at to open the cache (the old scan stat'ed each one).
        looked_at = [str(s) for s in stats if f"{BLOCKS_DIR}/" in str(s)]
        assert not [s for s in looked_at if "." in s.rsplit("/", 1)[-1]]
        assert len(disk.blocks) == 0
        monkeypatch.setattr(os, "stat", real_stat)
        for key in files:
            assert disk.has(key, 0)
            assert disk.copy(key, 0, key.size) == b"x" * key.size  # checked, then served
        assert len(disk.blocks) <= 256
        assert disk.checked_blocks == len(files)
        disk.blocks.flush()
        # Found without a row (a crash before it was written): counted once found.
        assert disk.blocks.file_bytes == len(files) * footprint(100)
    finally:
        disk.close()


def test_what_the_cache_holds_and_its_order_survive_a_remount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of a few pages: evicted to the page, not with the slack a mount leaves.
    monkeypatch.setattr(disk_cache, "EVICTION_SLACK", 0)
    files = keys(6)
    fp = footprint(100)
    disk = open_disk(tmp_path)
    try:
        for key in files:
            with BlockWriter(str(tmp_path), key.relative_dir, BLOCK) as writer:
                for index, length, crc in writer.write(0, memoryview(b"y" * key.size)):
                    disk.added(key, index, length, crc)
        # Read in the order 5, 4, ..., 0: 5 is now the least recently used.
        for key in reversed(files):
            assert disk.copy(key, 0, key.size) == b"y" * key.size
    finally:
        disk.close()
    disk = open_disk(tmp_path, max_bytes=1 << 30)
    try:
        assert disk.blocks.file_bytes == 6 * fp  # from the index, nothing walked
        # Room for three more blocks in a cache of what it holds now: three go, oldest
        # used first.
        disk.max_bytes = disk.used_bytes
        assert disk.reserve(3 * fp)
        disk.unreserve(3 * fp)
        kept = [key for key in files if (tmp_path / block_path(key.relative_dir, 0)).exists()]
        assert kept == files[:3]
        assert disk.blocks.file_bytes == 3 * fp
    finally:
        disk.close()


def test_a_row_without_its_file_or_a_file_without_its_row_is_never_a_hole(
    tmp_path: Path,
) -> None:
    gone, unindexed = keys(2)
    disk = open_disk(tmp_path)
    try:
        with BlockWriter(str(tmp_path), gone.relative_dir, BLOCK) as writer:
            for index, length, crc in writer.write(0, memoryview(b"z" * gone.size)):
                disk.added(gone, index, length, crc)
    finally:
        disk.close()
    (tmp_path / block_path(gone.relative_dir, 0)).unlink()  # behind the index's back
    write_earlier_mount(tmp_path, [unindexed])
    disk = open_disk(tmp_path)
    try:
        assert not disk.has(gone, 0) and disk.copy(gone, 0, gone.size) is None
        assert disk.copy(unindexed, 0, unindexed.size) == b"x" * unindexed.size
        # Eviction of everything takes the row of the file that is gone, and the other.
        disk.max_bytes = disk.used_bytes - disk.blocks.file_bytes
        assert disk.reserve(0)
        assert disk.blocks.file_bytes == 0
        assert not (tmp_path / block_path(unindexed.relative_dir, 0)).exists()
    finally:
        disk.close()


def test_everything_in_the_cache_dir_counts_and_tenants_are_asked_to_shrink(
    tmp_path: Path,
) -> None:
    class Tenant:
        def __init__(self) -> None:
            self.held = 1 << 20
            self.asked: list[int] = []

        def disk_bytes(self) -> int:
            return self.held

        def shrink(self, nbytes: int) -> int:
            self.asked.append(nbytes)
            freed = min(nbytes, self.held)
            self.held -= freed
            return freed

    tenant = Tenant()
    disk = open_disk(tmp_path)
    try:
        disk.add_tenant(tenant)
        assert disk.reserve(0)
        sqlite = sum(
            p.stat().st_blocks * 512 for p in tmp_path.iterdir() if p.name.endswith(("sqlite",))
        )
        assert disk.used_bytes >= tenant.held + sqlite > tenant.held
        key = keys(1)[0]
        with BlockWriter(str(tmp_path), key.relative_dir, BLOCK) as writer:
            for index, length, crc in writer.write(0, memoryview(b"w" * key.size)):
                disk.added(key, index, length, crc)
        # No room: the block goes first, then the tenant gives back what is missing.
        disk.max_bytes = disk.used_bytes - footprint(100) - 4096
        assert disk.reserve(0)
        assert not disk.has(key, 0)
        assert tenant.asked and tenant.held < 1 << 20
        assert disk.used_bytes <= disk.max_bytes
    finally:
        disk.close()


def test_a_damaged_block_index_is_started_again_and_its_blocks_found_by_path(
    tmp_path: Path,
) -> None:
    key = keys(1)[0]
    open_disk(tmp_path).close()
    write_earlier_mount(tmp_path, [key])
    (tmp_path / "blocks.sqlite").write_bytes(b"not a database" * 1000)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"blocks.sqlite{suffix}").unlink(missing_ok=True)
    disk = open_disk(tmp_path)
    try:
        assert disk.copy(key, 0, key.size) == b"x" * key.size
        disk.blocks.flush()
        assert disk.blocks.file_bytes == footprint(key.size)
    finally:
        disk.close()
