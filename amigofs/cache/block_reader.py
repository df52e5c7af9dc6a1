"""Reading block files out of the cache: copying a read's bytes out, and checking
files an earlier mount left against their CRC before a byte of them is served.

A read copies its bytes in one synchronous step after finding its blocks present,
so eviction (which runs on the same trio thread) can never run in between; an open
descriptor keeps an unlinked block readable; a block removed or replaced behind the
mount's back is seen as missing (or as a header that does not match) and is
forgotten, to be fetched again, never served as zeros.

Not every filesystem takes the reader's optimisations: tmpfs and NFS refuse
RWF_NOWAIT (EOPNOTSUPP), some refuse posix_fadvise. A refusal is not damage: the
reader falls back to a plain read (or no hint) and remembers it for its cache
directory's filesystem, so blocks an earlier mount left there are served again.

`BlockReader` owns the descriptors kept open on block files and the buffers reads
are answered in; the blocks' state is the `BlockTable`'s.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from amigofs.cache.block_format import (
    HEADER,
    FileKey,
    block_path,
    data_checksum,
    unpack_header,
)
from amigofs.cache.blocks import BlockFile, BlockTable, Where

log = logging.getLogger(__name__)

# Descriptors of block files kept open: reopening costs a path walk per read.
MAX_OPEN_BLOCKS = 256
# Reads are answered in buffers used again: a new bytearray per read is a malloc and
# the page faults of up to 1 MiB (measured: 46 against 34 us for a 1 MiB read out of
# the page cache, 9.5 against 2.9 us for 128 KiB).
_BUFFERS_PER_SIZE = 4
_BUFFER_SIZES = 3  # read sizes kept (the kernel's request size, a file's last read)
_MAX_BUFFERED = 1 << 20


@dataclass(slots=True, frozen=True)
class Unchecked:
    """What `copy` gives for blocks an earlier mount left that are not in the page
    cache: they are to be checked in a thread (`check_blocks`), then read again."""

    indexes: list[int]


@dataclass(slots=True)
class VerifyResult:
    """What a check of a block file in a thread found, applied on the trio thread."""

    index: int
    entry: BlockFile
    fd: int | None  # open on the checked file, or None if it is damaged or gone
    crc: int = 0


# What _read_checked says of a block whose file is not all in the page cache.
_NOT_IN_MEMORY = "not in memory"

# What a filesystem answers to a flag or hint it does not support (tmpfs, NFS and
# FUSE file systems to RWF_NOWAIT; pipes and some file systems to posix_fadvise).
_REFUSED = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ESPIPE})


def refused(exc: OSError) -> bool:
    """Whether a failure says the filesystem does not do what was asked (a flag, a
    hint), rather than that the file cannot be read."""
    return exc.errno in _REFUSED


def _pool_only_references() -> int:
    """How many references `ReadBuffers.take` sees to a buffer only its pool holds
    (its list, the loop's variable, getrefcount's argument), measured on this Python
    rather than assumed."""
    kept = [bytearray(1)]
    for buffer in kept:
        return sys.getrefcount(buffer)
    raise AssertionError


class ReadBuffers:
    """Buffers for the answers of reads. The ownership rule: a buffer is the pool's
    when the pool holds the only reference to it (the kernel has copied the answer
    and every view of it is gone); while anyone else holds it (a reader, a view, a
    slice's memoryview), it is theirs and never handed out again."""

    _POOL_ONLY = _pool_only_references()

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
                if sys.getrefcount(buffer) == self._POOL_ONLY:
                    return buffer
        buffer = bytearray(size)
        if len(kept) < _BUFFERS_PER_SIZE:
            kept.append(buffer)
        return buffer


def is_ours(fd: int) -> bool:
    """Whether an open block file is a regular file of this user's: nobody else's
    file is served, whatever its header says."""
    st = os.fstat(fd)
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


class BlockReader:
    """Copies reads out of block files and checks files an earlier mount left.
    On the trio thread, but for `check_blocks` and `advise` (blocking: a thread)."""

    def __init__(
        self,
        root_fd: int,
        table: BlockTable,
        block_size: int,
        on_gone: Callable[[], object] = lambda: None,
    ) -> None:
        self._root_fd = root_fd
        self._on_gone = on_gone  # a block file was found gone
        self._table = table
        self.block_size = block_size
        # What the cache directory's filesystem takes: the flags of the read that checks
        # a block (RWF_NOWAIT, 0 once refused), and whether read-ahead hints are heard.
        self._check_flags = os.RWF_NOWAIT
        self._hints = True
        self._fds: OrderedDict[Where, int] = OrderedDict()
        self._buffers = ReadBuffers()
        # A block file's image as `copy` checks it: header, data, one byte past the end.
        self._scratch = memoryview(bytearray(HEADER.size + block_size + 1))
        self.checked_blocks = 0  # left by an earlier mount, checked in this one
        self.damaged_blocks = 0  # of those, found damaged (and fetched again)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def is_open(self, where: Where) -> bool:
        """Whether a block's file is kept open: readable, even once unlinked."""
        return where in self._fds

    def moved(self, root_fd: int) -> None:
        """The cache directory was made again: block files are opened in `root_fd` from
        now on, and what its filesystem takes is found again. (Files kept open stay
        open: their blocks are still whole, in the removed directory's files.)"""
        self._root_fd = root_fd
        self._check_flags = os.RWF_NOWAIT
        self._hints = True
        self._table.forget_verdicts()

    # --- copying out ---------------------------------------------------------------------

    def copy(self, key: FileKey, start: int, end: int) -> bytearray | Unchecked | None:
        """Bytes [start, end) of a stored file, if every block under them is present
        and its file still holds it; None (and the missing block forgotten, to be
        fetched again) otherwise. Synchronous on purpose: nothing can evict a block
        between the check and the copy.

        A block an earlier mount left is checked by the read that first serves it: its
        whole file in one syscall (the header, the bytes asked for straight into the
        answer, the rest of the block beside it, and one byte more to see a longer
        file), its CRC over all of it, before any of it is served. That read never
        waits for the disk (RWF_NOWAIT, where the filesystem takes it): a block not in
        the page cache is left to a check in a thread, and `Unchecked` names those."""
        block_size = self.block_size
        rel = key.relative_dir
        first, stop = start // block_size, (end - 1) // block_size + 1
        entries = self._table.files_of(rel, first, stop)
        if entries is None:
            return None
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
        served = self._table.served
        # Every block, even past one found wrong: all that are wrong are forgotten in
        # one pass, so the caller fetches them again together.
        for index, entry, fd in zip(range(first, stop), entries, fds, strict=True):
            assert fd is not None
            where = (rel, index)
            base = index * block_size
            lo = max(start, base)
            hi = min(end, base + entry.length)
            if hi - lo != min(end, base + block_size) - lo:
                self.forget(where, "is shorter than its file says")
                lost = True
                continue
            target = view[lo - start : hi - start]
            if entry.verified:
                try:
                    got = os.preadv(fd, [target], HEADER.size + lo - base)
                except OSError as exc:
                    self.forget(where, f"cannot be read ({exc.strerror})")
                    lost = True
                    continue
                if got != hi - lo:
                    self.forget(where, "was cut short on disk")
                    lost = True
                    continue
            else:
                damage = self._read_checked(fd, key, index, entry, lo - base, target)
                if damage is _NOT_IN_MEMORY:
                    cold.append(index)
                    continue
                if damage is not None:
                    self.damaged_blocks += 1
                    self.forget(where, damage)
                    lost = True
                    continue
            entry.served = True
            served(where)
        if lost:
            return None
        if cold:
            return Unchecked(cold)
        return out

    def _read_checked(
        self, fd: int, key: FileKey, index: int, entry: BlockFile, offset: int, target: memoryview
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
        parts = [part for part in (header, before, target, after, beyond) if part]
        try:
            got = os.preadv(fd, parts, 0, self._check_flags)
        except BlockingIOError:
            return _NOT_IN_MEMORY
        except OSError as exc:
            if not (self._check_flags and refused(exc)):
                return f"cannot be read ({exc.strerror})"
            self._check_flags = 0
            log.info(
                "disk cache: its filesystem refuses reads that do not wait (%s); "
                "reading blocks plainly",
                exc.strerror,
            )
            return self._read_checked(fd, key, index, entry, offset, target)
        if got < HEADER.size + entry.length:
            # Part of it is not in the page cache (RWF_NOWAIT stops there), or the
            # file is short: the check in a thread tells which.
            return _NOT_IN_MEMORY
        if got > HEADER.size + entry.length:
            return "is longer than its header says"
        found = unpack_header(bytes(header), key.digest, index)
        if found is None or found[0] != entry.length:
            return "was replaced on disk"
        crc = data_checksum(target, data_checksum(before))
        if data_checksum(after, crc) != found[1]:
            return "is damaged"
        entry.crc = found[1]
        entry.verified = True
        self.checked_blocks += 1
        return None

    # --- descriptors -------------------------------------------------------------------

    def _block_fd(self, key: FileKey, index: int, entry: BlockFile) -> int | None:
        """An open descriptor of a block's file, reopened (and its header checked) if
        not kept: a file replaced or removed behind our back is found out here. (The
        header of a block not checked yet is read with its bytes, in `copy`.)"""
        where = (key.relative_dir, index)
        fd = self._fds.get(where)
        if fd is not None:
            self._fds.move_to_end(where)
            return fd
        try:
            fd = self.open_block(where[0], index)
        except OSError as exc:
            gone = exc.errno == errno.ENOENT
            self.forget(
                where, "is gone from the cache" if gone else f"cannot be opened ({exc.strerror})"
            )
            if gone:
                # Perhaps with the whole cache directory: then every block goes now, to
                # be fetched again together, not one read attempt at a time.
                self._on_gone()
            return None
        sound = is_ours(fd)
        if sound and entry.verified:
            header = unpack_header(os.pread(fd, HEADER.size, 0), key.digest, index)
            sound = header == (entry.length, entry.crc)
        if not sound:
            os.close(fd)
            self.forget(where, "was replaced on disk")
            return None
        self._keep_fd(where, fd)
        return fd

    def open_block(self, relative_dir: str, index: int) -> int:
        return os.open(
            block_path(relative_dir, index),
            os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=self._root_fd,
        )

    def _keep_fd(self, where: Where, fd: int) -> None:
        self._fds[where] = fd
        while len(self._fds) > MAX_OPEN_BLOCKS:
            _where, old = self._fds.popitem(last=False)
            os.close(old)

    def close_fd(self, where: Where) -> None:
        fd = self._fds.pop(where, None)
        if fd is not None:
            os.close(fd)

    def forget(self, where: Where, why: str) -> None:
        """A block's file was found gone or wrong: it is to be fetched again."""
        log.warning("disk cache: block %d of %s %s; fetching it again", where[1], where[0], why)
        self._table.lost(where)
        self.close_fd(where)

    # --- checking blocks an earlier mount left -----------------------------------------

    def unverified(self, key: FileKey, indexes: list[int]) -> list[tuple[int, BlockFile]]:
        """The blocks among `indexes` present but not yet checked in this mount."""
        rel = key.relative_dir
        found = []
        for index in indexes:
            entry = self._table.file((rel, index))
            if entry is not None and not entry.verified:
                found.append((index, entry))
        return found

    def check_blocks(self, key: FileKey, blocks: list[tuple[int, BlockFile]]) -> list[VerifyResult]:
        """Reads and checks block files against their headers (blocking: call from a
        thread; touches no shared state)."""
        results = []
        buffer = bytearray(HEADER.size + self.block_size)
        for index, entry in blocks:
            try:
                fd = self.open_block(key.relative_dir, index)
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
                and data_checksum(view[HEADER.size :]) == header[1]
                and os.fstat(fd).st_size == len(view)
                and is_ours(fd)
            ):
                results.append(VerifyResult(index, entry, fd, header[1]))
            else:
                os.close(fd)
                results.append(VerifyResult(index, entry, None))
        return results

    def apply_checks(self, key: FileKey, results: list[VerifyResult]) -> int:
        """Applies what `check_blocks` found; returns how many blocks were damaged."""
        damaged = 0
        for result in results:
            where = (key.relative_dir, result.index)
            current = self._table.file(where)
            if current is not result.entry:
                # Evicted or replaced meanwhile: what was checked is not what is there.
                if result.fd is not None:
                    os.close(result.fd)
                continue
            if result.fd is None:
                damaged += 1
                self.damaged_blocks += 1
                self.forget(where, "is damaged")
                continue
            if not current.verified:
                self.checked_blocks += 1
            current.crc = result.crc
            current.verified = True
            self.close_fd(where)
            self._keep_fd(where, result.fd)
        return damaged

    def advise(self, key: FileKey, indexes: list[int]) -> None:
        """Asks the kernel to bring these block files into the page cache, so that
        the reads that check and serve them find them there (blocking: call from a
        thread; touches no shared state; a file that is gone is for `copy` to find).
        A filesystem that refuses the hint is not asked again."""
        for index in indexes:
            if not self._hints:
                return
            try:
                fd = self.open_block(key.relative_dir, index)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError as exc:
                if refused(exc):
                    self._hints = False  # a flag: set from a thread, read by the next
            finally:
                os.close(fd)
