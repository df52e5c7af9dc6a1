"""Blocks of stored files: served from the disk cache, fetched into it when missing.

Every byte served comes from the disk cache's data file of the stored file,
mapped into memory: a read is a slice of that mapping, whatever its size, with
no copy in Python. A block not yet on disk is downloaded by the fetch worker;
readers of one block share one download; prefetches of contiguous blocks become
ranged GETs sized to the link's speed, several at once, bounded in total. Blocks
left by an earlier mount are checked against their checksums before first use,
ahead of the reader and in a thread when prefetching.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import trio

from amigofs.api import errors
from amigofs.api.models import DownloadPath
from amigofs.cache.disk import DiskCache, FileKey, runs
from amigofs.cache.singleflight import SingleFlight
from amigofs.cache.worker import FetchWorker

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 256 << 10
# Pages a reader has left this far behind are unmapped from the mount process.
_DROP_BEHIND = 8 << 20
PARALLEL_GETS = 8
VERIFY_BATCH = 16  # blocks checked per thread hop: 4 MiB, ~2 ms


class DownloadLink(Protocol):
    """Where a stored file is downloaded from; links expire and can be renewed."""

    @property
    def path(self) -> DownloadPath: ...

    async def renew(self, stale: DownloadPath) -> DownloadPath: ...


@dataclass(slots=True, frozen=True)
class StoredFile:
    key: FileKey
    link: DownloadLink

    @property
    def size(self) -> int:
        return self.key.size


@dataclass(slots=True)
class StoreStats:
    fetched_blocks: int = 0
    fetched_bytes: int = 0
    fetch_errors: int = 0
    verified_blocks: int = 0
    read_hits: int = 0  # reads whose blocks were all ready (for `amigofs stats`)
    read_misses: int = 0  # reads that waited for a block to be fetched or checked


class _Fetch:
    """A download of blocks [first, stop) that readers of those blocks wait on."""

    __slots__ = ("changed", "done", "error", "first", "landed", "stop")

    def __init__(self, first: int, stop: int) -> None:
        self.first, self.stop = first, stop
        self.landed: set[int] = set()  # blocks announced as they landed
        self.done = False
        self.changed = trio.Event()  # set (and replaced) as blocks land and at the end
        self.error: Exception | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class BlockStore:
    def __init__(
        self,
        disk: DiskCache,
        worker: FetchWorker,
        nursery: trio.Nursery,
        *,
        min_chunk_bytes: int = 512 << 10,
        max_chunk_bytes: int = 8 << 20,
        max_prefetch_bytes: int = 32 << 20,
    ) -> None:
        # What is fetched ahead must fit in the disk cache with room to spare, or
        # it would evict blocks a reader is about to be served.
        self.max_prefetch_bytes = min(max_prefetch_bytes, disk.max_bytes // 4)
        self.block_size = disk.block_size
        self._disk = disk
        self._worker = worker
        self._nursery = nursery
        # A window fetched ahead is split into PARALLEL_GETS ranged GETs: enough
        # connections to fill a link that throttles each one, few enough (and as
        # large as possible) that on a fast link each request's own cost in the
        # worker and the server stays small. Readers do not wait for a whole GET:
        # each block is announced as it lands.
        self._min_chunk_blocks = max(1, min_chunk_bytes // self.block_size)
        self._max_chunk_blocks = max(self._min_chunk_blocks, max_chunk_bytes // self.block_size)
        self._ready: SingleFlight[None] = SingleFlight()
        self._fetches: dict[tuple[FileKey, int], _Fetch] = {}
        # Blocks being checked in a thread, and the event that says it is done.
        self._verifying: dict[tuple[FileKey, int], trio.Event] = {}
        self._prefetch_budget = _ByteBudget(self.max_prefetch_bytes)
        self._dropped_to: dict[FileKey, int] = {}

        self.stats = StoreStats()

    async def read(self, file: StoredFile, start: int, end: int) -> memoryview:
        """Bytes [start, end) of a stored file, clipped to its size."""
        end = min(end, file.size)
        if start >= end:
            return memoryview(b"")
        first, stop = start // self.block_size, (end - 1) // self.block_size + 1
        if stop - first > 1:
            # A read over several blocks (the kernel asks for up to 1M at once) gets
            # those missing in one GET, and those left by an earlier mount checked in
            # one thread hop, not a round trip per block.
            self._start(file, first, stop, self._max_chunk_blocks, budget=False)
        waited = False
        for index in range(first, stop):
            if not self._disk.is_ready(file.key, index):
                waited = True
                await self._ready.run((file.key, index), partial(self._make_ready, file, index))
        if waited:
            self.stats.read_misses += 1
        else:
            self.stats.read_hits += 1
        self._disk.touch(file.key, first, stop)
        self._drop_behind(file.key, start)
        return self._disk.view(file.key)[start:end]

    def prefetch(self, file: StoredFile, start: int, end: int) -> None:
        """Starts getting [start, end) ready in the background; returns at once."""
        end = min(end, file.size)
        if start >= end:
            return
        chunk = (end - start) // PARALLEL_GETS // self.block_size
        chunk = max(self._min_chunk_blocks, min(self._max_chunk_blocks, chunk))
        self._start(file, start // self.block_size, (end - 1) // self.block_size + 1, chunk)

    def _start(
        self, file: StoredFile, first: int, stop: int, chunk: int, *, budget: bool = True
    ) -> None:
        """Starts fetching the missing blocks of [first, stop) in GETs of up to `chunk`
        blocks, and checking those an earlier mount left; `budget`: a prefetch."""
        to_fetch: list[int] = []
        to_verify: list[int] = []
        for index in range(first, stop):
            entry = (file.key, index)
            if self._disk.is_ready(file.key, index) or entry in self._fetches:
                continue
            if not self._disk.has(file.key, index):
                to_fetch.append(index)
            elif entry not in self._verifying:
                to_verify.append(index)
        for run_first, run_stop in runs(to_fetch, chunk):
            fetch = self._register(file, run_first, run_stop)
            run = self._prefetch if budget else self._fetch_for_readers
            self._nursery.start_soon(run, file, fetch)
        # A few MiB per thread, in order: the reader's next blocks are checked first,
        # and the batches run on the other core while it is served.
        for run_first, run_stop in runs(to_verify, VERIFY_BATCH):
            batch = list(range(run_first, run_stop))
            done = trio.Event()
            for index in batch:
                self._verifying[(file.key, index)] = done
            self._nursery.start_soon(self._verify, file, batch, done)

    def forget(self, key: FileKey) -> None:
        """The last reader of a file has gone: unmap what it read."""
        if self._dropped_to.pop(key, None) is not None:
            self._disk.drop_pages(key, 0, key.size)

    # --- getting one block ready ---------------------------------------------------

    async def _make_ready(self, file: StoredFile, index: int) -> None:
        for _ in range(3):
            fetch = self._fetches.get((file.key, index))
            if fetch is not None:
                while not fetch.done and not self._disk.is_ready(file.key, index):
                    await fetch.changed.wait()
                if fetch.error is not None and not self._disk.is_ready(file.key, index):
                    raise fetch.error
            elif not self._disk.has(file.key, index):
                await self._run_fetch(file, self._register(file, index, index + 1))
            elif (checking := self._verifying.get((file.key, index))) is not None:
                await checking.wait()
            elif not self._disk.is_ready(file.key, index):
                # Left by an earlier mount: check it before serving it, registered so
                # that a prefetch does not queue the same check.
                done = trio.Event()
                self._verifying[(file.key, index)] = done
                await self._verify(file, [index], done)
            if self._disk.is_ready(file.key, index):
                return
            # Damaged on disk, or evicted meanwhile: fetch it again.
        raise errors.ProtocolError(f"{file.key.filename}: block {index} could not be cached")

    async def _verify(self, file: StoredFile, indexes: list[int], done: trio.Event) -> None:
        try:
            await trio.to_thread.run_sync(self._disk.verify, file.key, indexes)
            self.stats.verified_blocks += len(indexes)
        except OSError as exc:
            log.warning("disk cache: cannot check %s: %s", file.key.relative_dir, exc)
        finally:
            for index in indexes:
                self._verifying.pop((file.key, index), None)
            done.set()

    def _drop_behind(self, key: FileKey, position: int) -> None:
        dropped = self._dropped_to.setdefault(key, 0)
        if position - dropped > 2 * _DROP_BEHIND:
            self._disk.drop_pages(key, dropped, position - _DROP_BEHIND)
            self._dropped_to[key] = position - _DROP_BEHIND

    # --- fetching -------------------------------------------------------------------

    def _register(self, file: StoredFile, first: int, stop: int) -> _Fetch:
        fetch = _Fetch(first, stop)
        for index in range(first, stop):
            self._fetches[(file.key, index)] = fetch
        return fetch

    async def _prefetch(self, file: StoredFile, fetch: _Fetch) -> None:
        async with self._prefetch_budget.hold((fetch.stop - fetch.first) * self.block_size):
            await self._fetch_for_readers(file, fetch)

    async def _fetch_for_readers(self, file: StoredFile, fetch: _Fetch) -> None:
        try:
            await self._run_fetch(file, fetch)
        except Exception as exc:
            # A reader that needs these blocks gets the error from the fetch;
            # nobody else waits on it.
            log.debug("fetch of %s failed: %s", file.key.filename, exc)

    async def _run_fetch(self, file: StoredFile, fetch: _Fetch) -> None:
        """Runs a registered fetch; its error is kept for the readers that wait on it."""
        start = fetch.first * self.block_size
        end = min(file.size, fetch.stop * self.block_size)
        try:
            await trio.to_thread.run_sync(self._disk.reserve, end - start)
            try:
                crcs = await self._download(file, start, end, partial(self._landed, file, fetch))
                # Only the blocks not announced already: adding one again could list a
                # block that eviction has removed since, with its bytes gone.
                blocks = zip(range(fetch.first, fetch.stop), crcs, strict=True)
                self._landed(file, fetch, [(i, crc) for i, crc in blocks if i not in fetch.landed])
            finally:
                self._disk.unreserve(end - start)
            self.stats.fetched_blocks += fetch.stop - fetch.first
            self.stats.fetched_bytes += end - start
        except Exception as exc:
            self.stats.fetch_errors += 1
            fetch.error = exc
            raise
        finally:
            for index in range(fetch.first, fetch.stop):
                if self._fetches.get((file.key, index)) is fetch:
                    del self._fetches[(file.key, index)]
            fetch.done = True
            fetch.notify()

    def _landed(self, file: StoredFile, fetch: _Fetch, blocks: list[tuple[int, int]]) -> None:
        for index, crc in blocks:
            if fetch.first <= index < fetch.stop:
                length = min(self.block_size, file.size - index * self.block_size)
                self._disk.added(file.key, index, length, crc)
                fetch.landed.add(index)
        fetch.notify()

    async def _download(
        self,
        file: StoredFile,
        start: int,
        end: int,
        on_blocks: Callable[[list[tuple[int, int]]], None],
    ) -> list[int]:
        async def fetch_from(path: DownloadPath) -> list[int]:
            return await self._worker.fetch(
                target=path.target, filename=path.filename, start=start, end=end,
                total=file.size, block_size=self.block_size,
                directory=file.key.relative_dir, nursery=self._nursery, on_blocks=on_blocks,
            )  # fmt: skip

        path = file.link.path
        try:
            return await fetch_from(path)
        except errors.AuthError:
            # Download links are time-limited: renew once, then try again.
            return await fetch_from(await file.link.renew(path))


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
