"""The cache directory removed under a running mount, and caches on filesystems that
refuse the reader's optimisations (RWF_NOWAIT on tmpfs and NFS, posix_fadvise), without
a mount: the disk cache, the block writer, the metadata store and the block store over
real directories. (With a mount: tests/test_cache_dir.py.)
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from amigofs.cache.block_format import FileKey, footprint
from amigofs.cache.block_writer import BlockWriter, CacheFull
from amigofs.cache.cache_dir import removed
from amigofs.cache.disk_cache import LOCK_NAME, DiskCache
from amigofs.cache.meta import NAME as META_NAME
from amigofs.cache.meta import MetaStore
from amigofs.cache.store import BlockStore
from tests.unit.block_doubles import block_file
from tests.unit.test_block_store_disk import FakeClient, FakeWorker, stored_file

BLOCK = 64 << 10


def open_disk(root: Path) -> DiskCache:
    disk = DiskCache(
        root, max_bytes=64 * footprint(BLOCK), block_size=BLOCK, min_free_bytes=0, count_other=False
    )
    disk.open()
    return disk


def left_by_an_earlier_mount(root: Path, key: FileKey, data: bytes) -> None:
    disk = open_disk(root)
    try:
        for index, length, crc in disk.write_whole(key, data):
            disk.added(key, index, length, crc)
    finally:
        disk.close()


def refusing(
    monkeypatch: pytest.MonkeyPatch, name: str, refused: Callable[..., bool], code: int
) -> list[tuple[Any, ...]]:
    """os.`name` failing with `code` when `refused(*args)`, as a filesystem that does not
    support it; returns the calls it saw."""
    real = getattr(os, name)
    calls: list[tuple[Any, ...]] = []

    def call(*args: Any) -> Any:
        calls.append(args)
        if refused(*args):
            raise OSError(code, os.strerror(code))
        return real(*args)

    monkeypatch.setattr(os, name, call)
    return calls


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EINVAL])
def test_blocks_of_an_earlier_mount_are_served_where_nowait_reads_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    data = random.Random(1).randbytes(3 * BLOCK + 17)
    key = FileKey("ws", "call", "a.wav", len(data))
    left_by_an_earlier_mount(tmp_path, key, data)
    calls = refusing(monkeypatch, "preadv", lambda *a: len(a) > 3 and a[3] & os.RWF_NOWAIT, code)
    disk = open_disk(tmp_path)
    try:
        # Each block checked and served, none dropped as unreadable to be fetched again.
        for index in range(4):
            start, end = index * BLOCK, min(len(data), (index + 1) * BLOCK)
            assert disk.copy(key, start, end) == data[start:end]
        assert disk.damaged_blocks == 0
        assert disk.checked_blocks == 4
        # Refused once, then remembered for this cache's filesystem.
        assert sum(1 for c in calls if len(c) > 3 and c[3] & os.RWF_NOWAIT) == 1
    finally:
        disk.close()


def test_a_refused_read_ahead_hint_is_asked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(2).randbytes(3 * BLOCK)
    key = FileKey("ws", "call", "a.wav", len(data))
    left_by_an_earlier_mount(tmp_path, key, data)
    calls = refusing(monkeypatch, "posix_fadvise", lambda *a: True, errno.ESPIPE)
    disk = open_disk(tmp_path)
    try:
        disk.advise(key, [0, 1])
        disk.advise(key, [2])
        assert len(calls) == 1
        assert disk.copy(key, 0, len(data)) == data
    finally:
        disk.close()


async def test_reads_go_on_after_the_cache_dir_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "home" / ".cache" / "amigofs"
    files = {name: random.Random(name).randbytes(4 * BLOCK + 5) for name in ("a", "b")}
    disk = open_disk(root)
    worker = FakeWorker(root, files)
    a, b = stored_file("a", len(files["a"])), stored_file("b", len(files["b"]))
    try:
        async with trio.open_nursery() as nursery:
            store = BlockStore(disk, worker, nursery)  # type: ignore[arg-type]
            assert await store.read(a, 0, 2 * BLOCK) == files["a"][: 2 * BLOCK]
            shutil.rmtree(tmp_path / "home" / ".cache")  # a cleaner, under the mount
            # Blocks never fetched: fetched into a cache dir made again.
            assert await store.read(b, 0, len(files["b"])) == files["b"]
            # Blocks the mount had: gone with the directory, fetched again, never holes
            # (but those whose files it keeps open, whole until closed).
            assert await store.read(a, 0, len(files["a"])) == files["a"]
            assert worker.fetched[("a", 2)] == 1
            disk.reader.close()  # none kept open now: each is found gone, and fetched again
            assert await store.read(a, 0, len(files["a"])) == files["a"]
            assert worker.fetched[("a", 0)] == 2
            # The directory is made again, ours and 0700, with its lock.
            assert (root.stat().st_mode & 0o777) == 0o700
            assert (root / LOCK_NAME).is_file()
            assert disk.used_bytes == sum(
                footprint(len(files[n]) - 4 * BLOCK) + 4 * footprint(BLOCK) for n in files
            )
            nursery.cancel_scope.cancel()
    finally:
        disk.close()


async def test_reads_go_on_from_memory_when_the_cache_dir_cannot_be_made_again(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cache"
    files = {"a": random.Random(4).randbytes(3 * BLOCK + 9)}
    disk = open_disk(root)
    worker = FakeWorker(root, files)
    a = stored_file("a", len(files["a"]))
    try:
        async with trio.open_nursery() as nursery:
            client = FakeClient(files)
            store = BlockStore(disk, worker, nursery, client=client)  # type: ignore[arg-type]
            assert await store.read(a, 0, BLOCK) == files["a"][:BLOCK]
            shutil.rmtree(root)
            root.mkdir(mode=0o777)  # in its place, one any user could plant files in
            root.chmod(0o777)
            assert await store.read(a, 0, len(files["a"])) == files["a"]
            # From memory, none of it cached (block 0 from its file, still open).
            assert client.bytes == len(files["a"]) - BLOCK
            assert list(root.iterdir()) == []
            nursery.cancel_scope.cancel()
    finally:
        disk.close()


def test_a_block_writer_makes_a_removed_cache_dir_again(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    key = FileKey("ws", "call", "a.wav", 2 * BLOCK)
    disk = open_disk(root)
    disk.close()
    data = memoryview(random.Random(3).randbytes(2 * BLOCK))
    with BlockWriter(str(root), key.relative_dir, BLOCK) as writer:
        writer.write(0, data[:BLOCK])
        shutil.rmtree(root)
        stored = writer.write(BLOCK, data[BLOCK:])
    assert [index for index, _length, _crc in stored] == [1]
    assert (block_file(root / key.relative_dir, 1)).is_file()
    assert (root.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("removed_when", ["before", "after"])
def test_a_block_whose_directory_is_removed_as_it_is_written_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, removed_when: str
) -> None:
    root = tmp_path / "cache"
    key = FileKey("ws", "call", "a.wav", BLOCK)
    open_disk(root).close()
    real_rename = os.rename
    renames = []

    def rename(*args: Any, **kwargs: Any) -> None:
        renames.append(args)
        if len(renames) == 1 and removed_when == "before":
            shutil.rmtree(root)  # the block's directory gone before it is renamed in
        real_rename(*args, **kwargs)
        if len(renames) == 1 and removed_when == "after":
            shutil.rmtree(root)  # ... or just after, with the block in it

    monkeypatch.setattr(os, "rename", rename)
    data = random.Random(5).randbytes(BLOCK)
    with BlockWriter(str(root), key.relative_dir, BLOCK) as writer:
        [(index, length, _crc)] = writer.write(0, memoryview(data))
    assert (index, length, len(renames)) == (0, BLOCK, 2)
    # Announced as stored: it is there, whole.
    assert (block_file(root / key.relative_dir, 0)).read_bytes().endswith(data)


def test_a_cache_dir_that_keeps_being_removed_is_a_full_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    key = FileKey("ws", "call", "a.wav", BLOCK)
    open_disk(root).close()
    real_rename = os.rename

    def rename(*args: Any, **kwargs: Any) -> None:
        shutil.rmtree(root)
        real_rename(*args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    # CacheFull: the mount serves the read from memory, as on a full disk.
    with pytest.raises(CacheFull), BlockWriter(str(root), key.relative_dir, BLOCK) as writer:
        writer.write(0, memoryview(bytes(BLOCK)))


def test_metadata_is_kept_again_after_the_cache_dir_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    meta = MetaStore(root)
    try:
        meta.save({"n": 1}, "ws", "call")
        shutil.rmtree(root)
        assert meta.load(lambda doc: doc, "ws", "call") is None
        meta.save({"n": 2}, "ws", "call")
        assert meta.load(lambda doc: doc, "ws", "call") == {"n": 2}
        assert (root / META_NAME).is_file()
    finally:
        meta.close()


def test_a_directory_is_removed_when_unlinked_or_stale_on_nfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cache").mkdir()
    fd = os.open(tmp_path / "cache", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not removed(fd)
        refusing(monkeypatch, "fstat", lambda *a: True, errno.ESTALE)
        assert removed(fd)  # NFS: the server no longer knows the handle
        monkeypatch.undo()
        (tmp_path / "cache").rmdir()
        assert removed(fd)
    finally:
        os.close(fd)
