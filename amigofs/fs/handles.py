"""The handle table: every open directory and open file of the mount, by handle.

The one owner of handle state: what each handle was opened on (for log lines), a
directory's listing being read, a file's reader (its readahead, whole-read tracking
and last failure), and how many handles each file has open (its last close lets
the store forget the blocks it kept in memory).
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import NewType, Protocol

from amigofs.fs.attributes import Attributes, DirEntry, InodeT
from amigofs.fs.records import CallRecord, PresentedFile
from amigofs.fs.walk import WholeRead
from amigofs.policy.failures import FailureMemory
from amigofs.policy.readahead import Readahead

FileHandleT = NewType("FileHandleT", int)


class DirListing(Protocol):
    """A directory's entries as the kernel reads them: those after offset `start`,
    each with its own offset."""

    def read(self, start: int) -> Awaitable[list[tuple[int, DirEntry]]]: ...


@dataclass(slots=True, frozen=True)
class Snapshot:
    """Entries taken at opendir, numbered from 1: stable offsets (a small directory)."""

    entries: list[DirEntry]

    async def read(self, start: int) -> list[tuple[int, DirEntry]]:
        return list(enumerate(self.entries, 1))[start:]


# `.` and `..` take offsets 1 and 2: a listing's own offsets (each > 0) move up by as many.
DOTS = (".", "..")


@dataclass(slots=True, frozen=True)
class OpenDir:
    inode: InodeT
    listing: DirListing
    parent: InodeT  # what `..` names

    async def read_with_dots(self, start: int) -> list[tuple[int, DirEntry]]:
        """The entries after offset `start` with `.` and `..` first: as stable as the
        listing's own offsets, which stay the listing's (moved up by len(DOTS))."""
        # The kernel takes only the inode and the type of these two (it makes no entry
        # for them, nor counts a lookup): the rest of their attributes is not shown.
        dots = [
            DirEntry(name, Attributes(inode, True, 0, 0, 2, 0.0))
            for name, inode in zip(DOTS, (self.inode, self.parent), strict=True)
        ]
        head = [(offset, entry) for offset, entry in enumerate(dots, 1) if offset > start]
        rest = await self.listing.read(max(start - len(DOTS), 0))
        return head + [(offset + len(DOTS), entry) for offset, entry in rest]


@dataclass(slots=True)
class OpenFile:
    """Per-open state: the file, how its reader has been reading, its last failure."""

    inode: InodeT
    file: PresentedFile
    readahead: Readahead
    # When a read fails for want of the server, the kernel at once asks again, through
    # the same handle, for the page it could not get: answered with the same error.
    failed: FailureMemory
    record: CallRecord | None = None  # None: the control file
    whole: WholeRead | None = None  # whether it has been read whole (walk prefetch)
    # The versions of its stored files it has been served (RecordingSource.read_checked).
    versions: tuple[int, ...] | None = None


@dataclass(slots=True)
class HandleTable:
    _dirs: dict[FileHandleT, OpenDir] = field(default_factory=dict)
    _files: dict[FileHandleT, OpenFile] = field(default_factory=dict)
    _open_counts: collections.Counter[InodeT] = field(default_factory=collections.Counter)
    _last: int = 0

    def open_dir(self, opened: OpenDir) -> FileHandleT:
        handle = self._new()
        self._dirs[handle] = opened
        return handle

    def open_file(self, opened: OpenFile) -> FileHandleT:
        handle = self._new()
        self._files[handle] = opened
        self._open_counts[opened.inode] += 1
        return handle

    def dir(self, handle: FileHandleT) -> OpenDir:
        return self._dirs[handle]

    def file(self, handle: FileHandleT) -> OpenFile:
        return self._files[handle]

    def files(self) -> Iterator[OpenFile]:
        return iter(self._files.values())

    def inode(self, handle: FileHandleT) -> InodeT | None:
        """What the handle was opened on; None if it is not open."""
        opened = self._dirs.get(handle) or self._files.get(handle)
        return None if opened is None else opened.inode

    def release_dir(self, handle: FileHandleT) -> None:
        self._dirs.pop(handle, None)

    def release_file(self, handle: FileHandleT) -> PresentedFile | None:
        """Closes a file handle; returns the file when that was its last handle."""
        opened = self._files.pop(handle, None)
        if opened is None:
            return None
        self._open_counts[opened.inode] -= 1
        if self._open_counts[opened.inode] > 0:
            return None
        del self._open_counts[opened.inode]
        return opened.file

    def _new(self) -> FileHandleT:
        self._last += 1
        return FileHandleT(self._last)
