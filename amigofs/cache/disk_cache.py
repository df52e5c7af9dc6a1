"""The persistent block cache in --cache-dir: its directory, what it holds, its bounds.

The mount process owns the cache directory (a lock file makes it one mount's own),
indexes the block files an earlier mount left (the `BlockTable` holds them, to be
checked by the read that first serves them), and keeps the cache under its bounds
(--cache-size, and the free space it leaves on its disk): least recently used
unpinned blocks are evicted with ``unlink``. That design (the field's, as
mountpoint-s3's disk cache and s3ql's block files have it) is what makes a read
safe by construction (see `block_reader`). There is no journal to tear and no hole
to punch. After a restart the LRU order starts from when each block was written (a
block file's mtime: touching every file a read checks cost more than the check).

A cache directory removed while mounted (a cleaner's `rm -rf ~/.cache`) takes its
blocks with it: they are forgotten, to be fetched again (but those the reader keeps
open, whole until closed), and the directory is made again with the checks it had
at mount, and locked again: the first block file found gone, or the next download,
notices (one fstat of the directory). One that cannot be made again (another
user's planted in its place, no permission) leaves the mount serving reads from
memory, as on a full disk: a read never fails for want of a cache.

The file format is `block_format`'s, writing is `block_writer`'s (in the fetch
worker), reading and checking `block_reader`'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import trio

from amigofs.cache.block_format import (
    BLOCKS_DIR,
    HEADER,
    OLD_BLOCKS_DIR,
    FileKey,
    footprint,
)
from amigofs.cache.block_reader import BlockReader, Unchecked, VerifyResult
from amigofs.cache.block_writer import BlockWriter
from amigofs.cache.blocks import BlockFile, BlockTable
from amigofs.cache.cache_dir import (
    UnsafeCacheDir,
    open_file,
    open_root,
    open_subdirs,
    removed,
)

log = logging.getLogger(__name__)

LOCK_NAME = "lock"


class CacheInUse(Exception):
    """Another mount holds the cache directory; the message names it, in one line."""


class DiskCache:
    """The cache directory, which blocks are on disk, and the size bounds.

    Every method but `open`, `close`, `check_blocks`, `advise` and `write_whole` runs
    on the trio thread and never blocks for long: they are a few syscalls on local
    files."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        block_size: int,
        min_free_bytes: int = 1 << 30,
        min_free_ratio: float = 0.05,
        owner: str = "",
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.block_size = block_size
        self.min_free_bytes = min_free_bytes
        self.min_free_ratio = min_free_ratio
        self._owner = owner  # who holds the lock, as the next mount is told
        self.blocks = BlockTable()
        self._reserved = 0  # bytes being fetched, counted before they land
        self._root_fd = -1
        self._lock_fd = -1
        self._reader: BlockReader | None = None
        # Bytes [start, end) of a stored file (see `BlockReader.copy`): the reader's
        # own method once open, called on every read without a step between.
        self.copy: Callable[[FileKey, int, int], bytearray | Unchecked | None] = _not_open
        self.evicted_blocks = 0
        # The directory was removed and could not be made again: no more caching.
        self._unusable = False

    @property
    def used_bytes(self) -> int:
        return self.blocks.file_bytes

    @property
    def reserved_bytes(self) -> int:
        """Bytes being fetched right now (for `amigofs stats`)."""
        return self._reserved

    @property
    def checked_blocks(self) -> int:
        """Left by an earlier mount, checked in this one."""
        return 0 if self._reader is None else self._reader.checked_blocks

    @property
    def damaged_blocks(self) -> int:
        """Of those, found damaged (and fetched again)."""
        return 0 if self._reader is None else self._reader.damaged_blocks

    @property
    def reader(self) -> BlockReader:
        assert self._reader is not None, "the disk cache is not open"
        return self._reader

    # --- start and stop (blocking: call from a thread) -------------------------------

    def open(self) -> None:
        """Opens the cache directory as this mount's own and indexes what an earlier
        mount left. UnsafeCacheDir or CacheInUse if it cannot be used."""
        self._root_fd = open_root(self.root)
        try:
            self._take_lock()
            self._reader = BlockReader(
                self._root_fd, self.blocks, self.block_size, on_gone=self._usable
            )
            self.copy = self._reader.copy
            self._scan()
        except BaseException:
            self.close()
            raise
        log.info("disk cache %s: %d blocks, %d bytes", self.root, len(self.blocks), self.used_bytes)

    def _take_lock(self) -> None:
        path = f"{self.root}/{LOCK_NAME}"
        self._lock_fd = open_file(self._root_fd, LOCK_NAME, os.O_RDWR | os.O_CREAT, path)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.fsdecode(os.pread(self._lock_fd, 4096, 0)).strip()
            holder = "".join(c if c.isprintable() else "?" for c in holder)[:300]
            raise CacheInUse(
                f"cache directory {self.root} is in use by another amigofs mount"
                f" ({holder or 'unknown'}); give each mount its own --cache-dir"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        # The mount point may be any bytes (os.fsencode gives them back as they were).
        holder = f"{self._owner or 'pid'} (pid {os.getpid()})\n"
        os.pwrite(self._lock_fd, os.fsencode(holder), 0)

    def _scan(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            # The layout before block files: its journals cannot be trusted to be whole.
            shutil.rmtree(OLD_BLOCKS_DIR, dir_fd=self._root_fd)
            log.info("disk cache: removed the blocks of an older cache layout")
        with contextlib.suppress(FileExistsError):
            os.mkdir(BLOCKS_DIR, 0o700, dir_fd=self._root_fd)
        blocks_fd = open_subdirs(self._root_fd, (BLOCKS_DIR,), str(self.root))
        found: list[tuple[int, tuple[str, int], int]] = []
        try:
            for dirpath, dirs, names, dir_fd in os.fwalk(".", dir_fd=blocks_fd):
                depth = 0 if dirpath == "." else dirpath.count("/")
                for name in dirs:
                    # Only directories of ours may be walked into.
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                        raise UnsafeCacheDir(
                            f"{self.root}/{BLOCKS_DIR}/{dirpath[2:]}/{name} is not this user's own"
                        )
                relative = f"{BLOCKS_DIR}/{dirpath[2:]}"
                for name in names:
                    index = int(name) if name.isdigit() and depth == 3 else None
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    length = st.st_size - HEADER.size
                    if (
                        index is None
                        or not stat.S_ISREG(st.st_mode)
                        or st.st_uid != os.geteuid()
                        or not 0 < length <= self.block_size
                    ):
                        # Temporary files of a killed worker, or anything foreign.
                        with contextlib.suppress(OSError):
                            os.unlink(name, dir_fd=dir_fd)
                        continue
                    found.append((st.st_mtime_ns, (relative, index), length))
        finally:
            os.close(blocks_fd)
        for _mtime, where, length in sorted(found):
            self.blocks.stored(where, BlockFile(length, None, verified=False, served=True))
        self._evict(0)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        for name in ("_lock_fd", "_root_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    # --- what is on disk --------------------------------------------------------------

    def has(self, key: FileKey, index: int) -> bool:
        return self.blocks.file((key.relative_dir, index)) is not None

    def is_ready(self, key: FileKey, index: int) -> bool:
        """Present and known good: safe to copy out with `copy`."""
        entry = self.blocks.file((key.relative_dir, index))
        return entry is not None and entry.verified

    def added(self, key: FileKey, index: int, length: int, crc: int) -> None:
        """A block the fetch worker has just stored."""
        where = (key.relative_dir, index)
        self.reader.close_fd(where)  # it may be open on the file this one replaced
        self.blocks.stored(where, BlockFile(length, crc, verified=True, served=False))

    def pin(self, key: FileKey, first: int, stop: int, delta: int) -> None:
        """Pins (delta 1) or unpins (-1) blocks a reader is waiting to copy out."""
        self.blocks.pin(key.relative_dir, first, stop, delta)

    def write_whole(self, key: FileKey, data: bytes) -> list[tuple[int, int, int]]:
        """Writes a whole small file's blocks (blocking: call from a thread); (index,
        length, crc32) of each, for `added`. CacheFull or OSError if it cannot."""
        # Of the version the key names: its header digest is what a read checks.
        with BlockWriter(
            str(self.root), key.relative_dir, self.block_size, key.validator
        ) as writer:
            return writer.write(0, memoryview(data))

    # --- reading (block_reader) ----------------------------------------------------------

    def unverified(self, key: FileKey, indexes: list[int]) -> list[tuple[int, BlockFile]]:
        return self.reader.unverified(key, indexes)

    def check_blocks(self, key: FileKey, blocks: list[tuple[int, BlockFile]]) -> list[VerifyResult]:
        return self.reader.check_blocks(key, blocks)

    def apply_checks(self, key: FileKey, results: list[VerifyResult]) -> int:
        return self.reader.apply_checks(key, results)

    def advise(self, key: FileKey, indexes: list[int]) -> None:
        self.reader.advise(key, indexes)

    def _close_fd(self, where: tuple[str, int]) -> None:
        self.reader.close_fd(where)

    async def check(self, key: FileKey, indexes: list[int]) -> None:
        """Checks blocks an earlier mount left, in a thread; each is then verified or
        forgotten (to be fetched again)."""
        reader = self.reader
        blocks = reader.unverified(key, indexes)
        results = await trio.to_thread.run_sync(reader.check_blocks, key, blocks)
        reader.apply_checks(key, results)

    async def read_ahead(self, key: FileKey, indexes: list[int]) -> None:
        """Brings block files into the page cache, in a thread."""
        await trio.to_thread.run_sync(self.reader.advise, key, indexes)

    # --- the bounds ---------------------------------------------------------------------

    def budget(self) -> int:
        """How many bytes the cache may hold now: --cache-size, less what would take
        its disk's free space below the reserve."""
        try:
            vfs = os.fstatvfs(self._root_fd)
        except OSError:
            return self.max_bytes
        free = vfs.f_bavail * vfs.f_frsize
        floor = min(self.min_free_bytes, int(self.min_free_ratio * vfs.f_blocks * vfs.f_frsize))
        # Bytes being fetched are not on the disk yet, but will be.
        return min(self.max_bytes, self.used_bytes + max(0, free - self._reserved - floor))

    def room_for(self, key: FileKey, first: int, stop: int) -> int:
        """What blocks [first, stop) of a file will take on disk."""
        last = min(stop, -(-key.size // self.block_size))
        if last <= first:
            return 0
        tail = key.size - (last - 1) * self.block_size
        return (last - 1 - first) * footprint(self.block_size) + footprint(
            min(tail, self.block_size)
        )

    def reserve(self, length: int) -> bool:
        """Makes room for `length` bytes about to be fetched; False if there is none
        (every block pinned, the disk is full, no cache directory): then fetch them
        without caching."""
        if not self._usable() or not self._evict(length):
            return False
        self._reserved += length
        return True

    def unreserve(self, length: int) -> None:
        self._reserved -= length

    # --- a cache directory removed under the mount ---------------------------------------

    def _usable(self) -> bool:
        """Whether blocks can be stored; a cache directory found removed is made again
        first (one fstat: asked before each download, not each read)."""
        if self._unusable:
            return False
        return not removed(self._root_fd) or self._make_again()

    def _make_again(self) -> bool:
        """The cache directory was removed: its blocks are forgotten (to be fetched again,
        never served as holes) but those whose files the reader keeps open (still whole:
        an unlinked file lives while open, and takes its room on disk until evicted), and
        it is made again and locked, as at mount. False if it cannot be: the mount then
        goes on from memory."""
        log.warning("disk cache: %s was removed while mounted; making it again", self.root)
        reader = self.reader
        for where in [w for w, _entry, _pinned in self.blocks.files() if not reader.is_open(w)]:
            self.blocks.lost(where)
        old = (self._root_fd, self._lock_fd)
        try:
            self._root_fd = open_root(self.root)
            self._take_lock()
        except (OSError, UnsafeCacheDir, CacheInUse) as exc:
            for fd in {self._root_fd, self._lock_fd} - {*old, -1}:
                os.close(fd)
            self._root_fd, self._lock_fd = old
            self._unusable = True
            log.warning("disk cache: %s; serving reads without caching until unmounted", exc)
            return False
        for fd in old:
            os.close(fd)
        reader.moved(self._root_fd)
        return True

    def disk_full(self) -> None:
        """The disk refused a write: free a few MiB more than the budget asks."""
        self._evict(8 << 20)

    def _evict(self, incoming: int) -> bool:
        """Removes least recently used unpinned blocks until `incoming` more bytes fit;
        False if they cannot."""
        budget = self.budget()
        used = self.used_bytes
        if used + self._reserved + incoming <= budget:
            return True
        victims = []
        excess = used + self._reserved + incoming - budget
        # Blocks already read first, least recently used first; then those fetched
        # ahead and not read yet, only if that is not enough.
        for served in (True, False):
            for where, entry, pinned in self.blocks.files():
                if excess <= 0:
                    break
                if entry.served is not served or pinned:
                    continue
                victims.append(where)
                excess -= footprint(entry.length)
        for where in victims:
            self.blocks.lost(where)
            self.reader.close_fd(where)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{where[0]}/{where[1]}", dir_fd=self._root_fd)
        if victims:
            self.evicted_blocks += len(victims)
            log.debug("disk cache: evicted %d blocks", len(victims))
        return excess <= 0


def _not_open(key: FileKey, start: int, end: int) -> bytearray | Unchecked | None:
    raise AssertionError("the disk cache is not open")
