"""The persistent block cache in --cache-dir.

Each stored file has a directory ``blocks/<workspace>/<call>/<stored name>.<size>/``
holding ``data``, a sparse file of the stored file's size, and ``map``, a journal
of which blocks of ``data`` are present, with each block's CRC-32. The fetch
worker writes a block's bytes first and appends its journal record after, so a
block is visible only once completely written, even if a process is killed
mid-write; a block that is damaged or truncated on disk fails its checksum when
first read and is fetched again. Files are 0600 in directories 0700.

The mount process owns the index of present blocks, reads blocks, and keeps the
cache under its size bound: least recently used blocks are evicted by punching
them out of ``data`` and journaling their removal. A data file's mtime records
its last use, so the order survives a restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

RECORD = struct.Struct("<III")  # block index, data length (0: removed), crc32
DATA, MAP = "data", "map"
_PUNCH_HOLE = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MAX_MAPPED_FILES = 64
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


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

    def __post_init__(self) -> None:
        # Each part is a validated identifier or stored file name (no '/' or '..').
        relative = f"blocks/{self.workspace_id}/{self.call_sid}/{self.filename}.{self.size}"
        object.__setattr__(self, "relative_dir", relative)


# --- the worker's side: writing ----------------------------------------------------


class BlockWriter:
    """Writes blocks of one stored file into the cache: its data file and journal are
    opened at the first block and kept for the whole download, not reopened for each."""

    def __init__(self, directory: str, size: int, block_size: int) -> None:
        self._directory = directory
        self._size = size
        self._block_size = block_size
        self._fds: tuple[int, int] | None = None  # data file, journal

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def write(self, start: int, data: memoryview) -> list[int]:
        """Writes whole blocks from `start` (a block boundary), then journals them;
        returns their CRC-32s."""
        data_fd, map_fd = self._open()
        block_size = self._block_size
        if os.pwrite(data_fd, data, start) != len(data):
            raise OSError(errno.ENOSPC, "short write to the disk cache")
        crcs = [zlib.crc32(data[o : o + block_size]) for o in range(0, len(data), block_size)]
        records = [
            RECORD.pack(start // block_size + i, min(block_size, len(data) - i * block_size), crc)
            for i, crc in enumerate(crcs)
        ]
        # O_APPEND makes each write land whole at the end, whoever else appends.
        os.write(map_fd, b"".join(records))
        return crcs

    def _open(self) -> tuple[int, int]:
        if self._fds is None:
            os.makedirs(self._directory, mode=0o700, exist_ok=True)
            flags = os.O_CREAT | os.O_CLOEXEC
            data_fd = os.open(os.path.join(self._directory, DATA), os.O_RDWR | flags, 0o600)
            try:
                if os.fstat(data_fd).st_size != self._size:
                    os.ftruncate(data_fd, self._size)  # sparse: only written blocks take space
                map_path = os.path.join(self._directory, MAP)
                map_fd = os.open(map_path, os.O_WRONLY | os.O_APPEND | flags, 0o600)
            except BaseException:
                os.close(data_fd)
                raise
            self._fds = (data_fd, map_fd)
        return self._fds


def _append(path: str, records: bytes) -> None:
    # O_APPEND makes each write land whole at the end, whoever else appends.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, records)
    finally:
        os.close(fd)


def read_map(path: str) -> dict[int, tuple[int, int]]:
    """Present blocks of one stored file: index -> (length, crc32); the last record wins."""
    try:
        with open(path, "rb") as journal:
            raw = journal.read()
    except FileNotFoundError:
        return {}
    present: dict[int, tuple[int, int]] = {}
    usable = len(raw) - len(raw) % RECORD.size  # a torn last record is ignored
    for index, length, crc in RECORD.iter_unpack(raw[:usable]):
        if length:
            present[index] = (length, crc)
        else:
            present.pop(index, None)
    return present


# --- the mount process's side ----------------------------------------------------------


class DiskCache:
    """Which blocks are on disk, reading them, and the size bound."""

    def __init__(self, root: Path, *, max_bytes: int, block_size: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.block_size = block_size
        # (relative dir, block index) -> (length, crc32), least recently used first.
        self._blocks: OrderedDict[tuple[str, int], tuple[int, int]] = OrderedDict()
        self._bytes = 0
        self._reserved = 0  # bytes being fetched, counted before they land
        # Blocks checked (or written) during this mount need no second checksum pass.
        self._verified: set[tuple[str, int]] = set()
        self._maps: OrderedDict[str, _Mapping] = OrderedDict()
        # Reads and eviction run in worker threads; the index is shared.
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._bytes

    @property
    def reserved_bytes(self) -> int:
        """Bytes being fetched right now (for `amigofs stats`)."""
        return self._reserved

    def open(self) -> None:
        """Creates the cache directory (0700) and indexes what an earlier mount left."""
        os.umask(0o077)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        (self.root / "blocks").mkdir(mode=0o700, exist_ok=True)
        files: list[tuple[float, str, dict[int, tuple[int, int]]]] = []
        for dirpath, _dirs, names in os.walk(self.root / "blocks"):
            if DATA not in names:
                continue
            rel = os.path.relpath(dirpath, self.root)
            expected_size = rel.rpartition(".")[2]
            if not expected_size.isdigit() or os.stat(os.path.join(dirpath, DATA)).st_size != int(
                expected_size
            ):
                log.warning("disk cache: %s is truncated or foreign; dropping it", rel)
                for name in names:
                    _unlink(os.path.join(dirpath, name))
                continue
            present = read_map(os.path.join(dirpath, MAP))
            _compact(dirpath, present)
            files.append((os.stat(os.path.join(dirpath, DATA)).st_mtime, rel, present))
        for _mtime, rel, present in sorted(files):
            for index, entry in sorted(present.items()):
                self._blocks[(rel, index)] = entry
                self._bytes += entry[0]
        log.info("disk cache %s: %d blocks, %d bytes", self.root, len(self._blocks), self._bytes)
        self.evict()

    def close(self) -> None:
        with self._lock:
            for mapped in self._maps.values():
                mapped.close()
            self._maps.clear()

    def has(self, key: FileKey, index: int) -> bool:
        return (key.relative_dir, index) in self._blocks

    def added(self, key: FileKey, index: int, length: int, crc: int) -> None:
        """A block the fetch worker has just written and journaled."""
        entry = (key.relative_dir, index)
        with self._lock:
            old = self._blocks.pop(entry, None)
            self._bytes += length - (old[0] if old else 0)
            self._blocks[entry] = (length, crc)
            self._verified.add(entry)

    def is_ready(self, key: FileKey, index: int) -> bool:
        """Present and known good: safe to serve from `view`."""
        return (key.relative_dir, index) in self._verified

    def touch(self, key: FileKey, first: int, stop: int) -> None:
        """Marks blocks as just used (most recently used last, evicted last)."""
        rel = key.relative_dir
        # Under the lock: eviction iterates the index in a thread, and reordering it
        # meanwhile would fail that iteration.
        with self._lock:
            for index in range(first, stop):
                with contextlib.suppress(KeyError):
                    self._blocks.move_to_end((rel, index))

    def verify(self, key: FileKey, indexes: list[int]) -> None:
        """Checks blocks written by an earlier mount against their checksums (blocking:
        call from a thread); a damaged block is forgotten, to be fetched again."""
        rel = key.relative_dir
        # Read with pread into one small buffer rather than through the mapping:
        # faulting every page into this process's map cost more than copying it.
        buffer = bytearray(self.block_size)
        damaged: list[tuple[str, int]] = []
        # A descriptor of its own: one shared with other threads could be closed and its
        # number reused for another file while this one reads through it.
        fd = os.open(os.path.join(self.root, rel, DATA), os.O_RDONLY | os.O_CLOEXEC)
        try:
            for index in indexes:
                entry = (rel, index)
                known = self._blocks.get(entry)
                if known is None or entry in self._verified:
                    continue
                length, crc = known
                view = memoryview(buffer)[:length]
                read = os.preadv(fd, [view], index * self.block_size)
                if read == length and zlib.crc32(view) == crc:
                    self._verified.add(entry)
                else:
                    log.warning(
                        "disk cache: block %d of %s is damaged; fetching it again", index, rel
                    )
                    damaged.append(entry)
        finally:
            os.close(fd)
        if damaged:
            self._remove(damaged)

    def view(self, key: FileKey) -> memoryview:
        """The data file mapped read-only: blocks are served as slices of it, no copies."""
        rel = key.relative_dir
        with self._lock:
            mapped = self._maps.get(rel)
            if mapped is not None:
                self._maps.move_to_end(rel)
                return mapped.view
            fd = os.open(os.path.join(self.root, rel, DATA), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if os.fstat(fd).st_size != key.size:
                    raise OSError(errno.EIO, f"disk cache data file of {rel} has the wrong size")
                os.utime(fd)  # the file's last use, for LRU order after a restart
                mapped = _Mapping(mmap.mmap(fd, key.size, prot=mmap.PROT_READ))
            finally:
                os.close(fd)
            self._maps[rel] = mapped
            while len(self._maps) > MAX_MAPPED_FILES:
                _rel, old = self._maps.popitem(last=False)
                old.close()
            return mapped.view

    def drop_pages(self, key: FileKey, start: int, end: int) -> None:
        """Unmaps pages a reader has gone past: they stay in the page cache, but no longer
        count in this process's memory, so reading GBs keeps the mount small."""
        mapped = self._maps.get(key.relative_dir)
        if mapped is None:
            return
        start -= start % mmap.PAGESIZE
        if end > start:
            mapped.mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    def reserve(self, length: int) -> None:
        """Makes room for `length` bytes about to be written (blocking: call from a thread):
        evicting before writing is what keeps the cache under its bound at all times."""
        with self._lock:
            self._reserved += length
        self.evict()

    def unreserve(self, length: int) -> None:
        with self._lock:
            self._reserved -= length

    def evict(self) -> None:
        """Removes least recently used blocks until the cache fits (blocking)."""
        victims: list[tuple[str, int]] = []
        with self._lock:
            budget = self._bytes + self._reserved
            for entry, (length, _crc) in self._blocks.items():
                if budget <= self.max_bytes:
                    break
                victims.append(entry)
                budget -= length
        if victims:
            self._remove(victims)
            log.debug("disk cache: evicted %d blocks", len(victims))

    def _remove(self, entries: list[tuple[str, int]]) -> None:
        by_file: dict[str, list[int]] = {}
        with self._lock:
            for entry in entries:
                known = self._blocks.pop(entry, None)
                if known is not None:
                    self._bytes -= known[0]
                    self._verified.discard(entry)
                    by_file.setdefault(entry[0], []).append(entry[1])
        for rel, indexes in by_file.items():
            directory = os.path.join(self.root, rel)
            # Journal the removal first: a block must never be listed without its bytes.
            _append(os.path.join(directory, MAP), b"".join(RECORD.pack(i, 0, 0) for i in indexes))
            # Punching a hole also unmaps those pages from our own mapping of the file.
            fd = os.open(os.path.join(directory, DATA), os.O_RDWR | os.O_CLOEXEC)
            try:
                for first, stop in runs(sorted(indexes), len(indexes)):
                    _punch(fd, first * self.block_size, (stop - first) * self.block_size)
            finally:
                os.close(fd)


class _Mapping:
    __slots__ = ("mm", "view")

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        self.view = memoryview(mm)

    def close(self) -> None:
        # A slice may still be on its way into a FUSE reply: then the mapping
        # goes away with the last slice instead of now.
        with contextlib.suppress(BufferError):
            self.view.release()
            self.mm.close()


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def runs(indexes: list[int], longest: int) -> Iterator[tuple[int, int]]:
    """Contiguous runs of sorted block indexes, each at most `longest` long, as [first, stop)."""
    first = previous = None
    for index in indexes:
        if first is None or previous is None:
            first = previous = index
        elif index == previous + 1 and index - first < longest:
            previous = index
        else:
            yield first, previous + 1
            first = previous = index
    if first is not None and previous is not None:
        yield first, previous + 1


def _punch(fd: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, _PUNCH_HOLE, offset, length) != 0:
        code = ctypes.get_errno()
        log.warning("disk cache: cannot free a block (%s)", os.strerror(code))


def _compact(directory: str, present: dict[int, tuple[int, int]]) -> None:
    """Rewrites a journal that is mostly removals (at startup, before the worker runs)."""
    path = os.path.join(directory, MAP)
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_size <= 2 * RECORD.size * max(len(present), 64):
            return
        tmp = path + ".tmp"
        with open(tmp, "wb") as journal:
            journal.write(b"".join(RECORD.pack(i, n, c) for i, (n, c) in sorted(present.items())))
        os.replace(tmp, path)
