"""The persistent block cache in --cache-dir: its directory, what it holds, its bounds.

The mount process owns the cache directory (a lock file makes it one mount's own)
and keeps the cache under its bounds (--cache-size, and the free space it leaves on
its disk): least recently used unpinned blocks are evicted with ``unlink``. That
design (the field's, as mountpoint-s3's disk cache and s3ql's block files have it)
is what makes a read safe by construction (see `block_reader`): no hole to punch.

Nothing is walked at start: what the block files take and their use order persist
in SQLite (`block_index`, CACHE_DIR/blocks.sqlite), which eviction reads oldest
first, and a block file an earlier mount left is found by its path when a read asks
for it (`_find`), to be checked by the read that first serves it. An older layout's
tree is renamed aside at open and removed in a background thread: the mount does
not wait for it.

Everything the cache directory holds counts toward --cache-size: block files (their
whole pages), the directories, the SQLite files (the block index, the call index)
and what other stores there say they take (`DiskTenant`s, such as the records'
store), which are asked to shrink once evicting blocks is not enough.

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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import trio

from amigofs.cache import index as call_index
from amigofs.cache.block_format import (
    BLOCKS_DIR,
    HEADER,
    OLD_BLOCKS_DIRS,
    TMP_DIR,
    FileKey,
    block_path,
    footprint,
)
from amigofs.cache.block_index import BlockIndex, file_bytes
from amigofs.cache.block_reader import BlockReader, Unchecked, VerifyResult
from amigofs.cache.block_writer import BlockWriter
from amigofs.cache.blocks import BlockFile, BlockTable, Where
from amigofs.cache.cache_dir import (
    UnsafeCacheDir,
    open_file,
    open_root,
    open_subdirs,
    removed,
)

log = logging.getLogger(__name__)

LOCK_NAME = "lock"
# An older layout's tree, renamed aside at open to be removed in the background.
REMOVING_PREFIX = ".removing."
# How often what is not block files (directories, SQLite files, tenants) is measured.
OTHER_BYTES_SECONDS = 1.0


class DiskTenant(Protocol):
    """Another store in the cache directory (the records' MetaStore): what it takes
    counts toward --cache-size, and it gives some back when blocks are not enough."""

    def disk_bytes(self) -> int: ...
    def shrink(self, nbytes: int) -> int:
        """Frees about `nbytes` (its least recently used); how many it freed."""


# Evicted beyond what a download needs: the cache's other files grow by a few pages as
# it works (a record saved, a block folder made, the index's rows of this eviction),
# and an eviction measured to the byte left the next download without room, fetched
# again later.
EVICTION_SLACK = 128 << 10

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
        count_other: bool = True,
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
        self.index = BlockIndex(root)
        self._tenants: list[DiskTenant] = []
        # False: only block files count (a test of eviction among blocks alone).
        self._count_other = count_other
        self._other_bytes = 0  # all but block files, as last measured
        self._other_measured = -OTHER_BYTES_SECONDS

    def add_tenant(self, tenant: DiskTenant) -> None:
        self._tenants.append(tenant)
        self._other_measured = -OTHER_BYTES_SECONDS

    @property
    def used_bytes(self) -> int:
        """What the cache directory holds: block files and everything else."""
        return self.blocks.file_bytes + self._other_bytes

    def block_budget(self) -> int:
        """Of the budget, what block files may take: what the cache's other files (its
        indexes, its records, its folders) leave."""
        return max(0, self.budget() - self._other_bytes)

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
            self._prepare()
            self.blocks.attach(self._find, self._discard, self.index, self.index.open())
            self._measure_other(force=True)
            self._evict(0)
        except BaseException:
            self.close()
            raise
        log.info("disk cache %s: %d bytes", self.root, self.used_bytes)

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

    def _prepare(self) -> None:
        """Makes the layout's directories; clears what a killed writer left in its
        temporary directory (a few files); sets an older layout's tree aside, to be
        removed in a background thread (a walk of it could take minutes)."""
        root_fd = self._root_fd
        with contextlib.suppress(FileExistsError):
            os.mkdir(BLOCKS_DIR, 0o700, dir_fd=root_fd)
        tmp_fd = open_subdirs(root_fd, (BLOCKS_DIR, TMP_DIR), str(self.root))
        try:
            for name in os.listdir(tmp_fd):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=tmp_fd)
        finally:
            os.close(tmp_fd)
        for name in OLD_BLOCKS_DIRS:
            with contextlib.suppress(FileNotFoundError):
                os.rename(
                    name, f"{REMOVING_PREFIX}{name}.{time.time_ns()}",
                    src_dir_fd=root_fd, dst_dir_fd=root_fd,
                )  # fmt: skip
                log.info("disk cache: removing the blocks of an older cache layout (%s)", name)
        aside = [name for name in os.listdir(root_fd) if name.startswith(REMOVING_PREFIX)]
        if aside:
            threading.Thread(
                target=_remove_trees, args=(os.dup(root_fd), aside), daemon=True,
                name="amigofs-old-cache",
            ).start()  # fmt: skip

    def _find(self, where: Where) -> int | None:
        """The data length of a block's file on disk, if it looks like one of ours
        (its contents are checked by the read that serves it)."""
        try:
            st = os.stat(block_path(*where), dir_fd=self._root_fd, follow_symlinks=False)
        except (OSError, ValueError):
            return None
        length = st.st_size - HEADER.size
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.geteuid()
            or not 0 < length <= self.block_size
        ):
            self._discard(where)  # anything foreign, never to be served
            return None
        return length

    def _discard(self, where: Where) -> None:
        """Removes a block's file (evicted, or found wrong: it would be found again)."""
        with contextlib.suppress(OSError, ValueError):
            os.unlink(block_path(*where), dir_fd=self._root_fd)

    def close(self) -> None:
        self.index.close()
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
        self.blocks.flush()
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
        # The index went with the directory: a new one, counting from nothing.
        self.index.reopen(self.root)
        self.blocks.file_bytes = 0
        self._measure_other(force=True)
        return True

    def disk_full(self) -> None:
        """The disk refused a write: free a few MiB more than the budget asks."""
        self._evict(8 << 20)

    def _measure_other(self, *, force: bool = False) -> None:
        """Measures what is not block files (at most every OTHER_BYTES_SECONDS): the
        directories, the SQLite files, the lock, and what the tenants take."""
        now = time.monotonic()
        if not self._count_other or (
            not force and now - self._other_measured < OTHER_BYTES_SECONDS
        ):
            return
        self._other_measured = now
        root = str(self.root)
        total = file_bytes(root) + file_bytes(f"{root}/{LOCK_NAME}") + self.index.disk_bytes()
        for suffix in ("", "-wal", "-shm"):
            total += file_bytes(f"{root}/{call_index.NAME}{suffix}")
        blocks = f"{root}/{BLOCKS_DIR}"
        total += file_bytes(blocks)
        with contextlib.suppress(OSError), os.scandir(blocks) as entries:
            for entry in entries:
                total += file_bytes(entry.path)  # the 256 directories, and tmp
        for tenant in self._tenants:
            try:
                total += tenant.disk_bytes()
            except Exception:
                log.exception("disk cache: cannot tell what %r takes", tenant)
        self._other_bytes = total

    def _evict(self, incoming: int) -> bool:
        """Removes least recently used unpinned blocks until `incoming` more bytes fit,
        then asks the tenants to shrink; False if they cannot."""
        self._measure_other()
        # The index's count, and order, up to now (block files found on disk count once
        # their rows are written: one transaction a download at most).
        self.blocks.flush()
        excess = self.used_bytes + self._reserved + incoming - self.budget()
        if excess <= 0:
            return True
        victims: list[tuple[Where, int]] = []
        loaded = self.blocks.loaded
        oldest = self.index.oldest()
        try:
            for where, nbytes in oldest:
                if excess + EVICTION_SLACK <= 0:
                    break
                block = loaded(where)
                if block is not None and (
                    block.pins or block.fetch is not None or block.checking is not None
                ):
                    continue
                victims.append((where, nbytes))
                excess -= nbytes
        finally:
            oldest.close()
        for where, nbytes in victims:
            self.blocks.evicted(where, nbytes)  # and its file removed
            self.reader.close_fd(where)
        if victims:
            self.evicted_blocks += len(victims)
            self.blocks.flush()
            log.debug("disk cache: evicted %d blocks", len(victims))
        if self._tenants:
            # Measured again: the index's own files grow with what it just wrote.
            self._measure_other(force=True)
            excess = self.used_bytes + self._reserved + incoming - self.budget()
        asked = False
        for tenant in self._tenants:
            if excess <= 0:
                break
            asked = True
            try:
                excess -= tenant.shrink(excess)
            except Exception:
                log.exception("disk cache: %r cannot shrink", tenant)
        if asked:
            self._measure_other(force=True)
        return excess <= 0


def _remove_trees(root_fd: int, names: list[str]) -> None:
    """Removes an older layout's trees set aside at open (in a thread of its own)."""
    try:
        for name in names:
            with contextlib.suppress(OSError):
                shutil.rmtree(name, dir_fd=root_fd)
    finally:
        os.close(root_fd)


def _not_open(key: FileKey, start: int, end: int) -> bytearray | Unchecked | None:
    raise AssertionError("the disk cache is not open")
