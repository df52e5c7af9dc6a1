"""The tree's kinds of node, each answering for itself: its attributes, the names it
holds (lookup), its entries (opendir), its extended attributes, and open for a file.

    /                            Root
    .amigofs-stats               Control (found by name only, never listed)
    <workspace>/                 Workspace
    <workspace>/<call>/          CallDir
    <workspace>/<call>/<file>    CallFile
    by-date/                     DateRoot
    by-date/<workspace>/         DateWorkspace
    by-date/<workspace>/<day>/   Day
    by-date/.../<day>/<entry>    DayEntry (a link to the call directory)
    by-name/                     NameRoot
    by-name/<slug>               NameLink (a link to the workspace directory)

A node is a value (which node it is) and the tree it belongs to: the services it asks
(Tree). Nodes hold no state of their own; the inode table numbers them.

Folder times never come from the mount's start, which would move at every remount
(find -newermt, restic and borg would see the tree change each time): a call's is its
start, a day's its first instant, a workspace's its newest call's start, and the root's
and the views' the newest of their workspaces' (amigofs.fs.workspaces).
"""

from __future__ import annotations

import datetime as dt
import errno
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from amigofs.api import errors as api
from amigofs.api.models import is_identifier, time_ns
from amigofs.cache.index import CallIndex, CallRow
from amigofs.concurrency import gather
from amigofs.fs.attributes import IMMUTABLE_TIMEOUT, Attributes, DirEntry, InodeT
from amigofs.fs.calls import Calls
from amigofs.fs.date_range import INDEXED_NS, DateRanges
from amigofs.fs.errors import FsError
from amigofs.fs.handles import DirListing, OpenFile, Snapshot
from amigofs.fs.inodes import ROOT_INODE, InodeTable
from amigofs.fs.records import AUDIO_NAMES, FILE_NAMES, METADATA, CallRecord, PresentedFile
from amigofs.fs.views import (
    BY_DATE,
    BY_NAME,
    VIEWS,
    Days,
    call_link,
    parse_entry,
    workspace_link,
)
from amigofs.fs.walk import WholeRead
from amigofs.fs.workspaces import UNKNOWN_TIME_NS, Workspaces
from amigofs.fs.xattrs import (
    ARCHIVED_NAMES,
    CALL_NAMES,
    archived_xattrs,
    call_xattrs,
    file_xattrs,
    full_names,
    value,
)
from amigofs.policy.failures import FailureMemory
from amigofs.policy.inodes import DIR_SLOT, LINK_SLOT, CallSlot, file_slot
from amigofs.policy.readahead import Readahead

# The mount's own numbers (`amigofs stats`), in its root: found by name only,
# never listed, readable by its owner only, generated when opened.
CONTROL_NAME = ".amigofs-stats"
# Calls read from the index per readdir request (the kernel takes what fits).
READDIR_BATCH = 256
# The extended attributes' full names, made once: `ls -l` may list them per entry.
_CALL_XATTRS = full_names(CALL_NAMES)
_ARCHIVED_XATTRS = full_names(ARCHIVED_NAMES)


@dataclass(slots=True, frozen=True, kw_only=True)
class NamespaceConfig:
    """What the tree is told by the mount. The values of settings have their defaults
    in one place, amigofs.config.Settings: each is given here."""

    workspaces: Sequence[str] | None  # None: every workspace the key can list
    listing_ttl: float
    negative_ttl: float
    max_readahead: int
    failure_memory: float
    views: bool  # by-date/ and by-name/ in the root
    timezone: str | None  # of by-date's days and times; None: UTC
    max_records: int  # call records kept in memory
    records_in_flight: int  # call records loaded ahead of a walk, at once and past it
    # Makes the content of the control file; None: the mount has none.
    control: Callable[[], bytes] | None = None
    # The server and key, hashed (ApiKey.identity): the root listing kept on disk is
    # shown only to a mount with the same.
    identity: str = ""
    # Bytes of the disk cache a walk may fetch ahead into now; None: no walk prefetch.
    walk_room: Callable[[], int] | None = None


@dataclass(slots=True)
class Tree:
    """What every node asks: the mount's settings, its calls and workspaces, and the
    inode table that numbers the nodes."""

    config: NamespaceConfig
    index: CallIndex
    calls: Calls
    workspaces: Workspaces
    days: Days
    date_ranges: DateRanges
    inodes: InodeTable[Node] = field(init=False)

    def node_of(self, row: CallRow, slot: CallSlot) -> Node | None:
        """The node of one slot of a call (see amigofs.policy.inodes)."""
        if slot.slot == DIR_SLOT:
            return CallDir(self, row.workspace_id, row.call_sid)
        if slot.slot == LINK_SLOT:
            return DayEntry(self, row.workspace_id, row.call_sid)
        position = slot.file_position
        if position is None or position >= len(FILE_NAMES):
            return None
        return CallFile(self, row.workspace_id, row.call_sid, FILE_NAMES[position])

    def day_node(self, workspace_id: str, day: dt.date) -> Node:
        return Day(self, workspace_id, day.isoformat())

    def folder_attrs(self, inode: InodeT) -> Attributes:
        """Of the root and the views' folders: the tree's time (Workspaces.tree_mtime)."""
        mtime = self.workspaces.tree_mtime()
        return Attributes(inode, True, 0, mtime, 1, self.config.listing_ttl)

    def workspace_attrs(self, node: Node, workspace_id: str, link: str | None = None) -> Attributes:
        """Of a workspace's folders (and its by-name link): its time (Workspaces.mtime)."""
        mtime = self.workspaces.mtime(workspace_id)
        size = 0 if link is None else len(link)
        return Attributes(
            self.inodes.number(node), link is None, size, mtime, 1, self.config.listing_ttl,
            link=link,
        )  # fmt: skip

    def row_attrs(self, row: CallRow) -> Attributes:
        """A call directory's attributes from its row; one listed without a start time
        is asked again (its metadata has one), not cached: until then it shows the
        fixed UNKNOWN_TIME_NS, from which its start is a move forward (tar)."""
        inode = self.inodes.call(row, DIR_SLOT)
        if row.started_ns is None:
            return Attributes(inode, True, 0, UNKNOWN_TIME_NS, 2, 0.0)
        return Attributes(inode, True, 0, row.started_ns, 2, IMMUTABLE_TIMEOUT)

    async def call_attrs(
        self, workspace_id: str, call_sid: str, *, indexed_only: bool = False
    ) -> Attributes:
        if not is_identifier(call_sid):
            raise FsError(errno.ENOENT)
        if indexed_only:
            # Whatever the name, one listing of the workspace at most: never a
            # request of its own.
            row = await self.calls.wait_listed(workspace_id, call_sid)
            if row is None:
                raise FsError(errno.ENOENT)
        else:
            row = await self.calls.row(workspace_id, call_sid, visit=True)
        attrs = self.row_attrs(row)
        if row.started_ns is None:
            # Listed without a start time: its metadata has one.
            start = (await self.calls.record(workspace_id, call_sid)).start
            return Attributes(attrs.inode, True, 0, time_ns(start), 2, IMMUTABLE_TIMEOUT)
        return attrs

    def file_attrs(self, record: CallRecord, file: PresentedFile) -> Attributes:
        row = self.index.by_sid(record.workspace_id, record.call_sid)
        if row is None:  # every call shown has a row (see Calls.row)
            raise FsError(errno.EIO, f"{record.workspace_id}/{record.call_sid}: not indexed")
        inode = self.inodes.call(row, file_slot(FILE_NAMES.index(file.name)))
        # A kept record's size of a file is asked for again each time until a read finds
        # it right: when the server contradicts one, the kernel gets the new size. Only
        # that file's (call.wav's follows both channels'): a file read and confirmed
        # after a remount would otherwise cost a getattr before each read while its
        # neighbour stays unread (19% of a re-read's mount time).
        unconfirmed = bool(record.unconfirmed) if file.stereo else file.name in record.unconfirmed
        timeout = 0.0 if unconfirmed else IMMUTABLE_TIMEOUT
        return Attributes(inode, False, file.size, time_ns(record.start), 1, timeout)

    def audio_inodes(self, workspace_id: str, call_sid: str) -> set[InodeT]:
        """The inodes of a call's audio files (numbered from its row: none kept per file
        read), whose pages the kernel may hold; none if the call has no row."""
        row = self.index.by_sid(workspace_id, call_sid)
        if row is None:
            return set()
        return {self.inodes.call(row, file_slot(FILE_NAMES.index(name))) for name in AUDIO_NAMES}

    def date_link_attrs(self, row: CallRow) -> Attributes:
        target = call_link(row.workspace_id, row.call_sid)
        inode = self.inodes.call(row, LINK_SLOT)
        start = row.started_ns or 0
        return Attributes(inode, False, len(target), start, 1, IMMUTABLE_TIMEOUT, link=target)


@dataclass(slots=True, frozen=True)
class Node:
    tree: Tree = field(compare=False, repr=False)

    # Whether the kernel must not cache the file's pages nor trust its size.
    direct_io: ClassVar[bool] = False

    @property
    def parent(self) -> Node:
        """Of a directory: the one that holds it (what its `..` names), numbered as met."""
        return Root(self.tree)

    @property
    def path(self) -> str:
        """Its path below the mount, for log lines ("ws/call/inbound.wav")."""
        raise NotImplementedError

    async def attrs(self) -> Attributes:
        raise NotImplementedError

    async def lookup(self, name: str, *, owner: bool) -> Attributes:
        """`owner`: asked by the mount's owner (see Namespace.lookup)."""
        raise FsError(errno.ENOTDIR)

    async def opendir(self) -> DirListing:
        raise FsError(errno.ENOTDIR)

    async def open(self, inode: InodeT) -> OpenFile:
        raise FsError(errno.EISDIR)

    def xattr_names(self) -> tuple[str, ...]:
        """The full names of its user.amigo.* attributes, known without loading
        anything: of call directories and audio files, none elsewhere."""
        return ()

    async def xattr(self, name: str) -> bytes | None:
        """One attribute's value by its full name (None: it has none of that name);
        loads what the value is read from."""
        return None


@dataclass(slots=True, frozen=True)
class InWorkspace(Node):
    """A node below a workspace: refused (EACCES) while the API refuses the workspace."""

    workspace_id: str

    async def allowed(self) -> Calls:
        """The calls, once the workspace is allowed (see Calls.allowed)."""
        await self.tree.calls.allowed(self.workspace_id)
        return self.tree.calls


@dataclass(slots=True, frozen=True)
class OfCall(InWorkspace):
    """A node of one call: its directory, its files, its entry in by-date."""

    call_sid: str


# --- the root, the control file, workspaces and calls ---------------------------------


@dataclass(slots=True, frozen=True)
class Root(Node):
    @property
    def path(self) -> str:
        return "/"

    async def attrs(self) -> Attributes:
        return self.tree.folder_attrs(ROOT_INODE)

    async def lookup(self, name: str, *, owner: bool) -> Attributes:
        tree = self.tree
        if name == CONTROL_NAME and tree.config.control is not None:
            return await Control(tree).attrs()
        if name in VIEWS and tree.config.views:
            return await _view_root(tree, name).attrs()
        if name not in await tree.workspaces.ids():
            raise FsError(errno.ENOENT)
        return await Workspace(tree, name).attrs()

    async def opendir(self) -> DirListing:
        tree = self.tree
        ids = await tree.workspaces.ids()
        attrs = await gather(*(lambda ws=ws: Workspace(tree, ws).attrs() for ws in ids))
        entries = [DirEntry(ws, a) for ws, a in zip(ids, attrs, strict=True)]
        if tree.config.views:
            entries += [DirEntry(view, await _view_root(tree, view).attrs()) for view in VIEWS]
        return Snapshot(entries)


@dataclass(slots=True, frozen=True)
class Control(Node):
    direct_io: ClassVar[bool] = True  # made anew at each open, of a size not known before

    @property
    def path(self) -> str:
        return CONTROL_NAME

    async def attrs(self) -> Attributes:
        inode = self.tree.inodes.number(self)
        return Attributes(inode, False, 0, time.time_ns(), 1, 1.0, private=True)

    async def open(self, inode: InodeT) -> OpenFile:
        make = self.tree.config.control
        if make is None:
            raise FsError(errno.EISDIR)
        content = make()
        control = PresentedFile(CONTROL_NAME, len(content), content=content)
        memory = FailureMemory(self.tree.config.failure_memory)
        return OpenFile(inode, control, Readahead(max_window=0), memory)


@dataclass(slots=True, frozen=True)
class Workspace(InWorkspace):
    @property
    def path(self) -> str:
        return self.workspace_id

    async def attrs(self) -> Attributes:
        # A workspace the key may not see is not one that is gone: shown, in its
        # parent's listing too, and refused when entered (which asks the API again).
        return self.tree.workspace_attrs(self, self.workspace_id)

    async def lookup(self, name: str, *, owner: bool) -> Attributes:
        await self.allowed()
        return await self.tree.call_attrs(self.workspace_id, name, indexed_only=not owner)

    async def opendir(self) -> DirListing:
        (await self.allowed()).sync(self.workspace_id).ensure(retry=True)
        return WorkspaceCalls(self.tree, self.workspace_id)


@dataclass(slots=True, frozen=True)
class WorkspaceCalls:
    """A workspace's calls as the kernel reads them, from the index, by row: offsets
    stay right while the sync fills the index."""

    tree: Tree
    workspace_id: str

    async def read(self, start: int) -> list[tuple[int, DirEntry]]:
        rows = await self.tree.calls.listed_after(self.workspace_id, start, READDIR_BATCH)
        return [(row.row_id, DirEntry(row.call_sid, self.tree.row_attrs(row))) for row in rows]


@dataclass(slots=True, frozen=True)
class CallDir(OfCall):
    @property
    def path(self) -> str:
        return f"{self.workspace_id}/{self.call_sid}"

    @property
    def parent(self) -> Node:
        return Workspace(self.tree, self.workspace_id)

    async def attrs(self) -> Attributes:
        await self.allowed()
        return await self.tree.call_attrs(self.workspace_id, self.call_sid)

    async def lookup(self, name: str, *, owner: bool) -> Attributes:
        calls = await self.allowed()
        record = await calls.record(self.workspace_id, self.call_sid, whole=name == METADATA)
        file = record.files.get(name)
        if file is None:
            raise FsError(errno.ENOENT)
        return self.tree.file_attrs(record, file)

    async def opendir(self) -> DirListing:
        calls = await self.allowed()
        record = await calls.record(self.workspace_id, self.call_sid, whole=True)
        return Snapshot(
            [
                DirEntry(name, self.tree.file_attrs(record, record.files[name]))
                for name in FILE_NAMES
                if name in record.files
            ]
        )

    def xattr_names(self) -> tuple[str, ...]:
        archived = self.tree.calls.known_archived(self.workspace_id, self.call_sid)
        return _ARCHIVED_XATTRS if archived else _CALL_XATTRS

    async def xattr(self, name: str) -> bytes | None:
        if name not in _ARCHIVED_XATTRS:
            return None
        calls = await self.allowed()
        found = await calls.record_or_archived(self.workspace_id, self.call_sid)
        if isinstance(found, api.Archived):
            summary = calls.summary(self.workspace_id, self.call_sid)
            return value(archived_xattrs(summary, found), name)
        return value(call_xattrs(found), name)


@dataclass(slots=True, frozen=True)
class CallFile(OfCall):
    name: str

    @property
    def path(self) -> str:
        return f"{self.workspace_id}/{self.call_sid}/{self.name}"

    async def _record(self) -> CallRecord:
        calls = await self.allowed()
        return await calls.record(self.workspace_id, self.call_sid, whole=self.name == METADATA)

    async def attrs(self) -> Attributes:
        record = await self._record()
        return self.tree.file_attrs(record, record.files[self.name])

    async def open(self, inode: InodeT) -> OpenFile:
        record = await self._record()
        config = self.tree.config
        file = record.files[self.name]
        whole = WholeRead(file.size) if config.walk_room is not None else None
        readahead = Readahead(max_window=config.max_readahead)
        memory = FailureMemory(config.failure_memory)
        return OpenFile(inode, file, readahead, memory, record=record, whole=whole)

    def xattr_names(self) -> tuple[str, ...]:
        return () if self.name == METADATA else _CALL_XATTRS

    async def xattr(self, name: str) -> bytes | None:
        if name not in self.xattr_names():
            return None
        calls = await self.allowed()
        record = await calls.record(self.workspace_id, self.call_sid)
        return value(file_xattrs(record, self.name), name)


# --- by-date ----------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class DateRoot(Node):
    @property
    def path(self) -> str:
        return BY_DATE

    async def attrs(self) -> Attributes:
        return self.tree.folder_attrs(self.tree.inodes.number(self))

    async def lookup(self, name: str, *, owner: bool) -> Attributes:
        if name not in await self.tree.workspaces.ids():
            raise FsError(errno.ENOENT)
        return DateWorkspace(self.tree, name).workspace_attrs()

    async def opendir(self) -> DirListing:
        tree = self.tree
        return Snapshot(
            [
                DirEntry(ws, DateWorkspace(tree, ws).workspace_attrs())
                for ws in await tree.workspaces.ids()
            ]
        )


@dataclass(slots=True, frozen=True)
class DateWorkspace(InWorkspace):
    @property
    def path(self) -> str:
        return f"{BY_DATE}/{self.workspace_id}"

    @property
    def parent(self) -> Node:
        return DateRoot(self.tree)

    def workspace_attrs(self) -> Attributes:
        """As its workspace's folder: it changes when its workspace does."""
        return self.tree.workspace_attrs(self, self.workspace_id)

    async def attrs(self) -> Attributes:
        await self.allowed()
        return self.workspace_attrs()

    async def lookup(self, name: str, *, owner: bool) -> Attributes:
        # A day: for the owner any, entered by name before the index has it; for
        # others only one of those listed (see Namespace.lookup).
        await self.allowed()
        day = Day(self.tree, self.workspace_id, name)
        if not owner:
            await day.shown()
        return await day.attrs_of_name()

    async def opendir(self) -> DirListing:
        """Every day from the oldest call's to the newest call's (amigofs.fs.date_range:
        a few list requests, never the whole listing); days without calls are empty."""
        tree, workspace_id = self.tree, self.workspace_id
        await self.allowed()
        span = await tree.date_ranges.span(workspace_id)
        days = [] if span is None else [day.isoformat() for day in span.days(tree.days)]
        return Snapshot(
            [DirEntry(name, await Day(tree, workspace_id, name).attrs_of_name()) for name in days]
        )


@dataclass(slots=True, frozen=True)
class Day(InWorkspace):
    day: str

    @property
    def path(self) -> str:
        return f"{BY_DATE}/{self.workspace_id}/{self.day}"

    @property
    def parent(self) -> Node:
        return DateWorkspace(self.tree, self.workspace_id)

    def _date(self) -> dt.date:
        """The day it names; ENOENT for a name that is no day."""
        day = self.tree.days.parse(self.day)
        if day is None:
            raise FsError(errno.ENOENT)
        return day

    async def attrs_of_name(self) -> Attributes:
        """Its attributes as its parent gives them: numbered from its workspace and
        date (nothing kept per day looked up), its time its first instant."""
        tree, day = self.tree, self._date()
        inode = tree.inodes.day(self.workspace_id, day)
        return Attributes(inode, True, 0, tree.days.bounds_ns(day)[0], 1, tree.config.listing_ttl)

    async def attrs(self) -> Attributes:
        await self.allowed()
        return await self.attrs_of_name()

    def _indexed_bounds(self) -> tuple[int, int] | None:
        """The day's instants [start, end); None if the index can hold no call of it."""
        start, end = self.tree.days.bounds_ns(self._date())
        return (start, end) if start in INDEXED_NS and end - 1 in INDEXED_NS else None

    async def shown(self) -> None:
        """Returns if its parent lists the day: within the workspace's span of calls
        (never a request beyond the span's); ENOENT if not."""
        tree, day = self.tree, self._date()
        if self._indexed_bounds() is None:
            raise FsError(errno.ENOENT)
        span = await tree.date_ranges.span(self.workspace_id)
        if span is None or not span.holds(day, tree.days):
            raise FsError(errno.ENOENT)

    async def lookup(self, name: str, *, owner: bool) -> Attributes:
        await self.allowed()
        if parse_entry(name) is None:
            raise FsError(errno.ENOENT)
        # Others see what the index has: their names cost no listing of the day.
        found = (await self._entries(fetch=owner)).get(name)
        if found is None:
            raise FsError(errno.ENOENT)
        return found.attrs

    async def opendir(self) -> DirListing:
        await self.allowed()
        listing = await self._entries(fetch=True)
        return Snapshot([listing[name] for name in sorted(listing)])

    async def _entries(self, *, fetch: bool) -> dict[str, DirEntry]:
        """The day's entries; `fetch`: listed from the API if the index may lack some."""
        tree, bounds = self.tree, self._indexed_bounds()
        if bounds is None:
            rows = []
        elif fetch:
            rows = await tree.calls.day_rows(self.workspace_id, self._date())
        else:
            rows = tree.index.started_between(self.workspace_id, *bounds)
        entries = {}
        for row in rows:
            assert row.started_ns is not None
            name = tree.days.entry_name(row.started_ns, row.call_sid)
            entries[name] = DirEntry(name, tree.date_link_attrs(row))
        return entries


@dataclass(slots=True, frozen=True)
class DayEntry(OfCall):
    """A call's entry in its day of by-date: a link to its directory."""

    @property
    def path(self) -> str:
        return f"{BY_DATE}/{self.workspace_id}/{self.call_sid}"

    async def attrs(self) -> Attributes:
        await self.allowed()
        row = self.tree.index.by_sid(self.workspace_id, self.call_sid)
        if row is None:
            raise FsError(errno.ENOENT)
        return self.tree.date_link_attrs(row)


# --- by-name ----------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class NameRoot(Node):
    @property
    def path(self) -> str:
        return BY_NAME

    async def attrs(self) -> Attributes:
        return self.tree.folder_attrs(self.tree.inodes.number(self))

    async def lookup(self, name: str, *, owner: bool) -> Attributes:
        for entry in await self._entries():
            if entry.name == name:
                return entry.attrs
        raise FsError(errno.ENOENT)

    async def opendir(self) -> DirListing:
        return Snapshot(await self._entries())

    async def _entries(self) -> list[DirEntry]:
        tree = self.tree
        shown = set(await tree.workspaces.ids())
        return [
            DirEntry(slug, NameLink(tree, ws).link_attrs())
            for slug, ws in sorted((await tree.workspaces.slugs()).items())
            if ws in shown
        ]


@dataclass(slots=True, frozen=True)
class NameLink(InWorkspace):
    """A workspace's entry in by-name: a link to its directory (not refused with it)."""

    @property
    def path(self) -> str:
        return f"{BY_NAME}/{self.workspace_id}"

    def link_attrs(self) -> Attributes:
        # Its workspace's time, as the folder it leads to.
        return self.tree.workspace_attrs(self, self.workspace_id, workspace_link(self.workspace_id))

    async def attrs(self) -> Attributes:
        return self.link_attrs()


def _view_root(tree: Tree, name: str) -> Node:
    return DateRoot(tree) if name == BY_DATE else NameRoot(tree)
