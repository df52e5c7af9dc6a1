"""The cache directory removed under a running mount, and caches on filesystems that
refuse the reader's optimisations (RWF_NOWAIT on tmpfs and NFS, posix_fadvise), without
a mount: the disk cache, the block writer, the metadata store and the block store over
real directories. (With a mount: tests/test_cache_dir.py.)
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amigofs.cache.block_format import FileKey, footprint
from amigofs.cache.disk_cache import DiskCache

BLOCK = 64 << 10


def open_disk(root: Path) -> DiskCache:
    disk = DiskCache(root, max_bytes=64 * footprint(BLOCK), block_size=BLOCK, min_free_bytes=0)
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
