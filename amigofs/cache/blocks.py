"""An in-memory cache of fixed-size blocks of stored files, filled by ranged downloads.

Concurrent readers of one block share one download (single-flight), and the
cache is bounded in bytes (LRU), so memory does not grow with what was read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from functools import partial

import cachetools

from amigofs.cache.singleflight import SingleFlight
from amigofs.concurrency import gather

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 1 << 20

# Fetches bytes [start, end) of a stored file.
FetchRange = Callable[[int, int], Awaitable[bytes | bytearray]]


@dataclass(slots=True, frozen=True)
class StoredFile:
    """A stored file as the block cache sees it: a stable key, its size, a fetcher."""

    key: Hashable
    size: int
    fetch: FetchRange


class BlockCache:
    def __init__(self, *, max_bytes: int, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if block_size <= 0 or max_bytes < block_size:
            raise ValueError("the cache must hold at least one block")
        self.block_size = block_size
        self._blocks: cachetools.LRUCache[tuple[Hashable, int], bytes | bytearray] = (
            cachetools.LRUCache(maxsize=max_bytes, getsizeof=len)
        )
        self._flights: SingleFlight[bytes | bytearray] = SingleFlight()
        self.downloads = 0  # blocks fetched; tests and stats read it

    @property
    def cached_bytes(self) -> int:
        return int(self._blocks.currsize)

    async def read(self, file: StoredFile, start: int, end: int) -> bytes | memoryview:
        """Bytes [start, end) of `file`, clipped to its size."""
        end = min(end, file.size)
        if start >= end:
            return b""
        first, last = start // self.block_size, (end - 1) // self.block_size
        if first == last:
            block = await self._block(file, first)
            base = first * self.block_size
            return memoryview(block)[start - base : end - base]
        indexes = range(first, last + 1)
        blocks = await gather(*(partial(self._block, file, index) for index in indexes))
        out = bytearray()
        for index, block in zip(indexes, blocks, strict=True):
            base = index * self.block_size
            lo, hi = max(start, base) - base, min(end, base + self.block_size) - base
            out += memoryview(block)[lo:hi]
        return bytes(out)

    async def _block(self, file: StoredFile, index: int) -> bytes | bytearray:
        key = (file.key, index)
        block = self._blocks.get(key)
        if block is not None:
            return block
        return await self._flights.run(key, lambda: self._download(file, index, key))

    async def _download(
        self, file: StoredFile, index: int, key: tuple[Hashable, int]
    ) -> bytes | bytearray:
        start = index * self.block_size
        data = await file.fetch(start, min(file.size, start + self.block_size))
        if len(data) != min(file.size, start + self.block_size) - start:
            raise ValueError(f"fetch of block {index} returned {len(data)} bytes")
        self.downloads += 1
        self._blocks[key] = data
        return data
