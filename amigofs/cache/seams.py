"""The block store's seams: what it needs of a data cache and of a fetcher, where a
stored file is downloaded from, and what it raises when that link has expired.

Production plugs in `DiskCache` (the data cache), the `FetchWorker` process (the
fetcher, which writes block files into the data cache and announces them) and the
`PlatformClient` (direct downloads into memory when the disk has no room). Unit
tests plug in-memory and failure-injecting stand-ins into the same seams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from amigofs.api import errors
from amigofs.api.models import DownloadPath
from amigofs.api.ranges import Version
from amigofs.cache.block_format import FileKey
from amigofs.cache.block_reader import Unchecked
from amigofs.cache.blocks import BlockTable

# (block index, data length, crc32) of each block a fetcher has stored.
Landed = tuple[int, int, int]


class DownloadLink(Protocol):
    """Where a stored file is downloaded from now (the records layer renews it)."""

    @property
    def path(self) -> DownloadPath: ...


class LinkExpired(Exception):
    """A download was refused (401/403): the link `stale` of `key` has expired, or the
    key may no longer see the file. The records layer renews the link and asks again;
    `error` is what the server said, for when renewing does not help."""

    def __init__(self, key: FileKey, link: DownloadLink, stale: DownloadPath,
                 error: errors.AuthError) -> None:  # fmt: skip
        super().__init__(f"{key.filename}: download refused: {error}")
        self.key = key
        self.link = link
        self.stale = stale
        self.error = error


class BlockCache(Protocol):
    """Where blocks are kept: the block store's data cache."""

    block_size: int
    max_bytes: int
    blocks: BlockTable  # every block's state

    @property
    def checked_blocks(self) -> int: ...
    @property
    def damaged_blocks(self) -> int: ...

    def copy(self, key: FileKey, start: int, end: int) -> bytes | bytearray | Unchecked | None:
        """Bytes [start, end), if every block under them is there (None: one was
        found gone, and forgotten); Unchecked: blocks to `check` first."""

    async def check(self, key: FileKey, indexes: list[int]) -> None:
        """Checks blocks an earlier mount left (each then ready, or forgotten)."""

    async def read_ahead(self, key: FileKey, indexes: list[int]) -> None:
        """A hint: blocks about to be read and checked."""

    def room_for(self, key: FileKey, first: int, stop: int) -> int: ...
    def reserve(self, length: int) -> bool:
        """Room for `length` bytes about to land; False: none (fetch into memory)."""

    def unreserve(self, length: int) -> None: ...
    def disk_full(self) -> None:
        """A write found no room: make some."""

    def added(self, key: FileKey, index: int, length: int, crc: int) -> None:
        """A block a fetcher (or `write_whole`) has stored."""

    def write_whole(self, key: FileKey, data: bytes) -> list[Landed]:
        """Stores a whole small file (blocking: called in a thread)."""


@dataclass(slots=True, frozen=True)
class FetchJob:
    """Blocks [start, end) of a stored file of `total` bytes, downloaded from `target`
    into the data cache's `directory` (a `FileKey.relative_dir`). `version`: the
    version of the file the blocks must be of if known, else set by the fetcher from
    the first answer before it tells of a block (a fetcher that cannot tell leaves it
    unknown). An empty range (start == end) asks only for the version."""

    target: str
    filename: str
    start: int
    end: int
    total: int
    block_size: int
    directory: str
    version: Version = field(default_factory=Version)
    # False: a file whose version the store does not track (metadata.json, put whole by
    # the mount): its blocks carry the digest of no version, as the store reads them.
    versioned: bool = True


class Fetcher(Protocol):
    """Downloads a range of a stored file into the data cache, block by block."""

    async def fetch(
        self,
        job: FetchJob,
        *,
        nursery: trio.Nursery,
        on_blocks: Callable[[list[Landed]], None] | None = None,
    ) -> None:
        """Stores the job's blocks, telling `on_blocks` of each as it lands; raises the
        API's error (AuthError: the link was refused; VersionChanged: the file is not of
        the job's version) or CacheFull. `nursery`: where a fetcher may start what
        outlives one job (the worker process)."""


class DirectDownload(Protocol):
    """Downloads a range into memory: reads served while the disk has no room."""

    async def download_into(
        self,
        path: DownloadPath,
        start: int,
        buf: memoryview,
        *,
        total: int | None = None,
        version: Version | None = None,
    ) -> None: ...
