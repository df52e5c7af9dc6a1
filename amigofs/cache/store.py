"""Blocks of stored files: served from the data cache, fetched into it when missing.

A read is served only from blocks known present: it waits until every block under
it is in the cache, pinned so that eviction passes them by, and then copies its
bytes out in one synchronous step, which eviction (on the same thread) cannot
interrupt; a block found gone, replaced or damaged at that moment is fetched again.
Holes are never served.

A block not yet in the cache is downloaded by the fetcher (the fetch worker).
Downloads belong to the store, not to the reader that asked: a reader whose deadline
runs out stops waiting, and the download lands for the next try. Readers of one
block share one download; prefetches of contiguous blocks become ranged GETs sized
to the link's measured speed (a block must land well within a reader's deadline),
several at once, bounded in total. A block left by an earlier mount is checked
against its checksum by the read that first serves it, in the same syscall and
before a byte of it is served; one not in the page cache is checked in a thread
instead, and the kernel is asked to read ahead those a reader is about to reach.
When the cache's disk has no room, reads are fetched straight into memory instead:
a read never fails because the cache is full.

A read that does not go on from the ones before it (a file's first read, a read
after a seek: the caller says so with `exact_reads`) fetches the bytes it asks for
and no more, not the blocks under them: `file` and a file manager's preview read
64 KiB at a file's start and end, and a block of 256 KiB at each end was 3-5 times
that. Such a piece is kept in memory, of the file's version (fetched with If-Range
like any block), until the file's last reader closes it; a read it covers is served
from it, and a reader going on in order gets blocks as before (its first piece is
then fetched again in its block: a read through is kept on disk whole). A piece's
download, small, is its reader's own: cut by the reader's deadline, asked again by
the kernel's next try.

Every block's state is the `BlockTable`'s (`blocks`); the store moves blocks through
it. A refused download raises `LinkExpired`: renewing links is the records layer's.

One version of a file at a time: the store keeps the version (validator: ETag, else
Last-Modified) of each file its blocks are of, learnt from the first answer of the
mount that fetches them; each fetch asks for that version (If-Range). An answer of
another version means the file was replaced on the server: its blocks go, the new
version is the file's, and its `generation` counts one more (a reader that has been
served the old one gets no more: the records layer's). Blocks an earlier mount left
are served only once the file's version now is known (from a fetch, or a GET of its
first byte) and their headers' digest, which holds the version, matches it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar, cast

import trio

from amigofs.api import errors
from amigofs.api.models import DownloadPath
from amigofs.api.ranges import Version
from amigofs.cache.block_format import FileKey, block_range, runs
from amigofs.cache.block_reader import Unchecked
from amigofs.cache.block_writer import CacheFull
from amigofs.cache.blocks import Fetch
from amigofs.cache.seams import (
    BlockCache,
    DirectDownload,
    DownloadLink,
    Fetcher,
    FetchJob,
    Landed,
    LinkExpired,
)
from amigofs.cache.singleflight import SingleFlight
from amigofs.policy.readahead import first_fetch_end

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BLOCK_SIZE = 256 << 10
NO_VALIDATOR = ""  # remembered of a server that sends no validator
PARALLEL_GETS = 8
# A GET should take at most this share of a reader's deadline at the measured speed.
GET_SHARE_OF_DEADLINE = 0.25
_SPEED_WEIGHT = 0.3  # of a new measurement in the running estimate
# The longest a reader's own GET (blocks it waits for) should take to cross one
# response at the measured speed: about a round trip of an internet link. Where each
# response is throttled (3 MB/s a response on the link profile) the kernel's request
# of 1 MiB is then four GETs of a block side by side (85 ms), not one of 350 ms; on a
# fast link it stays one GET.
READER_GET_SECONDS = 0.05
READ_ATTEMPTS = 4
# Pieces (the exact ranges of reads not in order) kept in memory, all files together.
PIECE_BYTES = 16 << 20
# A read not in order whose blocks cost at most 1/PIECE_WASTE more gets the blocks.
PIECE_WASTE = 8

# Set by the caller around a read that does not go on from the ones before it: the
# bytes asked are fetched, not the blocks under them. A context variable, not an
# argument: the read goes through the records layer (links, WAV headers, call.wav's
# two files) on its way here, and each FUSE request is its own task.
_exact: ContextVar[bool] = ContextVar("exact_reads", default=False)


@contextlib.contextmanager
def exact_reads(exact: bool = True) -> Iterator[None]:
    """Within it, the current task's reads of blocks not in the cache fetch only the
    bytes asked for (a piece), when `exact`."""
    token = _exact.set(exact)
    try:
        yield
    finally:
        _exact.reset(token)


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "BlockStore",
    "DownloadLink",
    "LinkExpired",
    "StoredFile",
    "exact_reads",
]


@dataclass(slots=True, frozen=True)
class StoredFile:
    key: FileKey
    link: DownloadLink
    # False: a file the mount put whole (metadata.json), of no version the store tracks.
    versioned: bool = True
    # The version an earlier mount found it of (its blocks' then): a hint, asked with
    # If-None-Match, never trusted (the blocks' digest is); NO_VALIDATOR: the server
    # sent none, and cannot be asked; None: not known.
    remembered: str | None = None

    @property
    def size(self) -> int:
        return self.key.size


@dataclass(slots=True)
class StoreStats:
    fetched_blocks: int = 0
    fetched_bytes: int = 0
    fetch_errors: int = 0
    verified_blocks: int = 0
    damaged_blocks: int = 0
    uncached_bytes: int = 0  # fetched straight into memory: no room on disk
    served_bytes: int = 0  # what reads returned
    read_hits: int = 0  # reads whose blocks were all ready (for `amigofs stats`)
    read_misses: int = 0  # reads that waited for a block to be fetched or checked


class BlockStore:
    def __init__(
        self,
        disk: BlockCache,
        worker: Fetcher,
        nursery: trio.Nursery,
        *,
        client: DirectDownload | None = None,
        deadline: float = 30.0,
        min_chunk_bytes: int = 512 << 10,
        max_chunk_bytes: int = 8 << 20,
        max_prefetch_bytes: int = 32 << 20,
    ) -> None:
        # What is fetched ahead must fit in the disk cache with room to spare, or
        # it would evict blocks a reader is about to be served.
        self.max_prefetch_bytes = min(max_prefetch_bytes, disk.max_bytes // 4)
        self.block_size = disk.block_size
        self._disk = disk
        self._blocks = disk.blocks
        self._worker = worker
        self._client = client
        self._nursery = nursery
        self._deadline = deadline
        # A window fetched ahead is split into PARALLEL_GETS ranged GETs: enough
        # connections to fill a link that throttles each one, few enough (and as
        # large as possible) that on a fast link each request's own cost in the
        # worker and the server stays small. Readers do not wait for a whole GET:
        # each block is announced as it lands.
        self._min_chunk_blocks = max(1, min_chunk_bytes // self.block_size)
        self._max_chunk_blocks = max(self._min_chunk_blocks, max_chunk_bytes // self.block_size)
        # Bytes a second one response delivers, as measured; None until measured.
        self.speed: float | None = None
        self._prefetch_budget = _ByteBudget(self.max_prefetch_bytes)
        self.stats = StoreStats()
        # Of each file (by relative dir), the key of the version its blocks are of in
        # this mount (the validator in its digest); absent: not known yet.
        self._keys: dict[str, FileKey] = {}
        self._generations: dict[str, int] = {}  # replacements seen in this mount
        self._learning: SingleFlight[None] = SingleFlight()
        self._pieces = _Pieces(PIECE_BYTES)
        self._piece_fetches: SingleFlight[tuple[str | None, bytes]] = SingleFlight()
        # Told of each file found replaced on the server (the records layer: the
        # kernel's cached pages of it are stale), and of each version learnt.
        self.on_replaced: Callable[[FileKey], None] | None = None
        self.on_version: Callable[[StoredFile, str], None] | None = None

    # --- reading ----------------------------------------------------------------------

    async def read(self, file: StoredFile, start: int, end: int) -> bytes | bytearray:
        """Bytes [start, end) of a stored file, clipped to its size. The answer may be
        a buffer the cache uses again once nothing refers to it: use it, or copy it,
        before it is dropped; never keep a view of it past that. LinkExpired if the
        file's link was refused."""
        end = min(end, file.size)
        if start >= end:
            return b""
        block_size = self.block_size
        first, stop = start // block_size, (end - 1) // block_size + 1
        rel = file.key.relative_dir
        available = self._blocks.available
        waited = False
        checks = 0
        attempts = 0
        while attempts < READ_ATTEMPTS:
            missing = [i for i in range(first, stop) if not available((rel, i))]
            if not missing:
                key = self._keys.get(rel) if file.versioned else file.key
                if key is None:
                    # Left by an earlier mount: served once the file's version now is
                    # known (their headers' digest holds the version they are of).
                    waited = True
                    await self._learn(file)
                    continue
                data = self._copy(key, start, end)
                self._count_checks()
                if isinstance(data, Unchecked) and checks < READ_ATTEMPTS:
                    # Left by an earlier mount and not in the page cache: checked in a
                    # thread (which reads them from the disk), then read again. Each
                    # check settles its blocks (verified, or forgotten to be fetched),
                    # so this is no fetch attempt.
                    checks += 1
                    waited = True
                    self._blocks.pin(rel, first, stop, 1)
                    try:
                        await self._check(key, data.indexes)
                    finally:
                        self._blocks.pin(rel, first, stop, -1)
                    continue
                if data is not None and not isinstance(data, Unchecked):
                    return self._served(data, waited)
                attempts += 1
                continue  # a block went missing on disk: fetch it again
            piece = self._pieces.find(rel, start, end)
            if piece is None and (coming := self._piece_coming(rel, start, end)) is not None:
                waited = True
                await coming.wait()
                continue
            if piece is None and self._fetch_piece(file, start, end, missing):
                waited = True
                piece = await self._piece(file, start, first_fetch_end(start, end, file.size))
                if piece is None:  # the file was found replaced: again, of the new version
                    attempts += 1
                    continue
                piece = piece[: end - start]
            if piece is not None:
                return self._served(piece, waited)
            attempts += 1
            waited = True
            if len(missing) > 1:
                # A read over several blocks (the kernel asks for up to 1M at once) gets
                # those missing in one GET (or a few, on a slow link).
                self._start(file, missing[0], missing[-1] + 1, self._reader_chunk(), budget=False)
            self._blocks.pin(rel, first, stop, 1)
            try:
                for index in missing:
                    await self._make_ready(file, index)
            finally:
                self._blocks.pin(rel, first, stop, -1)
        raise errors.ProtocolError(f"{file.key.filename}: blocks {first}-{stop} could not be kept")

    def _served(self, data: bytes | bytearray, waited: bool) -> bytes | bytearray:
        self.stats.served_bytes += len(data)
        if waited:
            self.stats.read_misses += 1
        else:
            self.stats.read_hits += 1
        return data

    def _fetch_piece(self, file: StoredFile, start: int, end: int, missing: list[int]) -> bool:
        """Whether a read of [start, end) whose blocks `missing` are not in the cache
        fetches only its own bytes: a read not in order (`exact_reads`), of blocks no
        fetch is getting already (a fetch ahead, another reader's), whose blocks
        would cost more than an eighth more than it asks. A read of a few blocks (a
        reader of 1 MiB at a time), a small file read whole, cost about nothing more
        in blocks, and those are kept on disk: a file read through must be there
        after a remount."""
        if not _exact.get() or self._client is None or not file.versioned:
            return False
        rel = file.key.relative_dir
        fetch_of = self._blocks.fetch_of
        if any(fetch_of((rel, index)) is not None for index in missing):
            return False
        first, stop = block_range(start, end, self.block_size)
        rounded = min(stop * self.block_size, file.size) - first * self.block_size
        return (rounded - (end - start)) * PIECE_WASTE > end - start

    async def _piece(self, file: StoredFile, start: int, end: int) -> bytes | None:
        """Bytes [start, end) fetched as they are, of the file's version (If-Range, as
        a block's fetch), and kept as a piece; None if the answer was of another
        version (the file was replaced: its blocks and pieces went)."""
        client = self._client
        assert client is not None
        rel = file.key.relative_dir

        async def fetch() -> tuple[str | None, bytes]:
            known = self._keys.get(rel)
            version = Version(known.validator, True) if known is not None else Version()
            buffer = bytearray(end - start)
            await self._download(
                file,
                lambda path: client.download_into(
                    path, start, memoryview(buffer), total=file.size, version=version
                ),
            )
            self.stats.fetched_bytes += end - start
            return version.validator, bytes(buffer)

        try:
            validator, data = await self._piece_fetches.run((rel, start, end), fetch)
        except errors.VersionChanged as exc:
            self._adopt(file, exc.validator)
            return None
        self._adopt(file, validator)
        known = self._keys.get(rel)
        if known is not None and known.validator != validator:
            return None  # replaced again meanwhile: this piece is of an old version
        self._pieces.add(rel, start, data)
        return data

    def _piece_coming(self, rel: str, start: int, end: int) -> trio.Event | None:
        """The landing of a piece being fetched that holds bytes [start, end), if any:
        the kernel's next request can come before the piece that holds it lands."""
        for key, landed in self._piece_fetches.flying():
            of, first, last = cast(tuple[str, int, int], key)
            if of == rel and first <= start and end <= last:
                return landed
        return None

    def _copy(self, key: FileKey, start: int, end: int) -> bytes | bytearray | Unchecked | None:
        """The bytes, from the cache and (without room on disk) memory; None if a
        block turned out to be gone."""
        blocks = self._blocks
        if not blocks.holds_memory:
            return self._disk.copy(key, start, end)
        block_size = self.block_size
        first, stop = block_range(start, end, block_size)
        rel = key.relative_dir
        if all(blocks.file((rel, i)) is not None for i in range(first, stop)):
            return self._disk.copy(key, start, end)
        pieces: list[bytes | bytearray] = []
        for index in range(first, stop):
            lo = max(start, index * block_size)
            hi = min(end, (index + 1) * block_size)
            block = blocks.memory_of((rel, index))
            if block is not None:
                base = index * block_size
                pieces.append(block[lo - base : hi - base])
                continue
            piece = self._disk.copy(key, lo, hi)
            if piece is None or isinstance(piece, Unchecked):
                return piece
            pieces.append(piece)
        return b"".join(pieces)

    def _count_checks(self) -> None:
        self.stats.verified_blocks = self._disk.checked_blocks
        self.stats.damaged_blocks = self._disk.damaged_blocks

    async def _check(self, key: FileKey, indexes: list[int]) -> None:
        """Checks blocks an earlier mount left in a thread; returns once each is checked
        (and so verified, or forgotten to be fetched again)."""
        rel = key.relative_dir
        todo = [i for i in indexes if self._blocks.check_of((rel, i)) is None]
        if todo:
            done = trio.Event()
            for index in todo:
                self._blocks.checking((rel, index), done)
            self._nursery.start_soon(self._verify, key, todo, done)
        for index in indexes:
            checking = self._blocks.check_of((rel, index))
            if checking is not None:
                await checking.wait()

    async def _verify(self, key: FileKey, indexes: list[int], done: trio.Event) -> None:
        try:
            await self._disk.check(key, indexes)
            self._count_checks()
        except Exception:
            log.exception("disk cache: cannot check blocks of %s", key.relative_dir)
        finally:
            for index in indexes:
                self._blocks.checked((key.relative_dir, index))
            done.set()

    # --- versions ----------------------------------------------------------------------

    def generation(self, key: FileKey) -> int:
        """How many times the file was found replaced on the server in this mount."""
        return self._generations.get(key.relative_dir, 0)

    async def _learn(self, file: StoredFile) -> None:
        """Learns the file's version now (one GET of its first byte), for the blocks an
        earlier mount left."""
        rel = file.key.relative_dir

        async def ask() -> None:
            if file.remembered == NO_VALIDATOR:
                # The server says no version: asking it again would tell nothing.
                self._adopt(file, None)
                return
            version = Version(file.remembered)
            try:
                await self._download(
                    file,
                    lambda path: self._worker.fetch(
                        FetchJob(path.target, path.filename, 0, 0, file.size, self.block_size,
                                 rel, version),
                        nursery=self._nursery,
                    ),
                )  # fmt: skip
            except (errors.TransportError, errors.ServerError) as exc:
                # No answer: what this cache holds of the version an earlier mount saw
                # (its blocks' digest says which) is served, and nothing else.
                log.warning(
                    "%s: the server did not say whether it was replaced (%s); serving "
                    "the cached version", file.key.filename, exc,
                )  # fmt: skip
                version.validator = file.remembered or None
            if rel not in self._keys:  # no fetch has said it meanwhile
                self._adopt(file, version.validator)

        if rel not in self._keys:
            await self._learning.run(rel, ask)

    def _adopt(self, file: StoredFile, validator: str | None) -> None:
        """The file is of version `validator` on the server now: if its blocks are of
        another, they go (the file was replaced) and its generation counts one more."""
        if not file.versioned:
            return
        rel = file.key.relative_dir
        known = self._keys.get(rel)
        if known is not None and known.validator == validator:
            return
        if known is not None:
            log.warning(
                "%s/%s: %s was replaced on the server (%s, was %s): its cached blocks go",
                file.key.workspace_id, file.key.call_sid, file.key.filename,
                validator, known.validator,
            )  # fmt: skip
            for index in range(-(-file.size // self.block_size)):
                self._blocks.lost((rel, index))
            self._blocks.release_memory(rel)
            self._pieces.forget(rel)
            self._generations[rel] = self._generations.get(rel, 0) + 1
        self._keys[rel] = dataclasses.replace(file.key, validator=validator)
        if known is not None and self.on_replaced is not None:
            self.on_replaced(file.key)
        remember = NO_VALIDATOR if validator is None else validator
        if remember != file.remembered and self.on_version is not None:
            self.on_version(file, remember)

    def prefetch(self, file: StoredFile, start: int, end: int) -> list[Fetch]:
        """Starts getting [start, end) ready in the background; returns at once, with
        the downloads it started (their outcome is the records layer's to watch: an
        expired link is renewed there)."""
        end = min(end, file.size)
        if start >= end:
            return []
        chunk = (end - start) // PARALLEL_GETS // self.block_size
        chunk = max(self._min_chunk_blocks, min(self._max_chunk_blocks, chunk))
        chunk = min(chunk, self._speed_chunk())
        return self._start(file, *block_range(start, end, self.block_size), chunk)

    async def put(self, key: FileKey, data: bytes) -> None:
        """Stores a whole small file the mount fetched itself (metadata.json) in the
        cache; without room it is simply not kept, and read through its link later."""
        first, stop = 0, -(-len(data) // self.block_size)
        rel = key.relative_dir
        if stop == 0 or all(self._verified(rel, i) for i in range(first, stop)):
            return
        room = self._disk.room_for(key, first, stop)
        if not self._disk.reserve(room):
            return
        try:
            stored = await trio.to_thread.run_sync(self._disk.write_whole, key, data)
        except (CacheFull, OSError) as exc:
            log.warning("disk cache: %s not kept: %s", key.filename, exc)
            return
        finally:
            self._disk.unreserve(room)
        for index, length, crc in stored:
            self._disk.added(key, index, length, crc)

    def _verified(self, rel: str, index: int) -> bool:
        entry = self._blocks.file((rel, index))
        return entry is not None and entry.verified

    def forget(self, key: FileKey) -> None:
        """The last reader of a file has gone."""
        # The few blocks held in memory, not every block the file has; its pieces
        # (the kernel's page cache keeps what was read of them).
        self._blocks.release_memory(key.relative_dir)
        self._pieces.forget(key.relative_dir)

    def _speed_chunk(self) -> int:
        """The most blocks one GET may take, at the measured speed, to land well within
        a reader's deadline."""
        if self.speed is None:
            return self._max_chunk_blocks
        fits = int(self.speed * self._deadline * GET_SHARE_OF_DEADLINE) // self.block_size
        return max(1, min(self._max_chunk_blocks, fits))

    def _reader_chunk(self) -> int:
        # Before anything is measured, a reader's blocks go in GETs of one block each,
        # at once: on a slow link a single GET of 1 MiB could outlast the deadline.
        if self.speed is None:
            return 1
        fits = int(self.speed * READER_GET_SECONDS) // self.block_size
        return max(1, min(self._speed_chunk(), fits))

    def _start(
        self, file: StoredFile, first: int, stop: int, chunk: int, *, budget: bool = True
    ) -> list[Fetch]:
        """Starts fetching the missing blocks of [first, stop) in GETs of up to `chunk`
        blocks; `budget`: a prefetch. Of the blocks an earlier mount left, the kernel
        is asked to read ahead those not checked yet (once each), so that the read
        that checks and serves each finds it in the page cache."""
        to_fetch: list[int] = []
        to_advise: list[int] = []
        rel = file.key.relative_dir
        get = self._blocks.get
        for index in range(first, stop):
            block = get((rel, index))
            if block is None:
                to_fetch.append(index)
                continue
            if block.fetch is not None or (block.file is not None and block.file.verified):
                continue
            if block.file is not None:
                if not block.file.advised:
                    block.file.advised = True
                    to_advise.append(index)
            elif block.memory is None:
                to_fetch.append(index)
        launched = [
            self._launch(file, run_first, run_stop, prefetch=budget)
            for run_first, run_stop in runs(to_fetch, chunk)
        ]
        if to_advise:
            self._nursery.start_soon(self._advise, file, to_advise)
        return launched

    async def _advise(self, file: StoredFile, indexes: list[int]) -> None:
        try:
            await self._disk.read_ahead(file.key, indexes)
        except Exception:
            log.exception("disk cache: cannot read ahead blocks of %s", file.key.relative_dir)

    # --- getting one block ready ---------------------------------------------------

    async def _make_ready(self, file: StoredFile, index: int) -> None:
        """Waits until a block is in the cache (or in memory), fetching it if need be."""
        where = (file.key.relative_dir, index)
        available = self._blocks.available
        for _ in range(3):
            if available(where):
                return
            fetch = self._blocks.fetch_of(where)
            if fetch is None:
                # (Again, too, after a fetch that found the file replaced: of the new
                # version now.)
                fetch = self._launch(file, index, index + 1, prefetch=False)
            while not fetch.done and not available(where):
                await fetch.changed.wait()
            if fetch.error is not None and not available(where):
                raise fetch.error
        if not available(where):
            raise errors.ProtocolError(f"{file.key.filename}: block {index} could not be cached")

    # --- fetching -------------------------------------------------------------------

    def _launch(self, file: StoredFile, first: int, stop: int, *, prefetch: bool) -> Fetch:
        """Registers a fetch of [first, stop) and starts it in the store's nursery:
        it outlives the reader that asked for it."""
        fetch = Fetch(first, stop)
        self._blocks.fetching(file.key.relative_dir, fetch)
        self._nursery.start_soon(self._run_fetch, file, fetch, prefetch)
        return fetch

    async def _run_fetch(self, file: StoredFile, fetch: Fetch, prefetch: bool) -> None:
        start = fetch.first * self.block_size
        end = min(file.size, fetch.stop * self.block_size)
        room = self._disk.room_for(file.key, fetch.first, fetch.stop)
        try:
            if prefetch:
                async with self._prefetch_budget.hold(end - start):
                    # No room on disk: nothing is fetched ahead.
                    if self._disk.reserve(room):
                        try:
                            await self._fetch_cached(file, fetch, start, end)
                        finally:
                            self._disk.unreserve(room)
                return
            cached = self._disk.reserve(room)
            if cached:
                try:
                    await self._fetch_cached(file, fetch, start, end)
                except CacheFull as exc:
                    log.warning("disk cache: %s; serving reads without caching", exc)
                    self._disk.disk_full()
                    cached = False
                finally:
                    self._disk.unreserve(room)
            if not cached:
                await self._fetch_uncached(file, fetch)
        except errors.VersionChanged as exc:
            # No error of this fetch's readers: the file is of another version now, its
            # blocks of the old one are gone, and readers fetch it again.
            self._adopt(file, exc.validator)
        except Exception as exc:
            fetch.error = exc
            # A reader that needs these blocks gets the error from the fetch; a bug
            # (not an answer from the API) is logged whole, and ends only this fetch.
            # An expired link is no fetch error: its reader renews it and asks again.
            if isinstance(exc, LinkExpired):
                log.debug("fetch of %s: %s", file.key.filename, exc)
            elif isinstance(exc, errors.AmigoError):
                self.stats.fetch_errors += 1
                log.debug("fetch of %s failed: %s", file.key.filename, exc)
            else:
                self.stats.fetch_errors += 1
                log.exception("fetch of %s failed", file.key.filename)
        finally:
            self._blocks.fetched(file.key.relative_dir, fetch)
            fetch.done = True
            fetch.notify()

    async def _fetch_cached(self, file: StoredFile, fetch: Fetch, start: int, end: int) -> None:
        """Downloads into the data cache (room already reserved)."""
        fetch.started = trio.current_time()  # not counting the wait for a prefetch budget
        known = self._keys.get(file.key.relative_dir)
        fetch.version = Version(known.validator, True) if known is not None else Version()
        await self._download(
            file,
            lambda path: self._worker.fetch(
                FetchJob(path.target, path.filename, start, end, file.size, self.block_size,
                         file.key.relative_dir, fetch.version, file.versioned),
                nursery=self._nursery,
                on_blocks=lambda blocks: self._landed(file, fetch, blocks),
            ),
        )  # fmt: skip
        self.stats.fetched_blocks += fetch.stop - fetch.first
        self.stats.fetched_bytes += end - start

    async def _fetch_uncached(self, file: StoredFile, fetch: Fetch) -> None:
        """Downloads the blocks not landed yet into memory, for the readers waiting."""
        if self._client is None:
            raise errors.TransportError("the disk cache is full and no direct download is set up")
        client = self._client
        rel = file.key.relative_dir
        wanted = [i for i in range(fetch.first, fetch.stop) if i not in fetch.landed]
        for run_first, run_stop in runs(wanted, len(wanted)):
            start = run_first * self.block_size
            end = min(file.size, run_stop * self.block_size)
            buffer = bytearray(end - start)

            known = self._keys.get(rel)
            version = Version(known.validator, True) if known is not None else Version()

            async def download(
                path: DownloadPath,
                start: int = start,
                buffer: bytearray = buffer,
                version: Version = version,
            ) -> None:
                await client.download_into(
                    path, start, memoryview(buffer), total=file.size, version=version
                )

            await self._download(file, download)
            self._adopt(file, version.validator)
            for index in range(run_first, run_stop):
                offset = (index - run_first) * self.block_size
                self._blocks.hold((rel, index), bytes(buffer[offset : offset + self.block_size]))
            self.stats.uncached_bytes += end - start
        fetch.notify()

    @staticmethod
    async def _download(file: StoredFile, call: Callable[[DownloadPath], Awaitable[T]]) -> T:
        """Runs a download through the file's current link; a refusal (links are
        time-limited) is LinkExpired, for the records layer to renew it."""
        path = file.link.path
        try:
            return await call(path)
        except errors.AuthError as exc:
            raise LinkExpired(file.key, file.link, path, exc) from exc

    def _landed(self, file: StoredFile, fetch: Fetch, blocks: list[Landed]) -> None:
        self._adopt(file, fetch.version.validator)
        key = self._keys.get(file.key.relative_dir, file.key)
        for index, length, crc in blocks:
            if fetch.first <= index < fetch.stop and index not in fetch.landed:
                self._disk.added(key, index, length, crc)
                fetch.landed.add(index)
        self._measure(fetch)
        fetch.notify()

    def _measure(self, fetch: Fetch) -> None:
        """Updates the per-response speed from a fetch's landed blocks: between its first
        and latest announcement where there are two, else from its start."""
        now = trio.current_time()
        count = len(fetch.landed)
        if fetch.first_landed is None:
            fetch.first_landed = (now, count)
            elapsed, landed = now - fetch.started, count
        else:
            when, before = fetch.first_landed
            elapsed, landed = now - when, count - before
        if elapsed <= 0 or landed <= 0:
            return
        sample = landed * self.block_size / elapsed
        self.speed = (
            sample
            if self.speed is None
            else (_SPEED_WEIGHT * sample + (1 - _SPEED_WEIGHT) * self.speed)
        )


class _Pieces:
    """Pieces of files kept in memory, least recently used first, at most `limit`
    bytes in all; by file (relative dir), then start."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._bytes = 0
        self._files: dict[str, dict[int, bytes]] = {}
        self._order: OrderedDict[tuple[str, int], None] = OrderedDict()  # LRU

    def find(self, rel: str, start: int, end: int) -> bytes | None:
        """Bytes [start, end) of a file, if one piece holds them all."""
        for first, data in self._files.get(rel, {}).items():
            if first <= start and end <= first + len(data):
                self._order.move_to_end((rel, first))
                return data[start - first : end - first]
        return None

    def add(self, rel: str, start: int, data: bytes) -> None:
        pieces = self._files.setdefault(rel, {})
        old = pieces.get(start)
        if old is not None:
            self._bytes -= len(old)
        pieces[start] = data
        self._order[(rel, start)] = None
        self._order.move_to_end((rel, start))
        self._bytes += len(data)
        while self._bytes > self._limit and len(self._order) > 1:
            of, first = self._order.popitem(last=False)[0]
            self._drop(of, first)

    def forget(self, rel: str) -> None:
        for first in list(self._files.get(rel, ())):
            del self._order[(rel, first)]
            self._drop(rel, first)

    def _drop(self, rel: str, start: int) -> None:
        pieces = self._files[rel]
        self._bytes -= len(pieces.pop(start))
        if not pieces:
            del self._files[rel]


class _ByteBudget:
    """Bounds the bytes of prefetches in flight (each one's buffer lives in the worker)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._changed = trio.Event()

    @contextlib.asynccontextmanager
    async def hold(self, length: int) -> AsyncIterator[None]:
        length = min(length, self._limit)
        while self._used + length > self._limit:
            await self._changed.wait()
        self._used += length
        try:
            yield
        finally:
            self._used -= length
            self._changed.set()
            self._changed = trio.Event()
