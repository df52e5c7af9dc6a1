"""Writing block files: what the fetch worker process (and a whole small file put in
the cache) does. A block is written under a temporary name and renamed into place,
so a block file is complete or absent, even if a process is killed mid-write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from amigofs.cache.block_format import key_digest, pack_header, relative_parts
from amigofs.cache.cache_dir import check_owned, open_file, open_subdirs

TMP_PREFIX = "."  # a killed writer's temporary files are removed by the next scan


class CacheFull(Exception):
    """The cache's disk has no room for a block (ENOSPC or EDQUOT)."""


class BlockWriter:
    """Writes blocks of one stored file into the cache, each to a temporary name then
    renamed into place; the file's directory is opened once per download."""

    def __init__(
        self, root: str, relative_dir: str, block_size: int, validator: str | None = None
    ) -> None:
        self._root = root
        self._relative_dir = relative_dir
        self._parts = relative_parts(relative_dir)
        self._digest = key_digest(relative_dir, validator)  # of the version written
        self._block_size = block_size
        self._dir_fd: int | None = None
        self._serial = 0

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def write(self, start: int, data: memoryview) -> list[tuple[int, int, int]]:
        """Stores whole blocks from `start` (a block boundary); returns (index, length,
        crc32) of each, once it is in place."""
        dir_fd = self._open()
        first = start // self._block_size
        stored = []
        for i, offset in enumerate(range(0, len(data), self._block_size)):
            block = data[offset : offset + self._block_size]
            index = first + i
            stored.append((index, len(block), self._write_block(dir_fd, index, block)))
        return stored

    def _write_block(self, dir_fd: int, index: int, block: memoryview) -> int:
        header, crc = pack_header(self._digest, index, block)
        self._serial += 1
        tmp = f"{TMP_PREFIX}{index}.{os.getpid()}.{self._serial}.tmp"
        where = f"{self._root}/{self._relative_dir}/{tmp}"
        try:
            fd = open_file(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, where)
            try:
                written = os.writev(fd, [header, block])
                if written != len(header) + len(block):
                    raise OSError(errno.ENOSPC, "short write")
            finally:
                os.close(fd)
            os.rename(tmp, str(index), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise CacheFull(f"no room on the cache's disk: {exc.strerror}") from None
            raise
        return crc

    def _open(self) -> int:
        if self._dir_fd is not None and os.fstat(self._dir_fd).st_nlink == 0:
            # Removed under us (a cache cleaner): blocks renamed into it would vanish.
            os.close(self._dir_fd)
            self._dir_fd = None
        if self._dir_fd is None:
            root_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                check_owned(root_fd, self._root, kind=stat.S_IFDIR)
                self._dir_fd = open_subdirs(root_fd, self._parts, self._root)
            finally:
                os.close(root_fd)
        return self._dir_fd
