"""Stand-ins for the block store's seams (amigofs.cache.seams), for the unit tier.

`MemoryCache` is a data cache in a dict; `MemoryFetcher` serves stored files from a
dict of bytes, writing the blocks into a `MemoryCache` as the fetch worker writes
block files, and downloads straight into memory as the client does; `FailingFetcher`
fails the requests it is told to: with an error, or short (the server's body ended
early: fewer blocks, or a short last one).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import trio
import trio.lowlevel

from amigofs.api.models import DownloadPath
from amigofs.api.ranges import Version
from amigofs.cache.block_format import FileKey, block_range
from amigofs.cache.block_reader import Unchecked
from amigofs.cache.blocks import BlockFile, BlockTable, Where
from amigofs.cache.seams import FetchJob, Landed


def block_file(prefix: Path, index: int | str) -> Path:
    """Block `index`'s file, of the stored file whose path prefix (the cache directory
    / its key's relative_dir) is `prefix`."""
    return prefix.with_name(f"{prefix.name}.{index}")


class MemoryCache:
    """A data cache in memory: the blocks' bytes in a dict, their state in a BlockTable.
    `room`: False makes every reservation fail (a full disk)."""

    def __init__(self, block_size: int, *, room: bool = True) -> None:
        self.block_size = block_size
        self.max_bytes = 1 << 40
        self.blocks = BlockTable()
        self.room = room
        self.stored: dict[Where, bytes] = {}  # the medium a fetcher writes
        self.checked_blocks = 0
        self.damaged_blocks = 0

    def write_block(self, directory: str, index: int, data: bytes) -> Landed:
        """What the fetch worker does with a block file."""
        self.stored[(directory, index)] = bytes(data)
        return index, len(data), zlib.crc32(data)

    def copy(self, key: FileKey, start: int, end: int) -> bytes | bytearray | Unchecked | None:
        rel, size = key.relative_dir, self.block_size
        first, stop = block_range(start, end, size)
        pieces = []
        for index in range(first, stop):
            where = (rel, index)
            entry = self.blocks.file(where)
            data = self.stored.get(where)
            base = index * size
            lo, hi = max(start, base), min(end, base + size)
            if entry is None:
                return None
            if data is None or len(data) != entry.length or len(data) < hi - base:
                self.blocks.lost(where)  # as the disk cache forgets a short block
                return None
            pieces.append(data[lo - base : hi - base])
            entry.served = True
            self.blocks.served(where)
        return bytearray(b"".join(pieces))

    async def check(self, key: FileKey, indexes: list[int]) -> None:
        await trio.lowlevel.checkpoint()  # nothing here is left by an earlier mount

    async def read_ahead(self, key: FileKey, indexes: list[int]) -> None:
        await trio.lowlevel.checkpoint()

    def room_for(self, key: FileKey, first: int, stop: int) -> int:
        return (stop - first) * self.block_size

    def reserve(self, length: int) -> bool:
        return self.room

    def unreserve(self, length: int) -> None:
        pass

    def disk_full(self) -> None:
        pass

    def added(self, key: FileKey, index: int, length: int, crc: int) -> None:
        self.blocks.stored(
            (key.relative_dir, index), BlockFile(length, crc, verified=True, served=False)
        )

    def write_whole(self, key: FileKey, data: bytes) -> list[Landed]:
        size = self.block_size
        return [
            self.write_block(key.relative_dir, offset // size, data[offset : offset + size])
            for offset in range(0, len(data), size)
        ]


class MemoryFetcher:
    """Serves stored files (by file name) from memory into a MemoryCache, one block
    at a time with a checkpoint between, counting what it was asked for."""

    def __init__(self, files: dict[str, bytes], cache: MemoryCache) -> None:
        self.files = files
        self.cache = cache
        self.requests: list[tuple[str, int, int]] = []  # (file name, start, end)
        self.fetched: Counter[tuple[str, int]] = Counter()  # (file name, block) -> times
        self.direct_bytes = 0
        self.gate: trio.Event | None = None  # when set, requests wait for it

    async def fetch(
        self,
        job: FetchJob,
        *,
        nursery: trio.Nursery,
        on_blocks: Callable[[list[Landed]], None] | None = None,
    ) -> None:
        filename, start, block_size = job.filename, job.start, job.block_size
        self.requests.append((filename, start, job.end))
        number = len(self.requests)
        if self.gate is not None:
            await self.gate.wait()
        end = self.body_end(number, start, job.end)
        data = self.answer(number, job.target, filename)
        for offset in range(start, end, block_size):
            await trio.lowlevel.checkpoint()
            block = data[offset : min(end, offset + block_size)]
            landed = self.cache.write_block(job.directory, offset // block_size, block)
            self.fetched[(filename, offset // block_size)] += 1
            if on_blocks is not None:
                on_blocks([landed])

    async def download_into(
        self,
        path: DownloadPath,
        start: int,
        buf: memoryview,
        *,
        total: int | None = None,
        version: Version | None = None,
    ) -> None:
        self.requests.append((path.filename, start, start + len(buf)))
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        data = self.answer(len(self.requests), path.target, path.filename)
        buf[:] = data[start : start + len(buf)]
        self.direct_bytes += len(buf)

    def answer(self, number: int, target: str, filename: str) -> bytes:
        """The stored file a request gets (a hook for failures)."""
        return self.files[filename]

    def body_end(self, number: int, start: int, end: int) -> int:
        """Where a request's body ends (a hook for short answers)."""
        return end


class FailingFetcher(MemoryFetcher):
    """A MemoryFetcher that fails requests by number (1 = the first): `errors` raise,
    `short` end their body early (half a block short), `refused` targets raise the
    error a refused (expired) link gets."""

    def __init__(self, files: dict[str, bytes], cache: MemoryCache) -> None:
        super().__init__(files, cache)
        self.errors: dict[int, Exception] = {}
        self.short: set[int] | None = set()  # None: every request is short
        self.refused: dict[str, Exception] = {}  # download target -> error

    def answer(self, number: int, target: str, filename: str) -> bytes:
        if number in self.errors:
            raise self.errors[number]
        if target in self.refused:
            raise self.refused[target]
        return super().answer(number, target, filename)

    def body_end(self, number: int, start: int, end: int) -> int:
        if self.short is None or number in self.short:
            return max(start, end - self.cache.block_size // 2)
        return end
