"""The persistent block cache in --cache-dir: one file per block.

Each block of a stored file is a file ``blocks.v2/<workspace>/<call>/<stored name>.<size>/<index>``
holding a header (magic, which file and block it is, the data's length and CRC-32,
the header's own CRC) and then the block's bytes. The fetch worker writes a block
under a temporary name and renames it into place, so a block file is complete or
absent, even if a process is killed mid-write; one that is damaged on disk fails
its checksum when first read in a mount and is fetched again.

The mount process owns the index of present blocks (on the trio thread only),
serves reads by copying out of block files, and keeps the cache under its bounds
(--cache-size, and the free space it leaves on its disk): least recently used
blocks are evicted with ``unlink``. That design (the field's, as mountpoint-s3's disk
cache and s3ql's block files have it) is what makes a read safe by construction: a
read copies its bytes in one synchronous step after checking its blocks are present,
so eviction (which runs on the same thread) can never run in between; an open
descriptor keeps an unlinked block readable; and a block removed or replaced behind
the mount's back is seen as missing (or as a header that does not match) and is
fetched again, never served as zeros. There is no journal to tear and no hole to
punch. A lock file makes the directory one mount's own. After a restart the LRU
order starts from when each block was written (a block file's mtime: touching
every file a read checks cost more than the check).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import struct
import sys
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from amigofs.cache.cache_dir import UnsafeCacheDir, check_owned, open_file, open_root, open_subdirs

log = logging.getLogger(__name__)

BLOCKS_DIR = "blocks.v2"
_OLD_BLOCKS_DIR = "blocks"  # the journal-and-data-file layout before this one
LOCK_NAME = "lock"
MAGIC = b"AMB2"
# magic, key digest, block index, data length, data crc32, header crc32
HEADER = struct.Struct("<4s16sIIII")
_HEADER_BODY = HEADER.size - 4
# Descriptors of block files kept open: reopening costs a path walk per read.
MAX_OPEN_BLOCKS = 256
# Reads are copied into buffers used again once nothing holds them: a new bytearray
# per read is a malloc and a memset of up to 1 MiB, as much as the copy itself.
_BUFFERS_PER_SIZE = 4
_BUFFER_SIZES = 3  # read sizes kept (the kernel's request size, a file's last read)
_MAX_BUFFERED = 1 << 20
_TMP_PREFIX = "."


class CacheInUse(Exception):
    """Another mount holds the cache directory; the message names it, in one line."""


class CacheFull(Exception):
    """The cache's disk has no room for a block (ENOSPC or EDQUOT)."""


@dataclass(slots=True, frozen=True)
class FileKey:
    """Which stored file a block belongs to; the size is part of it so that a
    file that changed size on the server never mixes with its old blocks."""

    workspace_id: str
    call_sid: str
    filename: str
    size: int
    # Made once: it keys the index and is asked for several times on every read.
    relative_dir: str = field(init=False, repr=False, compare=False)
    digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Each part is a validated identifier or stored file name (no '/' or '..').
        relative = f"{BLOCKS_DIR}/{self.workspace_id}/{self.call_sid}/{self.filename}.{self.size}"
        object.__setattr__(self, "relative_dir", relative)
        object.__setattr__(self, "digest", key_digest(relative))


def key_digest(relative_dir: str) -> bytes:
    """What a block's header says it belongs to: a block moved or copied under another
    file's name is not that file's."""
    return hashlib.blake2b(relative_dir.encode(), digest_size=16).digest()


def pack_header(digest: bytes, index: int, data: memoryview | bytes) -> tuple[bytes, int]:
    """A block file's header for `data`, and the data's CRC-32."""
    crc = zlib.crc32(data)
    body = struct.pack("<4s16sIII", MAGIC, digest, index, len(data), crc)
    return body + struct.pack("<I", zlib.crc32(body)), crc


def unpack_header(raw: bytes, digest: bytes, index: int) -> tuple[int, int] | None:
    """(data length, data crc32) from a block file's header, or None if it is not a
    sound header of block `index` of the file `digest` names."""
    if len(raw) != HEADER.size:
        return None
    magic, owner, found_index, length, crc, header_crc = HEADER.unpack(raw)
    if magic != MAGIC or zlib.crc32(raw[:_HEADER_BODY]) != header_crc:
        return None
    if owner != digest or found_index != index:
        return None
    return length, crc


def footprint(length: int) -> int:
    """What a block file of `length` data bytes takes on disk (whole 4 KiB pages):
    --cache-size bounds what the cache takes, not just the bytes it holds."""
    return -(-(HEADER.size + length) // 4096) * 4096


def relative_parts(relative_dir: str) -> tuple[str, ...]:
    """The directory levels of a key's relative dir, refusing anything but plain names."""
    parts = tuple(relative_dir.split("/"))
    if len(parts) != 4 or parts[0] != BLOCKS_DIR or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a block directory: {relative_dir!r}")
    return parts


# --- the worker's side: writing ----------------------------------------------------


class BlockWriter:
    """Writes blocks of one stored file into the cache, each to a temporary name then
    renamed into place; the file's directory is opened once per download."""

    def __init__(self, root: str, relative_dir: str, block_size: int) -> None:
        self._root = root
        self._relative_dir = relative_dir
        self._parts = relative_parts(relative_dir)
        self._digest = key_digest(relative_dir)
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
        tmp = f"{_TMP_PREFIX}{index}.{os.getpid()}.{self._serial}.tmp"
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


# --- the mount process's side ----------------------------------------------------------


class _Block:
    """One block in the index. A new object each time a block is (re)added, so that
    a check started on an earlier copy cannot vouch for this one."""

    __slots__ = ("crc", "length", "served", "verified")

    def __init__(self, length: int, crc: int | None, *, verified: bool, served: bool) -> None:
        self.length = length
        self.crc = crc  # None: not read yet (found by the scan at start)
        self.verified = verified
        # False: fetched ahead (readahead, a walk) and not read yet. Eviction takes
        # such blocks last: in plain LRU order, a block fetched ahead is older than the
        # blocks read since, and would go before the reader gets to it.
        self.served = served


@dataclass(slots=True, frozen=True)
class Unchecked:
    """What `copy` gives for blocks an earlier mount left that are not in the page
    cache: they are to be checked in a thread (`check_blocks`), then read again."""

    indexes: list[int]


# What _read_checked says of a block whose file is not all in the page cache.
_NOT_IN_MEMORY = "not in memory"


class _ReadBuffers:
    """Buffers for the answers of reads, each used again once nothing refers to it:
    the kernel has copied it and every view of it is gone."""

    def __init__(self) -> None:
        self._by_size: OrderedDict[int, list[bytearray]] = OrderedDict()

    def take(self, size: int) -> bytearray:
        if size > _MAX_BUFFERED:
            return bytearray(size)
        kept = self._by_size.get(size)
        if kept is None:
            kept = self._by_size[size] = []
            while len(self._by_size) > _BUFFER_SIZES:
                self._by_size.popitem(last=False)
        else:
            self._by_size.move_to_end(size)
            for buffer in kept:
                # Referred to only by this list, `buffer` and getrefcount's argument:
                # no reader holds it, nor any view of it (a view holds a reference).
                if sys.getrefcount(buffer) == 3:
                    return buffer
        buffer = bytearray(size)
        if len(kept) < _BUFFERS_PER_SIZE:
            kept.append(buffer)
        return buffer


@dataclass(slots=True)
class VerifyResult:
    """What a check of a block file in a thread found, applied on the trio thread."""

    index: int
    entry: _Block
    fd: int | None  # open on the checked file, or None if it is damaged or gone
    crc: int = 0


class DiskCache:
    """Which blocks are on disk, reading them, and the size bounds.

    Every method but `open`, `close` and `check_blocks` runs on the trio thread and
    never blocks for long: they are a few syscalls on local files."""

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
        # (relative dir, block index) -> block, least recently used first.
        self._blocks: OrderedDict[tuple[str, int], _Block] = OrderedDict()
        self._fds: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._pins: dict[tuple[str, int], int] = {}
        self._bytes = 0
        self._reserved = 0  # bytes being fetched, counted before they land
        self._root_fd = -1
        self._lock_fd = -1
        self._buffers = _ReadBuffers()
        # A block file's image as `copy` checks it: header, data, one byte past the end.
        self._scratch = memoryview(bytearray(HEADER.size + block_size + 1))
        self.evicted_blocks = 0
        self.checked_blocks = 0  # left by an earlier mount, checked in this one
        self.damaged_blocks = 0  # of those, found damaged (and fetched again)

    @property
    def used_bytes(self) -> int:
        return self._bytes

    @property
    def reserved_bytes(self) -> int:
        """Bytes being fetched right now (for `amigofs stats`)."""
        return self._reserved

    # --- start and stop (blocking: call from a thread) -------------------------------

    def open(self) -> None:
        """Opens the cache directory as this mount's own and indexes what an earlier
        mount left. UnsafeCacheDir or CacheInUse if it cannot be used."""
        self._root_fd = open_root(self.root)
        try:
            self._take_lock()
            self._scan()
        except BaseException:
            self.close()
            raise
        log.info("disk cache %s: %d blocks, %d bytes", self.root, len(self._blocks), self._bytes)

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
            shutil.rmtree(_OLD_BLOCKS_DIR, dir_fd=self._root_fd)
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
        for _mtime, entry, length in sorted(found):
            self._blocks[entry] = _Block(length, None, verified=False, served=True)
            self._bytes += footprint(length)
        self._evict(0)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for name in ("_lock_fd", "_root_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    # --- the index --------------------------------------------------------------------

    def has(self, key: FileKey, index: int) -> bool:
        return (key.relative_dir, index) in self._blocks

    def is_ready(self, key: FileKey, index: int) -> bool:
        """Present and known good: safe to copy out with `copy`."""
        entry = self._blocks.get((key.relative_dir, index))
        return entry is not None and entry.verified

    def added(self, key: FileKey, index: int, length: int, crc: int) -> None:
        """A block the fetch worker has just stored."""
        where = (key.relative_dir, index)
        old = self._blocks.pop(where, None)
        if old is not None:
            self._bytes -= footprint(old.length)
        self._close_fd(where)  # it may be open on the file this one replaced
        self._blocks[where] = _Block(length, crc, verified=True, served=False)
        self._bytes += footprint(length)

    def pin(self, key: FileKey, first: int, stop: int, delta: int) -> None:
        """Pins (delta 1) or unpins (-1) blocks a reader is waiting to copy out, those
        present and those yet to land: eviction passes them by."""
        rel = key.relative_dir
        for index in range(first, stop):
            where = (rel, index)
            count = self._pins.get(where, 0) + delta
            if count > 0:
                self._pins[where] = count
            else:
                self._pins.pop(where, None)

    def copy(self, key: FileKey, start: int, end: int) -> bytearray | Unchecked | None:
        """Bytes [start, end) of a stored file, if every block under them is present
        and its file still holds it; None (and the missing block forgotten, to be
        fetched again) otherwise. Synchronous on purpose: nothing can evict a block
        between the check and the copy.

        A block an earlier mount left is checked by the read that first serves it: its
        whole file in one syscall (the header, the bytes asked for straight into the
        answer, the rest of the block beside it, and one byte more to see a longer
        file), its CRC over all of it, before any of it is served. That read never
        waits for the disk (RWF_NOWAIT): a block not in the page cache is left to a
        check in a thread, and `Unchecked` names those blocks."""
        block_size = self.block_size
        rel = key.relative_dir
        blocks = self._blocks
        first, stop = start // block_size, (end - 1) // block_size + 1
        entries = []
        for index in range(first, stop):
            entry = blocks.get((rel, index))
            if entry is None:
                return None
            entries.append(entry)
        # Every block's file first: one found gone or replaced is forgotten, all of
        # them in one pass.
        fds = [
            self._block_fd(key, index, entry)
            for index, entry in zip(range(first, stop), entries, strict=True)
        ]
        if None in fds:
            return None
        out = self._buffers.take(end - start)
        view = memoryview(out)
        cold: list[int] = []
        lost = False
        # Every block, even past one found wrong: all that are wrong are forgotten in
        # one pass, so the caller fetches them again together.
        for index, entry, fd in zip(range(first, stop), entries, fds, strict=True):
            assert fd is not None
            where = (rel, index)
            base = index * block_size
            lo = max(start, base)
            hi = min(end, base + entry.length)
            if hi - lo != min(end, base + block_size) - lo:
                self._forget(where, "is shorter than its file says")
                lost = True
                continue
            target = view[lo - start : hi - start]
            if entry.verified:
                try:
                    got = os.preadv(fd, [target], HEADER.size + lo - base)
                except OSError as exc:
                    self._forget(where, f"cannot be read ({exc.strerror})")
                    lost = True
                    continue
                if got != hi - lo:
                    self._forget(where, "was cut short on disk")
                    lost = True
                    continue
            else:
                damage = self._read_checked(fd, key, index, entry, lo - base, target)
                if damage is _NOT_IN_MEMORY:
                    cold.append(index)
                    continue
                if damage is not None:
                    self.damaged_blocks += 1
                    self._forget(where, damage)
                    lost = True
                    continue
            entry.served = True
            blocks.move_to_end(where)
        if lost:
            return None
        if cold:
            return Unchecked(cold)
        return out

    def _read_checked(
        self, fd: int, key: FileKey, index: int, entry: _Block, offset: int, target: memoryview
    ) -> str | None:
        """Reads a block not checked yet in this mount, bytes [offset, offset +
        len(target)) of it into `target`, and checks the whole block against its
        header; what is wrong with it (None: nothing, and it is now verified), or
        _NOT_IN_MEMORY if reading it would wait for the disk."""
        scratch = self._scratch
        header = scratch[: HEADER.size]
        before = scratch[HEADER.size : HEADER.size + offset]
        after_start = HEADER.size + offset + len(target)
        after = scratch[after_start : HEADER.size + entry.length]
        beyond = scratch[-1:]
        parts = [header, before, target, after, beyond]
        try:
            got = os.preadv(fd, [part for part in parts if part], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return _NOT_IN_MEMORY
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        if got < HEADER.size + entry.length:
            # Part of it is not in the page cache (RWF_NOWAIT stops there), or the
            # file is short: the check in a thread tells which.
            return _NOT_IN_MEMORY
        if got > HEADER.size + entry.length:
            return "is longer than its header says"
        found = unpack_header(bytes(header), key.digest, index)
        if found is None or found[0] != entry.length:
            return "was replaced on disk"
        crc = zlib.crc32(target, zlib.crc32(before))
        if zlib.crc32(after, crc) != found[1]:
            return "is damaged"
        entry.crc = found[1]
        entry.verified = True
        self.checked_blocks += 1
        return None

    def _block_fd(self, key: FileKey, index: int, entry: _Block) -> int | None:
        """An open descriptor of a block's file, reopened (and its header checked) if
        not kept: a file replaced or removed behind our back is found out here. (The
        header of a block not checked yet is read with its bytes, in `copy`.)"""
        where = (key.relative_dir, index)
        fd = self._fds.get(where)
        if fd is not None:
            self._fds.move_to_end(where)
            return fd
        try:
            fd = self._open_block(where[0], index)
        except OSError as exc:
            self._forget(
                where,
                "is gone from the cache"
                if exc.errno == errno.ENOENT
                else f"cannot be opened ({exc.strerror})",
            )
            return None
        sound = _ours(fd)
        if sound and entry.verified:
            header = unpack_header(os.pread(fd, HEADER.size, 0), key.digest, index)
            sound = header == (entry.length, entry.crc)
        if not sound:
            os.close(fd)
            self._forget(where, "was replaced on disk")
            return None
        self._keep_fd(where, fd)
        return fd

    def _open_block(self, relative_dir: str, index: int) -> int:
        return os.open(
            f"{relative_dir}/{index}",
            os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=self._root_fd,
        )

    def _keep_fd(self, where: tuple[str, int], fd: int) -> None:
        self._fds[where] = fd
        while len(self._fds) > MAX_OPEN_BLOCKS:
            _where, old = self._fds.popitem(last=False)
            os.close(old)

    def _close_fd(self, where: tuple[str, int]) -> None:
        fd = self._fds.pop(where, None)
        if fd is not None:
            os.close(fd)

    def _forget(self, where: tuple[str, int], why: str) -> None:
        log.warning("disk cache: block %d of %s %s; fetching it again", where[1], where[0], why)
        entry = self._blocks.pop(where, None)
        if entry is not None:
            self._bytes -= footprint(entry.length)
        self._close_fd(where)

    # --- checking blocks an earlier mount left -----------------------------------------

    def unverified(self, key: FileKey, indexes: list[int]) -> list[tuple[int, _Block]]:
        """The blocks among `indexes` present but not yet checked in this mount."""
        rel = key.relative_dir
        found = []
        for index in indexes:
            entry = self._blocks.get((rel, index))
            if entry is not None and not entry.verified:
                found.append((index, entry))
        return found

    def check_blocks(self, key: FileKey, blocks: list[tuple[int, _Block]]) -> list[VerifyResult]:
        """Reads and checks block files against their headers (blocking: call from a
        thread; touches no shared state)."""
        results = []
        buffer = bytearray(HEADER.size + self.block_size)
        for index, entry in blocks:
            try:
                fd = self._open_block(key.relative_dir, index)
            except OSError:
                results.append(VerifyResult(index, entry, None))
                continue
            view = memoryview(buffer)[: HEADER.size + entry.length]
            try:
                got = os.preadv(fd, [view], 0)
            except OSError:
                got = -1
            header = unpack_header(bytes(view[: HEADER.size]), key.digest, index)
            if (
                got == len(view)
                and header is not None
                and header[0] == entry.length
                and zlib.crc32(view[HEADER.size :]) == header[1]
                and os.fstat(fd).st_size == len(view)
                and _ours(fd)
            ):
                results.append(VerifyResult(index, entry, fd, header[1]))
            else:
                os.close(fd)
                results.append(VerifyResult(index, entry, None))
        return results

    def advise(self, key: FileKey, indexes: list[int]) -> None:
        """Asks the kernel to bring these block files into the page cache, so that
        the reads that check and serve them find them there (blocking: call from a
        thread; touches no shared state; a file that is gone is for `copy` to find)."""
        for index in indexes:
            try:
                fd = self._open_block(key.relative_dir, index)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def apply_checks(self, key: FileKey, results: list[VerifyResult]) -> int:
        """Applies what `check_blocks` found; returns how many blocks were damaged."""
        damaged = 0
        for result in results:
            where = (key.relative_dir, result.index)
            current = self._blocks.get(where)
            if current is not result.entry:
                # Evicted or replaced meanwhile: what was checked is not what is there.
                if result.fd is not None:
                    os.close(result.fd)
                continue
            if result.fd is None:
                damaged += 1
                self.damaged_blocks += 1
                self._forget(where, "is damaged")
                continue
            if not current.verified:
                self.checked_blocks += 1
            current.crc = result.crc
            current.verified = True
            self._close_fd(where)
            self._keep_fd(where, result.fd)
        return damaged

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
        return min(self.max_bytes, self._bytes + max(0, free - self._reserved - floor))

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
        (every block pinned, or the disk is full): then fetch them without caching."""
        if not self._evict(length):
            return False
        self._reserved += length
        return True

    def unreserve(self, length: int) -> None:
        self._reserved -= length

    def disk_full(self) -> None:
        """The disk refused a write: free a few MiB more than the budget asks."""
        self._evict(8 << 20)

    def _evict(self, incoming: int) -> bool:
        """Removes least recently used unpinned blocks until `incoming` more bytes fit;
        False if they cannot."""
        budget = self.budget()
        if self._bytes + self._reserved + incoming <= budget:
            return True
        victims = []
        excess = self._bytes + self._reserved + incoming - budget
        # Blocks already read first, least recently used first; then those fetched
        # ahead and not read yet, only if that is not enough.
        for served in (True, False):
            for where, entry in self._blocks.items():
                if excess <= 0:
                    break
                if entry.served is not served or where in self._pins:
                    continue
                victims.append(where)
                excess -= footprint(entry.length)
        for where in victims:
            entry = self._blocks.pop(where)
            self._bytes -= footprint(entry.length)
            self._close_fd(where)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{where[0]}/{where[1]}", dir_fd=self._root_fd)
        if victims:
            self.evicted_blocks += len(victims)
            log.debug("disk cache: evicted %d blocks", len(victims))
        return excess <= 0


def _ours(fd: int) -> bool:
    """Whether an open block file is a regular file of this user's: nobody else's
    file is served, whatever its header says."""
    st = os.fstat(fd)
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def runs(indexes: list[int], longest: int) -> list[tuple[int, int]]:
    """Sorted block indexes as [first, stop) runs of adjacent ones, each at most `longest`."""
    found: list[tuple[int, int]] = []
    for index in indexes:
        if found and found[-1][1] == index and index - found[-1][0] < longest:
            found[-1] = (found[-1][0], index + 1)
        else:
            found.append((index, index + 1))
    return found
