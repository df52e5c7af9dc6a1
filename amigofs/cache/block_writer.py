"""Writing block files: what the fetch worker process (and a whole small file put in
the cache) does. A block is written under a temporary name in ``blocks.v3/tmp/`` and
renamed into place, so a block file is complete or absent, even if a process is
killed mid-write (a killed writer's temporary files are removed when the cache is
next opened: one small directory to clear, not the whole cache to walk).

A cache directory removed under the mount (a cleaner's `rm -rf ~/.cache`) is made
again, with the checks it had at mount (`cache_dir.open_root`); one that cannot be
made again is CacheFull, and the mount serves reads from memory, as on a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from amigofs.cache.block_format import (
    BLOCKS_DIR,
    TMP_DIR,
    block_name,
    key_digest,
    pack_header,
    relative_parts,
)
from amigofs.cache.cache_dir import UnsafeCacheDir, open_root, open_subdirs, removed

TMP_PREFIX = "."
# Tries at writing a block while a cleaner removes the cache directory under the writer
# (an rm -rf that meets the directories made again goes on removing them).
PLACE_ATTEMPTS = 5


def _create(dir_fd: int, name: str) -> int:
    """Creates a new file of ours, 0600. O_EXCL: never a file or link found under the
    name (FileExistsError); a file this call made is ours and regular, so there is
    nothing for cache_dir.open_file's fstat to check (one system call per block)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, 0o600, dir_fd=dir_fd)


class CacheFull(Exception):
    """The cache's disk has no room for a block (ENOSPC or EDQUOT)."""


class BlockWriter:
    """Writes blocks of one stored file into the cache, each to a temporary name then
    renamed into place; the directories are opened once per download."""

    def __init__(
        self, root: str, relative_dir: str, block_size: int, validator: str | None = None
    ) -> None:
        self._root = root
        self._relative_dir = relative_dir
        self._parts = relative_parts(relative_dir)[:2]
        self._digest = key_digest(relative_dir, validator)  # of the version written
        self._block_size = block_size
        self._dir_fd: int | None = None
        self._tmp_fd: int | None = None
        self._serial = 0
        self._pid = os.getpid()  # in temporary names: a killed writer's are told apart

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        if self._tmp_fd is not None:
            os.close(self._tmp_fd)
            self._tmp_fd = None

    def write(self, start: int, data: memoryview) -> list[tuple[int, int, int]]:
        """Stores whole blocks from `start` (a block boundary); returns (index, length,
        crc32) of each, once it is in place. A directory a cleaner removes meanwhile
        (blocks renamed into it gone with it, or a step finding it missing) is made
        again and the blocks written again; CacheFull if it keeps being removed, for the
        mount to serve the read from memory. Whether it was removed is asked once for
        all the blocks, not for each: a few system calls less per block."""
        first = start // self._block_size
        blocks = [
            (first + i, data[offset : offset + self._block_size])
            for i, offset in enumerate(range(0, len(data), self._block_size))
        ]
        for _attempt in range(PLACE_ATTEMPTS):
            try:
                dir_fd = self._open()  # made again if it was removed
                stored = [
                    (index, len(block), self._write_block(dir_fd, index, block))
                    for index, block in blocks
                ]
                if not removed(dir_fd):
                    return stored
            except FileNotFoundError:
                pass
            self._close_dir()
        raise CacheFull(f"the cache directory {self._root} keeps being removed")

    def _write_block(self, dir_fd: int, index: int, block: memoryview) -> int:
        header, crc = pack_header(self._digest, index, block)
        self._serial += 1
        tmp = f"{TMP_PREFIX}{index}.{self._pid}.{self._serial}.tmp"
        tmp_fd = self._tmp_fd
        assert tmp_fd is not None
        try:
            fd = _create(tmp_fd, tmp)
            try:
                written = os.writev(fd, [header, block])
                if written != len(header) + len(block):
                    raise OSError(errno.ENOSPC, "short write")
            finally:
                os.close(fd)
            name = block_name(self._relative_dir, index)
            os.rename(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=tmp_fd)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise CacheFull(f"no room on the cache's disk: {exc.strerror}") from None
            raise
        return crc

    def _open(self) -> int:
        # A directory removed since the last write is not asked about here (a system
        # call less per block: the fetch worker writes a block at a time): `write`
        # finds it removed once the blocks are written, and writes them again.
        if self._dir_fd is None:
            try:
                root_fd = open_root(Path(self._root))
            except (OSError, UnsafeCacheDir) as exc:
                raise CacheFull(f"cannot make the cache directory again: {exc}") from None
            try:
                self._dir_fd = open_subdirs(root_fd, self._parts, self._root)
                self._tmp_fd = open_subdirs(root_fd, (BLOCKS_DIR, TMP_DIR), self._root)
            finally:
                os.close(root_fd)
        return self._dir_fd
