"""The tree: MOUNT/<workspace_id>/<call_sid>/{inbound.wav, outbound.wav, metadata.json}.

Owns inode numbers, listings, call records, directory handles and open files.
Knows nothing of pyfuse3: the adapter turns its answers into FUSE replies.

A workspace's calls live in the call index on disk (amigofs.cache.index), filled
by a sync the mount owns (amigofs.fs.listing): a workspace directory lists from
the index as the sync fills it, never waiting for the whole listing, and a call
looked up by its SID costs that call's own requests only. A call's inode numbers
come from its row in the index (stable across remounts); nothing grows in memory
with the number of calls.

A workspace the API refuses (403) is refused here too, with EACCES, from the
workspace directory's contents down, cached or not: never as an empty listing,
which a `rsync --delete` would copy over a backup. Its cached data stays, for
when a later request for it is answered again.

Tasks started in the background (listing refreshes, loading ahead) log what
goes wrong, a bug with its traceback, and end: none may end the mount.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import errno
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NewType, TypeVar

import cachetools
import trio

from amigofs.api import errors as api
from amigofs.api.client import CallPage, PlatformClient
from amigofs.api.models import CallSummary, is_identifier, time_ns
from amigofs.cache.index import CallIndex, CallRow
from amigofs.cache.meta import MetaStore
from amigofs.cache.singleflight import SingleFlight
from amigofs.concurrency import gather
from amigofs.fs.errors import FsError
from amigofs.fs.listing import WorkspaceSync, list_filtered
from amigofs.fs.records import (
    CALL,
    FILE_NAMES,
    INBOUND,
    METADATA,
    OUTBOUND,
    CallRecord,
    PresentedFile,
    RecordingSource,
)
from amigofs.fs.views import (
    BY_DATE,
    BY_NAME,
    VIEWS,
    Days,
    call_link,
    parse_entry,
    usable_slug,
    workspace_link,
)
from amigofs.fs.walk import WalkPrefetch, WholeRead
from amigofs.policy.readahead import Readahead

log = logging.getLogger(__name__)

InodeT = NewType("InodeT", int)
FileHandleT = NewType("FileHandleT", int)
ROOT_INODE = InodeT(1)

# Recordings never change once stored: the kernel may keep their entries and
# attributes for a long time.
IMMUTABLE_TIMEOUT = 24 * 3600.0
# Call records loaded ahead of a walk through a workspace in listing order.
WALK_AHEAD = 16
# Inodes of calls and their files: from the call's row in the index, SLOTS apiece
# (the directory, then its files in the order of FILE_NAMES, which only grows).
CALL_INODES = 1 << 32
SLOTS = 8
LINK_SLOT = SLOTS - 1  # the call's entry in by-date
# Calls read from the index per readdir request (the kernel takes what fits).
READDIR_BATCH = 256

# The mount's own numbers (`amigofs stats`), in its root: found by name only,
# never listed, readable by its owner only, generated when opened.
CONTROL_NAME = ".amigofs-stats"
XATTR_PREFIX = "user.amigo."

T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class NodeKey:
    workspace_id: str | None = None
    call_sid: str | None = None
    file: str | None = None
    view: str | None = None  # by-date, by-name (see amigofs.fs.views)
    day: str | None = None  # a day directory of by-date


@dataclass(slots=True, frozen=True)
class Attributes:
    inode: InodeT
    is_dir: bool
    size: int
    mtime_ns: int
    nlink: int
    timeout: float
    private: bool = False  # readable by the owner only (the control file)
    link: str | None = None  # a symbolic link to this (relative) target


@dataclass(slots=True, frozen=True)
class DirEntry:
    name: str
    attrs: Attributes


@dataclass(slots=True)
class OpenFile:
    """Per-open state: the file, how its reader has been reading, its last failure."""

    inode: InodeT
    file: PresentedFile
    readahead: Readahead
    failed: tuple[float, Exception] | None = None
    record: CallRecord | None = None  # None: the control file
    whole: WholeRead | None = None  # whether it has been read whole (walk prefetch)


@dataclass(slots=True, frozen=True)
class NamespaceConfig:
    workspaces: Sequence[str] | None = None  # None: every workspace the key can list
    listing_ttl: float = 60.0
    negative_ttl: float = 5.0
    max_records: int = 10_000
    max_readahead: int = 32 << 20
    failure_memory: float = 2.0
    # Makes the content of the control file; None: the mount has none.
    control: Callable[[], bytes] | None = None
    views: bool = True  # by-date/ and by-name/ in the root
    timezone: str | None = None  # of by-date's days and times; None: UTC
    # The server and key, hashed (ApiKey.identity): the root listing kept on disk is
    # shown only to a mount with the same.
    identity: str = ""
    # Bytes of the disk cache a walk may fetch ahead into now; None: no walk prefetch.
    walk_room: Callable[[], int] | None = None


class _Listing(Generic[T]):
    """A listing kept for `ttl` seconds, then served stale while one refresh runs.

    With a copy on disk from an earlier mount, the first look is answered from
    it at once (and refreshed in the background), so a remount does not wait on
    the API to show the tree.
    """

    def __init__(
        self,
        load: Callable[[], Awaitable[T]],
        ttl: float,
        what: str,
        *,
        restore: Callable[[], T | None] | None = None,
        persist: Callable[[T], None] | None = None,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._what = what
        self._restore = restore
        self._persist = persist
        self._value: T | None = None
        self._loaded_at = 0.0
        # The last refresh that failed: the next waits another `ttl`, so a refused
        # or failing listing costs one request per `ttl`, not one per access.
        self._failed_at = -ttl - 1.0
        self._flight: SingleFlight[T] = SingleFlight()

    @property
    def cached(self) -> T | None:
        return self._value

    def invalidate(self) -> None:
        self._loaded_at = self._failed_at = -self._ttl - 1.0

    async def get(self, nursery: trio.Nursery) -> T:
        if self._value is None and self._restore is not None:
            self._value, self._restore = self._restore(), None
            self.invalidate()  # from an earlier mount: good to show, due for a refresh
        if self._value is None:
            return await self.refresh()
        now = trio.current_time()
        if now - max(self._loaded_at, self._failed_at) > self._ttl and None not in self._flight:
            nursery.start_soon(self._refresh_in_background)
        return self._value

    async def refresh(self) -> T:
        """Loads the listing now (joining a load under way)."""
        return await self._flight.run(None, self._reload)

    async def _reload(self) -> T:
        try:
            value = await self._load()
        except Exception:
            self._failed_at = trio.current_time()
            raise
        self._value, self._loaded_at = value, trio.current_time()
        if self._persist is not None:
            # Written in a thread: the loop serves other requests meanwhile (the one
            # that asked for the listing waits for it, a small document now).
            await trio.to_thread.run_sync(self._persist, value)
        return value

    async def _refresh_in_background(self) -> None:
        try:
            await self.refresh()
        except api.AmigoError as exc:
            if isinstance(exc, api.AuthError) and exc.status == 403:
                # Said once, by WorkspaceAccess: not again at every refresh.
                log.debug("%s: refresh refused: %s", self._what, exc)
            else:
                log.warning("%s: refresh failed, keeping the cached listing: %s", self._what, exc)
        except Exception:
            log.exception("%s: refresh failed (a bug), keeping the cached listing", self._what)


class Namespace:
    def __init__(
        self,
        client: PlatformClient,
        source: RecordingSource,
        nursery: trio.Nursery,
        config: NamespaceConfig,
        meta: MetaStore | None = None,
        *,
        index: CallIndex,
    ) -> None:
        self._client = client
        self._source = source
        self._nursery = nursery
        self._config = config
        self._index = index
        self._mount_time_ns = time.time_ns()
        # The root, the control file and the workspaces: a few, numbered as met.
        # Calls and their files are numbered from the index (see CALL_INODES).
        self._inodes: dict[NodeKey, InodeT] = {NodeKey(): ROOT_INODE}
        self._keys: dict[InodeT, NodeKey] = {ROOT_INODE: NodeKey()}
        self._rows: cachetools.LRUCache[int, CallRow] = cachetools.LRUCache(20_000)
        self._meta = meta
        self._access = source.access
        self._workspaces: _Listing[list[str]] = _Listing(
            self._list_workspaces,
            config.listing_ttl,
            "workspace listing",
            restore=self._restore_workspaces,
            persist=self._persist_workspaces,
        )
        self._syncs: dict[str, WorkspaceSync] = {}
        self._days = Days.named(config.timezone)
        # A day's listing of by-date, kept as long as a listing is.
        self._day_listings: cachetools.TTLCache[tuple[str, str], dict[str, DirEntry]] = (
            cachetools.TTLCache(maxsize=64, ttl=config.listing_ttl, timer=trio.current_time)
        )
        self._slugs: _Listing[dict[str, str]] = _Listing(
            self._list_slugs, config.listing_ttl, "workspace names"
        )
        self._records: cachetools.LRUCache[tuple[str, str], CallRecord] = cachetools.LRUCache(
            config.max_records
        )
        self._record_flights: SingleFlight[CallRecord] = SingleFlight()
        # Walk detection: the last call entered in each workspace, the order of the
        # step to it (listing or name), and how many steps in that order in a row.
        self._walk_last: dict[str, tuple[CallRow | None, str | None, int]] = {}
        self._walk_scheduled: set[tuple[str, str]] = set()
        self._workspace_mtimes: dict[str, int] = {}  # as first shown (see _workspace_attrs)
        self.walk: WalkPrefetch | None = None
        if config.walk_room is not None:
            self.walk = WalkPrefetch(
                index,
                lambda ws, sid: self._record(ws, sid, ahead=True),
                self._prefetch_stored,
                nursery,
                room=config.walk_room,
            )
        self._missing: cachetools.TTLCache[tuple[str, str], bool] = cachetools.TTLCache(
            maxsize=10_000, ttl=config.negative_ttl, timer=trio.current_time
        )
        # Calls whose recording is archived, with the restore time the API gave:
        # kept a few seconds, so `getfattr -d` costs one request, not one per name.
        self._archived: cachetools.TTLCache[tuple[str, str], api.Archived] = cachetools.TTLCache(
            maxsize=10_000, ttl=config.negative_ttl, timer=trio.current_time
        )
        # A directory handle: a snapshot (the root, a call), or a workspace's id,
        # whose calls are read from the index as the kernel asks for them.
        self._dir_snapshots: dict[FileHandleT, list[DirEntry] | str] = {}
        self._open_files: dict[FileHandleT, OpenFile] = {}
        self._open_counts: collections.Counter[InodeT] = collections.Counter()
        self._next_handle = 0

    # --- entry points used by the FUSE adapter -----------------------------------

    async def lookup(self, parent: InodeT, name: str, *, owner: bool = True) -> Attributes:
        """`owner`: asked by the mount's owner. Others (with --allow-other) get only the
        calls the listing has: a lookup of an unlisted call costs requests on the
        owner's key and rate limit, and made-up names must not run those up."""
        key = self._key(parent)
        if key.view is not None:
            return await self._view_lookup(key, name)
        if key.file is not None:
            raise FsError(errno.ENOTDIR)
        if key.workspace_id is None:
            if name == CONTROL_NAME and self._config.control is not None:
                return self._control_attrs()
            if name in VIEWS and self._config.views:
                return self._dir_attrs(NodeKey(view=name))
            if name not in await self._workspace_ids():
                raise FsError(errno.ENOENT)
            return await self._workspace_attrs(name)
        await self._allowed(key.workspace_id)
        if key.call_sid is None:
            return await self._call_attrs(key.workspace_id, name, indexed_only=not owner)
        record = await self._record(key.workspace_id, key.call_sid, whole=name == METADATA)
        file = record.files.get(name)
        if file is None:
            raise FsError(errno.ENOENT)
        return self._file_attrs(record, file)

    async def getattr(self, inode: InodeT) -> Attributes:
        key = self._key(inode)
        if key == _CONTROL_KEY:
            return self._control_attrs()
        if key.view is not None:
            return await self._view_getattr(key)
        if key.workspace_id is None:
            return Attributes(ROOT_INODE, True, 0, self._mount_time_ns, 1, self._config.listing_ttl)
        if key.call_sid is None:
            return await self._workspace_attrs(key.workspace_id)
        await self._allowed(key.workspace_id)
        if key.file is None:
            return await self._call_attrs(key.workspace_id, key.call_sid)
        record = await self._record(key.workspace_id, key.call_sid, whole=key.file == METADATA)
        return self._file_attrs(record, record.files[key.file])

    async def opendir(self, inode: InodeT) -> FileHandleT:
        key = self._key(inode)
        if key.view is not None:
            entries = await self._view_entries(key)
        elif key.file is not None:
            raise FsError(errno.ENOTDIR)
        elif key.workspace_id is None:
            ids = await self._workspace_ids()
            attrs = await gather(*(lambda ws=ws: self._workspace_attrs(ws) for ws in ids))
            entries = [DirEntry(ws, a) for ws, a in zip(ids, attrs, strict=True)]
            if self._config.views:
                entries += [DirEntry(view, self._dir_attrs(NodeKey(view=view))) for view in VIEWS]
        elif key.call_sid is None:
            await self._allowed(key.workspace_id)
            self._sync(key.workspace_id).ensure(retry=True)
            handle = self._new_handle()
            self._dir_snapshots[handle] = key.workspace_id
            return handle
        else:
            await self._allowed(key.workspace_id)
            record = await self._record(key.workspace_id, key.call_sid, whole=True)
            entries = [
                DirEntry(name, self._file_attrs(record, record.files[name]))
                for name in FILE_NAMES
                if name in record.files
            ]
        handle = self._new_handle()
        self._dir_snapshots[handle] = entries
        return handle

    async def readdir(self, handle: FileHandleT, start: int) -> list[tuple[int, DirEntry]]:
        """Entries after offset `start`, each with its own offset. A workspace's come
        from the index: while its sync is still filling it, this waits for the next
        calls (under the request's deadline); none at all means the listing is whole.
        A listing that cannot complete fails here: never a short one that looks whole."""
        listing = self._dir_snapshots[handle]
        if not isinstance(listing, str):
            return [(offset, entry) for offset, entry in enumerate(listing, 1)][start:]
        workspace_id = listing
        sync = self._sync(workspace_id)
        while True:
            await self._allowed(workspace_id)
            rows = self._index.after(workspace_id, start, READDIR_BATCH)
            if rows:
                return [(row.row_id, DirEntry(row.call_sid, self._row_attrs(row))) for row in rows]
            sync.ensure()
            if sync.complete:
                return []
            if sync.error is not None:
                raise sync.error
            await sync.changed.wait()

    def releasedir(self, handle: FileHandleT) -> None:
        self._dir_snapshots.pop(handle, None)

    async def open(self, inode: InodeT) -> FileHandleT:
        key = self._key(inode)
        if key == _CONTROL_KEY and self._config.control is not None:
            content = self._config.control()
            handle = self._new_handle()
            control = PresentedFile(CONTROL_NAME, len(content), content=content)
            self._open_files[handle] = OpenFile(inode, control, Readahead(max_window=0))
            self._open_counts[inode] += 1
            return handle
        if key.view is not None or key.file is None or key.workspace_id is None:
            raise FsError(errno.EISDIR)
        if key.call_sid is None:
            raise FsError(errno.EISDIR)
        await self._allowed(key.workspace_id)
        record = await self._record(key.workspace_id, key.call_sid, whole=key.file == METADATA)
        handle = self._new_handle()
        readahead = Readahead(max_window=self._config.max_readahead)
        file = record.files[key.file]
        whole = WholeRead(file.size) if self.walk is not None else None
        self._open_files[handle] = OpenFile(inode, file, readahead, record=record, whole=whole)
        self._open_counts[inode] += 1
        return handle

    async def read(
        self, handle: FileHandleT, offset: int, size: int
    ) -> bytes | bytearray | memoryview:
        opened = self._open_files[handle]
        if opened.record is not None and self._access.revoked(opened.record.workspace_id):
            await self._allowed(opened.record.workspace_id)
        if opened.failed is not None:
            # When a read fails for want of the server, the kernel at once asks
            # again, through the same handle, for the page it could not get; the
            # same answer keeps the program's read(2) within one deadline, not two.
            when, error = opened.failed
            if trio.current_time() - when < self._config.failure_memory:
                raise error
            opened.failed = None
        ahead = opened.readahead.on_read(offset, size, opened.file.size)
        if ahead is not None:
            self._source.prefetch(opened.file, *ahead)
        if opened.whole is not None:
            opened.whole.begin()
        try:
            data = await self._read(opened, offset, size)
        except (api.TransportError, api.ServerError, api.RateLimited) as exc:
            opened.failed = (trio.current_time(), exc)
            raise
        except trio.Cancelled:
            # The request's own deadline ran out.
            opened.failed = (trio.current_time(), api.DeadlineExceeded("no answer in time"))
            raise
        if opened.whole is not None and opened.whole.on_read(offset, offset + len(data)):
            self._read_whole(opened)
        return data

    def _read_whole(self, opened: OpenFile) -> None:
        assert self.walk is not None and opened.record is not None
        workspace_id = opened.record.workspace_id
        others = any(
            other.whole is not None
            and other.whole.in_progress
            and other.record is not None
            and other.record.workspace_id == workspace_id
            for other in self._open_files.values()
        )
        if others:
            self.walk.interleaved(workspace_id)
        else:
            self.walk.read_whole(workspace_id, opened.record.call_sid, opened.file.name)

    async def _read(
        self, opened: OpenFile, offset: int, size: int
    ) -> bytes | bytearray | memoryview:
        record = opened.record
        try:
            data = await self._source.read(opened.file, offset, size)
        except (api.ProtocolError, api.NotFound, api.RequestRejected) as exc:
            # What a wrong record gets from the server (a size it contradicts, a
            # file it does not have): one kept on disk is loaded again, once.
            if (
                record is None
                or not record.from_disk
                or (opened.file.stored is None and opened.file.stereo is None)
            ):
                raise
            fresh = await self._reload(record, exc)
            file = fresh.files.get(opened.file.name)
            if file is None:
                raise FsError(errno.ENOENT, f"{opened.file.name} is no longer offered") from exc
            opened.file, opened.record = file, fresh
            record = fresh
            data = await self._source.read(file, offset, size)
        if record is not None and record.unconfirmed and offset + size > len(opened.file.header):
            record.unconfirmed.discard(opened.file.name)  # its stored bytes were read
        return data

    async def _reload(self, record: CallRecord, error: Exception) -> CallRecord:
        """The record loaded again from the API, the one kept on disk dropped."""
        rkey = (record.workspace_id, record.call_sid)
        if self._records.get(rkey) is record:  # else another reader did this already
            log.warning(
                "%s/%s: the server contradicts the cached record (%s): loading it again",
                *rkey,
                error,
            )
            del self._records[rkey]
            self._source.forget(*rkey)
        # Whole: the file being read again may be metadata.json itself.
        return await self._record(*rkey, ahead=True, fresh=True, whole=True)

    def release(self, handle: FileHandleT) -> None:
        opened = self._open_files.pop(handle, None)
        if opened is None:
            return
        self._open_counts[opened.inode] -= 1
        if self._open_counts[opened.inode] <= 0:
            del self._open_counts[opened.inode]
            self._source.closed(opened.file)

    def direct_io(self, inode: InodeT) -> bool:
        """Whether the kernel must not cache the file's pages nor trust its size:
        the control file's content is made anew at each open."""
        return self._keys.get(inode) == _CONTROL_KEY

    async def xattrs(self, inode: InodeT) -> dict[str, bytes]:
        """user.amigo.* attributes of a call directory or audio file, from the call's
        metadata (loaded once per mount, as listing the directory does); none elsewhere."""
        key = self._key(inode)
        if key.view is not None:
            return {}
        if key.workspace_id is None or key.call_sid is None or key.file == METADATA:
            return {}
        await self._allowed(key.workspace_id)
        if key.file is None:
            archived = self._archived.get((key.workspace_id, key.call_sid))
            if archived is not None:
                return self._archived_xattrs(key.workspace_id, key.call_sid, archived)
            try:
                record = await self._record(key.workspace_id, key.call_sid)
            except api.Archived as exc:
                self._archived[(key.workspace_id, key.call_sid)] = exc
                return self._archived_xattrs(key.workspace_id, key.call_sid, exc)
            return _encode(call_xattrs(record))
        record = await self._record(key.workspace_id, key.call_sid)
        return _encode(file_xattrs(record, key.file))

    async def getxattr(self, inode: InodeT, name: str) -> bytes:
        # Only our names cost a look at the metadata: the kernel asks for ACLs and
        # security labels on every `ls -l`, and those must stay free.
        if not name.startswith(XATTR_PREFIX):
            raise FsError(errno.ENODATA)
        value = (await self.xattrs(inode)).get(name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    def _archived_xattrs(
        self, workspace_id: str, call_sid: str, archived: api.Archived
    ) -> dict[str, bytes]:
        summary = self._summary(workspace_id, call_sid)
        values: dict[str, str] = {}
        if summary is not None:
            if summary.duration_seconds is not None:
                values["duration_seconds"] = _number(summary.duration_seconds)
            if summary.direction is not None:
                values["direction"] = summary.direction
            if summary.started_at is not None:
                values["call_start"] = _time(summary.started_at)
                if summary.duration_seconds is not None:
                    end = summary.started_at + dt.timedelta(seconds=summary.duration_seconds)
                    values["call_end"] = _time(end)
        values["restore_eta"] = (
            _time(archived.restore_eta) if archived.restore_eta is not None else "unknown"
        )
        return _encode(values)

    def _control_attrs(self) -> Attributes:
        inode = self._inode(_CONTROL_KEY)
        return Attributes(inode, False, 0, time.time_ns(), 1, 1.0, private=True)

    def drop_listings(self) -> None:
        """Makes the next access list workspaces and calls again (SIGHUP)."""
        self._workspaces.invalidate()
        for sync in self._syncs.values():
            sync.force()
        self._missing.clear()

    # --- the views -------------------------------------------------------------------

    async def readlink(self, inode: InodeT) -> str:
        attrs = await self.getattr(inode)
        if attrs.link is None:
            raise FsError(errno.EINVAL)
        return attrs.link

    def _dir_attrs(self, key: NodeKey, mtime_ns: int | None = None) -> Attributes:
        mtime = self._mount_time_ns if mtime_ns is None else mtime_ns
        return Attributes(self._inode(key), True, 0, mtime, 1, self._config.listing_ttl)

    def _date_link_attrs(self, row: CallRow) -> Attributes:
        target = call_link(row.workspace_id, row.call_sid)
        inode = InodeT(CALL_INODES + row.row_id * SLOTS + LINK_SLOT)
        start = row.started_ns or 0
        return Attributes(inode, False, len(target), start, 1, IMMUTABLE_TIMEOUT, link=target)

    async def _view_lookup(self, key: NodeKey, name: str) -> Attributes:
        if key.view == BY_NAME:
            if key.workspace_id is not None:
                raise FsError(errno.ENOTDIR)
            for entry in await self._view_entries(key):
                if entry.name == name:
                    return entry.attrs
            raise FsError(errno.ENOENT)
        if key.workspace_id is None:  # by-date/<workspace>
            if name not in await self._workspace_ids():
                raise FsError(errno.ENOENT)
            return self._dir_attrs(NodeKey(name, view=BY_DATE))
        await self._allowed(key.workspace_id)
        if key.call_sid is not None:
            raise FsError(errno.ENOTDIR)
        if key.day is None:  # a day: any, entered by name before the index has it
            day = self._days.parse(name)
            if day is None:
                raise FsError(errno.ENOENT)
            return self._dir_attrs(
                NodeKey(key.workspace_id, view=BY_DATE, day=name), self._days.bounds_ns(day)[0]
            )
        if parse_entry(name) is None:
            raise FsError(errno.ENOENT)
        found = (await self._day_listing(key.workspace_id, key.day)).get(name)
        if found is None:
            raise FsError(errno.ENOENT)
        return found.attrs

    async def _view_getattr(self, key: NodeKey) -> Attributes:
        if key.view == BY_NAME and key.workspace_id is not None:
            return self._name_link_attrs(key.workspace_id)
        if key.workspace_id is None:
            return self._dir_attrs(key)
        await self._allowed(key.workspace_id)
        if key.call_sid is not None:  # an entry of a day
            row = self._index.by_sid(key.workspace_id, key.call_sid)
            if row is None:
                raise FsError(errno.ENOENT)
            return self._date_link_attrs(row)
        if key.day is not None:
            day = self._days.parse(key.day)
            return self._dir_attrs(key, self._days.bounds_ns(day)[0] if day else None)
        return self._dir_attrs(key)

    async def _view_entries(self, key: NodeKey) -> list[DirEntry]:
        if key.view == BY_NAME:
            if key.workspace_id is not None:
                raise FsError(errno.ENOTDIR)
            shown = set(await self._workspace_ids())
            return [
                DirEntry(slug, self._name_link_attrs(ws))
                for slug, ws in sorted((await self._slugs.get(self._nursery)).items())
                if ws in shown
            ]
        if key.call_sid is not None:
            raise FsError(errno.ENOTDIR)
        if key.workspace_id is None:
            return [
                DirEntry(ws, self._dir_attrs(NodeKey(ws, view=BY_DATE)))
                for ws in await self._workspace_ids()
            ]
        await self._allowed(key.workspace_id)
        if key.day is not None:
            listing = await self._day_listing(key.workspace_id, key.day)
            return [listing[name] for name in sorted(listing)]
        return await self._days_of(key.workspace_id)

    def _name_link_attrs(self, workspace_id: str) -> Attributes:
        target = workspace_link(workspace_id)
        inode = self._inode(NodeKey(workspace_id, view=BY_NAME))
        return Attributes(
            inode, False, len(target), self._mount_time_ns, 1, self._config.listing_ttl,
            link=target,
        )  # fmt: skip

    async def _list_slugs(self) -> dict[str, str]:
        """slug -> workspace id, for the workspaces whose slug can be a name, once each."""
        found: dict[str, list[str]] = {}
        for ws in await self._client.list_workspaces():
            if usable_slug(ws.slug):
                found.setdefault(ws.slug, []).append(ws.id)
        return {slug: ids[0] for slug, ids in found.items() if len(ids) == 1}

    async def _days_of(self, workspace_id: str) -> list[DirEntry]:
        """The days with calls, from the index (once the workspace is synced): one
        query a day, jumping from one day's first call to the next day's."""
        await self._wait_complete(workspace_id)
        entries = []
        start = self._index.first_start_from(workspace_id, -(1 << 62))
        while start is not None:
            name = self._days.day_of(start)
            day = self._days.parse(name)
            assert day is not None
            key = NodeKey(workspace_id, view=BY_DATE, day=name)
            entries.append(DirEntry(name, self._dir_attrs(key, self._days.bounds_ns(day)[0])))
            start = self._index.first_start_from(workspace_id, self._days.next_day_ns(start))
        return entries

    async def _wait_complete(self, workspace_id: str) -> None:
        sync = self._sync(workspace_id)
        sync.ensure(retry=True)
        while not sync.complete:
            if sync.error is not None:
                raise sync.error
            await sync.changed.wait()
            sync.ensure()

    async def _day_listing(self, workspace_id: str, name: str) -> dict[str, DirEntry]:
        """A day's calls: from the index if the workspace is synced, else from the
        API's listing of that day (date_from/date_to), not the workspace's whole."""
        cached = self._day_listings.get((workspace_id, name))
        if cached is not None:
            return cached
        day = self._days.parse(name)
        if day is None:
            raise FsError(errno.ENOENT)
        start, end = self._days.bounds_ns(day)
        if not self._index.sync_state(workspace_id).complete:
            first, last = self._days.utc_days(day)
            calls = await self._list_days(workspace_id, first, last)
            await trio.to_thread.run_sync(lambda: self._index.add(workspace_id, calls))
        listing = {}
        for row in self._index.started_between(workspace_id, start, end):
            assert row.started_ns is not None
            entry_name = self._days.entry_name(row.started_ns, row.call_sid)
            listing[entry_name] = DirEntry(entry_name, self._date_link_attrs(row))
            self._rows[row.row_id] = row
        self._day_listings[(workspace_id, name)] = listing
        return listing

    async def _list_days(
        self, workspace_id: str, first: dt.date, last: dt.date
    ) -> list[CallSummary]:
        def page(offset: int) -> Awaitable[CallPage]:
            return self._access.checked(
                workspace_id,
                lambda: self._client.list_calls_page(
                    workspace_id, offset, date_from=first, date_to=last
                ),
            )

        return await list_filtered(page)

    # --- workspaces ---------------------------------------------------------------

    async def _list_workspaces(self) -> list[str]:
        if self._config.workspaces is not None:
            return list(self._config.workspaces)
        return sorted(ws.id for ws in await self._client.list_workspaces())

    def _save(self, document: object, *name: str) -> None:
        if self._meta is not None:
            self._meta.save(document, *name)

    def _persist_workspaces(self, ids: list[str]) -> None:
        # Only a listing of the server's: the --workspace list is not one, and kept, it
        # would stand for every workspace at the next mount without it.
        if self._config.workspaces is None:
            self._save({"identity": self._config.identity, "workspaces": list(ids)}, "root")

    def _restore_workspaces(self) -> list[str] | None:
        if self._config.workspaces is not None or self._meta is None:
            return None
        document = self._meta.load(_parse_root, "root")
        if document is None or document[0] != self._config.identity:
            return None  # listed by another server or key: not shown, not trusted
        return document[1]

    async def _workspace_ids(self) -> list[str]:
        return await self._workspaces.get(self._nursery)

    async def _workspace_attrs(self, workspace_id: str) -> Attributes:
        # A workspace changes when a call is added: its newest call's time says so,
        # and stays the same across remounts.
        # A workspace the key may not see is not one that is gone: shown, in its
        # parent's listing too, and refused when entered (which asks the API again).
        # Looking a workspace up must cost no listing (a stat of one of its calls would
        # wait on it): until the index knows its newest call, the kernel asks again.
        # Never earlier than what this mount has shown of it: tar stats a directory
        # before and after reading it, and a time that moved back from the mount's
        # start to the newest call's once listed made it exit 1 ("file changed as we
        # read it"). It moves on when a call newer than that is listed: a real change.
        newest = self._index.newest_ns(workspace_id)
        inode = self._inode(NodeKey(workspace_id))
        shown = self._workspace_mtimes.setdefault(
            workspace_id, self._mount_time_ns if newest is None else newest
        )
        if newest is None:
            return Attributes(inode, True, 0, shown, 1, 0.0)
        shown = self._workspace_mtimes[workspace_id] = max(shown, newest)
        return Attributes(inode, True, 0, shown, 1, self._config.listing_ttl)

    # --- calls ---------------------------------------------------------------------

    async def _allowed(self, workspace_id: str) -> None:
        """Refuses a workspace the API refuses, asking it again (one listing page) once
        `listing_ttl` has passed since it last did."""
        refused_at = self._access.refused_at(workspace_id)
        if refused_at is None:
            return
        if trio.current_time() - refused_at > self._config.listing_ttl:
            with contextlib.suppress(api.AmigoError):
                await self._access.checked(
                    workspace_id, lambda: self._client.list_calls_page(workspace_id, 0)
                )
            if not self._access.revoked(workspace_id):
                return
        raise FsError(errno.EACCES, f"{workspace_id}: access revoked")

    def _sync(self, workspace_id: str) -> WorkspaceSync:
        sync = self._syncs.get(workspace_id)
        if sync is None:
            sync = self._syncs[workspace_id] = WorkspaceSync(
                workspace_id,
                client=self._client,
                index=self._index,
                nursery=self._nursery,
                checked=self._access.checked,
                listing_ttl=self._config.listing_ttl,
                failure_memory=self._config.failure_memory,
            )
        return sync

    def _summary(self, workspace_id: str, call_sid: str) -> CallSummary | None:
        row = self._index.by_sid(workspace_id, call_sid)
        return None if row is None else row.summary()

    def _row_attrs(self, row: CallRow) -> Attributes:
        """A call directory's attributes from its row; one listed without a start time
        is asked again (its metadata has one), not cached."""
        self._rows[row.row_id] = row
        inode = InodeT(CALL_INODES + row.row_id * SLOTS)
        if row.started_ns is None:
            return Attributes(inode, True, 0, self._mount_time_ns, 2, 0.0)
        return Attributes(inode, True, 0, row.started_ns, 2, IMMUTABLE_TIMEOUT)

    async def _call_row(self, workspace_id: str, call_sid: str, *, visit: bool) -> CallRow:
        """The call's row in the index: one not indexed (not listed yet, or its
        workspace not synced yet) is looked up by its own requests and indexed."""
        row = self._index.by_sid(workspace_id, call_sid)
        if row is not None:
            return row
        try:
            record = await self._record(workspace_id, call_sid, ahead=not visit)
        except api.Archived:
            # No record while it is archived: the listing has the call and its time.
            row = await self._wait_listed(workspace_id, call_sid)
            if row is None:
                raise
            return row
        summary = CallSummary(
            workspace_id, call_sid, record.start, record.metadata.duration_seconds,
            record.metadata.direction,
        )  # fmt: skip
        await trio.to_thread.run_sync(
            lambda: self._index.add(workspace_id, [summary], listed=False)
        )
        row = self._index.by_sid(workspace_id, call_sid)
        if row is None:
            raise FsError(errno.EIO, f"{workspace_id}/{call_sid}: not kept in the call index")
        return row

    async def _wait_listed(self, workspace_id: str, call_sid: str) -> CallRow | None:
        """The call's row once the workspace's sync has indexed it; None if the whole
        listing lacks it."""
        sync = self._sync(workspace_id)
        while True:
            row = self._index.by_sid(workspace_id, call_sid)
            if row is not None:
                return row
            sync.ensure()
            if sync.complete:
                return None
            if sync.error is not None:
                raise sync.error
            await sync.changed.wait()

    async def _call_attrs(
        self, workspace_id: str, call_sid: str, *, visit: bool = True, indexed_only: bool = False
    ) -> Attributes:
        if not is_identifier(call_sid):
            raise FsError(errno.ENOENT)
        if indexed_only:
            # Whatever the name, one listing of the workspace at most: never a
            # request of its own.
            row = await self._wait_listed(workspace_id, call_sid)
            if row is None:
                raise FsError(errno.ENOENT)
        else:
            row = await self._call_row(workspace_id, call_sid, visit=visit)
        attrs = self._row_attrs(row)
        if row.started_ns is None:
            # Listed without a start time: its metadata has one.
            start = (await self._record(workspace_id, call_sid, ahead=not visit)).start
            return Attributes(attrs.inode, True, 0, time_ns(start), 2, IMMUTABLE_TIMEOUT)
        return attrs

    async def _record(
        self,
        workspace_id: str,
        call_sid: str,
        *,
        ahead: bool = False,
        fresh: bool = False,
        whole: bool = False,
    ) -> CallRecord:
        """The call's record; `ahead`: not a visit (no walk detection); `fresh`: not
        the one kept on disk; `whole`: with its metadata.json, which is fetched after
        the rest (what needs only the audio files does not wait for it)."""
        rkey = (workspace_id, call_sid)
        if not ahead:
            self._walk_ahead(workspace_id, call_sid)
        record = self._records.get(rkey)
        if record is None:
            record = await self._load_record(workspace_id, call_sid, fresh)
        if whole:
            try:
                await record.complete()
            except Exception:
                # Loaded again by the next look, not failed for a whole listing TTL.
                if self._records.get(rkey) is record:
                    del self._records[rkey]
                raise
        return record

    async def _load_record(self, workspace_id: str, call_sid: str, fresh: bool) -> CallRecord:
        rkey = (workspace_id, call_sid)
        if rkey in self._missing:
            raise FsError(errno.ENOENT)
        summary = self._summary(workspace_id, call_sid)

        async def load() -> CallRecord:
            try:
                loaded = await self._source.load(
                    workspace_id, call_sid, summary, self._nursery, fresh=fresh
                )
            except api.NotFound:
                self._missing[rkey] = True
                raise
            self._records[rkey] = loaded
            return loaded

        return await self._record_flights.run(rkey, load)

    def _walk_ahead(self, workspace_id: str, call_sid: str) -> None:
        """When call directories are entered in listing order (find, a file manager's
        preview pane) or in name order (rsync, cp -r, a glob: they sort), loads the next
        few records ahead, a few at once, so a walk of a workspace does not pay one
        round trip after another. Two steps in the same order make a walk: one could
        be chance, in one order or the other."""
        row = self._index.by_sid(workspace_id, call_sid)
        if row is None:
            return
        previous, order, streak = self._walk_last.get(workspace_id, (None, None, 0))
        if previous is not None and previous.row_id == row.row_id:
            return  # the same call directory again (its files being looked at)
        step = None
        if previous is not None:
            if row.row_id in {
                r.row_id for r in self._index.after(workspace_id, previous.row_id, 2)
            }:
                step = "listing"
            elif row.call_sid in {
                r.call_sid for r in self._index.after_sid(workspace_id, previous.call_sid, 2)
            }:
                step = "name"
        streak = streak + 1 if step is not None and step == order else int(step is not None)
        self._walk_last[workspace_id] = (row, step, streak)
        if streak < 2:
            return
        if step == "listing":
            ahead = self._index.after(workspace_id, row.row_id, WALK_AHEAD)
        else:
            ahead = self._index.after_sid(workspace_id, row.call_sid, WALK_AHEAD)
        for next_row in ahead:
            rkey = (workspace_id, next_row.call_sid)
            if rkey in self._records or rkey in self._walk_scheduled or rkey in self._missing:
                continue
            self._walk_scheduled.add(rkey)
            self._nursery.start_soon(self._load_quietly, workspace_id, next_row.call_sid)

    async def _load_quietly(self, workspace_id: str, call_sid: str) -> None:
        try:
            await self._record(workspace_id, call_sid, ahead=True)
        except (api.AmigoError, FsError) as exc:
            # Loaded ahead of need: whoever needs it later gets the error then.
            log.debug("%s/%s: loading ahead failed: %s", workspace_id, call_sid, exc)
        except Exception:
            log.exception("%s/%s: loading ahead failed (a bug)", workspace_id, call_sid)
        finally:
            self._walk_scheduled.discard((workspace_id, call_sid))

    def _prefetch_stored(self, file: PresentedFile, length: int) -> None:
        """Fetches the first `length` stored bytes of a mono file ahead (walk prefetch)."""
        start = len(file.header)
        self._source.prefetch(file, start, start + length)

    def _file_attrs(self, record: CallRecord, file: PresentedFile) -> Attributes:
        row = self._index.by_sid(record.workspace_id, record.call_sid)
        if row is None:  # every call shown has a row (see _call_row)
            raise FsError(errno.EIO, f"{record.workspace_id}/{record.call_sid}: not indexed")
        inode = InodeT(CALL_INODES + row.row_id * SLOTS + 1 + FILE_NAMES.index(file.name))
        # A kept record's sizes are asked for again each time until reads find them
        # right: when the server contradicts one, the kernel gets the new size.
        timeout = 0.0 if record.unconfirmed else IMMUTABLE_TIMEOUT
        return Attributes(inode, False, file.size, time_ns(record.start), 1, timeout)

    # --- inodes and handles ---------------------------------------------------------

    def describe(self, inode: InodeT) -> str:
        """The path of an inode below the mount, for log lines ("ws/call/inbound.wav");
        its number when it names nothing (any more)."""
        try:
            key = self._key(inode)
        except FsError:
            return f"inode {inode}"
        if key == _CONTROL_KEY:
            return CONTROL_NAME
        parts = [
            part
            for part in (key.view, key.workspace_id, key.day, key.call_sid, key.file)
            if part is not None
        ]
        return "/".join(parts) or "/"

    def _inode(self, key: NodeKey) -> InodeT:
        inode = self._inodes.get(key)
        if inode is None:
            inode = self._inodes[key] = InodeT(len(self._inodes) + 1)
            self._keys[inode] = key
        return inode

    def _key(self, inode: InodeT) -> NodeKey:
        if inode >= CALL_INODES:
            row_id, slot = divmod(inode - CALL_INODES, SLOTS)
            row = self._rows.get(row_id) or self._index.by_id(row_id)
            if row is None or (slot > len(FILE_NAMES) and slot != LINK_SLOT):
                raise FsError(errno.ENOENT)
            self._rows[row_id] = row
            if slot == LINK_SLOT:
                return NodeKey(row.workspace_id, row.call_sid, view=BY_DATE)
            return NodeKey(row.workspace_id, row.call_sid, FILE_NAMES[slot - 1] if slot else None)
        key = self._keys.get(inode)
        if key is None:
            raise FsError(errno.ENOENT)
        return key

    def _new_handle(self) -> FileHandleT:
        self._next_handle += 1
        return FileHandleT(self._next_handle)


_CONTROL_KEY = NodeKey(file=CONTROL_NAME)


def call_xattrs(record: CallRecord) -> dict[str, str]:
    """A call directory's attributes (names after user.amigo.)."""
    m = record.metadata
    return {
        "duration_seconds": _number(m.duration_seconds),
        "direction": m.direction,
        "format": f"inbound={m.inbound_format},outbound={m.outbound_format}",
        "sample_rate": f"inbound={m.inbound_sample_rate},outbound={m.outbound_sample_rate}",
        "call_start": _time(m.call_start),
        "call_end": _time(m.call_end),
        "tts_provider": m.tts_provider,
    }


def file_xattrs(record: CallRecord, name: str) -> dict[str, str]:
    """An audio file's attributes: the call's, with its own channel's format and rate."""
    m = record.metadata
    values = call_xattrs(record)
    if name == INBOUND:
        values["format"], values["sample_rate"] = m.inbound_format, str(m.inbound_sample_rate)
    elif name == OUTBOUND:
        values["format"], values["sample_rate"] = m.outbound_format, str(m.outbound_sample_rate)
    elif name == CALL:
        stereo = record.files[CALL].stereo
        values["format"] = "pcm_s16le"
        if stereo is not None:
            values["sample_rate"] = str(stereo.rate)
    return values


def _encode(values: dict[str, str]) -> dict[str, bytes]:
    return {XATTR_PREFIX + name: value.encode() for name, value in values.items()}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _time(when: dt.datetime) -> str:
    # ISO 8601 in UTC, to the millisecond the API gives.
    when = when.astimezone(dt.UTC) if when.tzinfo is not None else when
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_root(document: object) -> tuple[str, list[str]]:
    """(identity, workspace ids) of a kept root listing."""
    if not isinstance(document, dict) or not isinstance(document.get("identity"), str):
        raise ValueError("not a root listing")
    ids = document.get("workspaces")
    if not isinstance(ids, list) or not all(isinstance(i, str) and is_identifier(i) for i in ids):
        raise ValueError("not a list of workspace ids")
    return document["identity"], ids
