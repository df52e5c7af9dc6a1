"""The tree: MOUNT/<workspace_id>/<call_sid>/{inbound.wav, outbound.wav, metadata.json}.

Owns inode numbers, cached listings, call records, directory snapshots and open
files. Knows nothing of pyfuse3: the adapter turns its answers into FUSE replies.

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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, NewType, TypeVar

import cachetools
import trio

from amigofs.api import errors as api
from amigofs.api.client import PlatformClient
from amigofs.api.models import CallSummary, call_summary_document, is_identifier, parse_call_summary
from amigofs.cache.meta import MetaStore
from amigofs.cache.readahead import Readahead
from amigofs.cache.singleflight import SingleFlight
from amigofs.concurrency import gather
from amigofs.fs.errors import FsError
from amigofs.fs.records import (
    FILE_NAMES,
    INBOUND,
    METADATA,
    OUTBOUND,
    CallRecord,
    PresentedFile,
    RecordingSource,
)

log = logging.getLogger(__name__)

InodeT = NewType("InodeT", int)
FileHandleT = NewType("FileHandleT", int)
ROOT_INODE = InodeT(1)

# Recordings never change once stored: the kernel may keep their entries and
# attributes for a long time.
IMMUTABLE_TIMEOUT = 24 * 3600.0
# Call records loaded ahead of a walk through a workspace in listing order.
WALK_AHEAD = 16

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


@dataclass(slots=True, frozen=True)
class Attributes:
    inode: InodeT
    is_dir: bool
    size: int
    mtime_ns: int
    nlink: int
    timeout: float
    private: bool = False  # readable by the owner only (the control file)


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


@dataclass(slots=True, frozen=True)
class NamespaceConfig:
    workspaces: Sequence[str] | None = None  # None: every workspace the key can list
    listing_ttl: float = 60.0
    negative_ttl: float = 5.0
    max_records: int = 100_000
    max_readahead: int = 32 << 20
    failure_memory: float = 2.0
    # Makes the content of the control file; None: the mount has none.
    control: Callable[[], bytes] | None = None


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
            # A listing of many thousand calls is megabytes of JSON: written in a
            # thread, so no FUSE request waits on it.
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
    ) -> None:
        self._client = client
        self._source = source
        self._nursery = nursery
        self._config = config
        self._mount_time_ns = time.time_ns()
        # Inodes are never reused while mounted: a few per call, cheap to keep,
        # and stable numbers let rsync and find recognise what they saw.
        self._inodes: dict[NodeKey, InodeT] = {NodeKey(): ROOT_INODE}
        self._keys: dict[InodeT, NodeKey] = {ROOT_INODE: NodeKey()}
        self._meta = meta
        self._access = source.access
        self._workspaces: _Listing[list[str]] = _Listing(
            self._list_workspaces,
            config.listing_ttl,
            "workspace listing",
            restore=self._restore_workspaces,
            persist=lambda ids: self._save(list(ids), "workspaces"),
        )
        self._calls: dict[str, _Listing[dict[str, CallSummary]]] = {}
        self._records: cachetools.LRUCache[tuple[str, str], CallRecord] = cachetools.LRUCache(
            config.max_records
        )
        self._record_flights: SingleFlight[CallRecord] = SingleFlight()
        # Walk detection: each workspace's listing in order, and the last record entered.
        self._walk_orders: dict[str, tuple[object, dict[str, int], list[str]]] = {}
        self._walk_last: dict[str, int | None] = {}
        self._walk_scheduled: set[tuple[str, str]] = set()
        self._missing: cachetools.TTLCache[tuple[str, str], bool] = cachetools.TTLCache(
            maxsize=10_000, ttl=config.negative_ttl, timer=trio.current_time
        )
        # Calls whose recording is archived, with the restore time the API gave:
        # kept a few seconds, so `getfattr -d` costs one request, not one per name.
        self._archived: cachetools.TTLCache[tuple[str, str], api.Archived] = cachetools.TTLCache(
            maxsize=10_000, ttl=config.negative_ttl, timer=trio.current_time
        )
        self._dir_snapshots: dict[FileHandleT, list[DirEntry]] = {}
        self._open_files: dict[FileHandleT, OpenFile] = {}
        self._open_counts: collections.Counter[InodeT] = collections.Counter()
        self._next_handle = 0

    # --- entry points used by the FUSE adapter -----------------------------------

    async def lookup(self, parent: InodeT, name: str, *, owner: bool = True) -> Attributes:
        """`owner`: asked by the mount's owner. Others (with --allow-other) get only the
        calls the listing has: a lookup of an unlisted call costs requests on the
        owner's key and rate limit, and made-up names must not run those up."""
        key = self._key(parent)
        if key.file is not None:
            raise FsError(errno.ENOTDIR)
        if key.workspace_id is None:
            if name == CONTROL_NAME and self._config.control is not None:
                return self._control_attrs()
            if name not in await self._workspace_ids():
                raise FsError(errno.ENOENT)
            return await self._workspace_attrs(name)
        await self._allowed(key.workspace_id)
        if key.call_sid is None:
            return await self._call_attrs(key.workspace_id, name, listed_only=not owner)
        record = await self._record(key.workspace_id, key.call_sid)
        file = record.files.get(name)
        if file is None:
            raise FsError(errno.ENOENT)
        return self._file_attrs(record, file)

    async def getattr(self, inode: InodeT) -> Attributes:
        key = self._key(inode)
        if key == _CONTROL_KEY:
            return self._control_attrs()
        if key.workspace_id is None:
            return Attributes(ROOT_INODE, True, 0, self._mount_time_ns, 1, self._config.listing_ttl)
        if key.call_sid is None:
            return await self._workspace_attrs(key.workspace_id)
        await self._allowed(key.workspace_id)
        if key.file is None:
            return await self._call_attrs(key.workspace_id, key.call_sid)
        record = await self._record(key.workspace_id, key.call_sid)
        return self._file_attrs(record, record.files[key.file])

    async def opendir(self, inode: InodeT) -> FileHandleT:
        key = self._key(inode)
        if key.file is not None:
            raise FsError(errno.ENOTDIR)
        if key.workspace_id is None:
            ids = await self._workspace_ids()
            attrs = await gather(*(lambda ws=ws: self._workspace_attrs(ws) for ws in ids))
            entries = [DirEntry(ws, a) for ws, a in zip(ids, attrs, strict=True)]
        elif key.call_sid is None:
            await self._allowed(key.workspace_id)
            entries = await self._workspace_entries(key.workspace_id)
        else:
            await self._allowed(key.workspace_id)
            record = await self._record(key.workspace_id, key.call_sid)
            entries = [
                DirEntry(name, self._file_attrs(record, record.files[name]))
                for name in FILE_NAMES
                if name in record.files
            ]
        handle = self._new_handle()
        self._dir_snapshots[handle] = entries
        return handle

    def readdir(self, handle: FileHandleT, start: int) -> list[DirEntry]:
        """Entries from offset `start` of the snapshot taken at opendir."""
        return self._dir_snapshots[handle][start:]

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
        if key.file is None or key.workspace_id is None or key.call_sid is None:
            raise FsError(errno.EISDIR)
        await self._allowed(key.workspace_id)
        record = await self._record(key.workspace_id, key.call_sid)
        handle = self._new_handle()
        readahead = Readahead(max_window=self._config.max_readahead)
        self._open_files[handle] = OpenFile(inode, record.files[key.file], readahead, record=record)
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
        try:
            return await self._read(opened, offset, size)
        except (api.TransportError, api.ServerError, api.RateLimited) as exc:
            opened.failed = (trio.current_time(), exc)
            raise
        except trio.Cancelled:
            # The request's own deadline ran out.
            opened.failed = (trio.current_time(), api.DeadlineExceeded("no answer in time"))
            raise

    async def _read(
        self, opened: OpenFile, offset: int, size: int
    ) -> bytes | bytearray | memoryview:
        record = opened.record
        try:
            data = await self._source.read(opened.file, offset, size)
        except (api.ProtocolError, api.NotFound, api.RequestRejected) as exc:
            # What a wrong record gets from the server (a size it contradicts, a
            # file it does not have): one kept on disk is loaded again, once.
            if record is None or not record.from_disk or opened.file.stored is None:
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
        return await self._record(*rkey, ahead=True, fresh=True)

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
        listing = self._calls.get(workspace_id)
        summary = listing.cached.get(call_sid) if listing and listing.cached else None
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
        for listing in self._calls.values():
            listing.invalidate()
        self._missing.clear()

    # --- workspaces ---------------------------------------------------------------

    async def _list_workspaces(self) -> list[str]:
        if self._config.workspaces is not None:
            return list(self._config.workspaces)
        return sorted(ws.id for ws in await self._client.list_workspaces())

    def _save(self, document: object, *name: str) -> None:
        if self._meta is not None:
            self._meta.save(document, *name)

    def _restore_workspaces(self) -> list[str] | None:
        if self._config.workspaces is not None or self._meta is None:
            return None
        return self._meta.load(_parse_workspace_ids, "workspaces")

    def _restore_calls(self, workspace_id: str) -> dict[str, CallSummary] | None:
        if self._meta is None:
            return None

        def parse(documents: object) -> dict[str, CallSummary]:
            if not isinstance(documents, list):
                raise ValueError("not a list of calls")
            calls: dict[str, CallSummary] = {}
            for document in documents:
                call = parse_call_summary(document, workspace_id)
                if call is not None:
                    calls[call.call_sid] = call
            return calls

        return self._meta.load(parse, "calls", workspace_id)

    async def _workspace_ids(self) -> list[str]:
        return await self._workspaces.get(self._nursery)

    async def _workspace_attrs(self, workspace_id: str) -> Attributes:
        # A workspace the key may not see is not one that is gone: shown, in its
        # parent's listing too, and refused when entered (which asks the API again).
        listing = self._calls.get(workspace_id)
        if self._access.revoked(workspace_id):
            calls = listing.cached if listing is not None and listing.cached else {}
        else:
            try:
                calls = await self._call_listing(workspace_id)
            except api.AuthError:
                calls = {}
        starts = [c.started_at for c in calls.values() if c.started_at is not None]
        # A workspace changes when a call is added: its newest call's time says so,
        # and stays the same across remounts.
        mtime_ns = _ns(max(starts)) if starts else self._mount_time_ns
        inode = self._inode(NodeKey(workspace_id))
        return Attributes(inode, True, 0, mtime_ns, 1, self._config.listing_ttl)

    # --- calls ---------------------------------------------------------------------

    async def _allowed(self, workspace_id: str) -> None:
        """Refuses a workspace the API refuses, asking it again (one listing) once
        `listing_ttl` has passed since it last did."""
        refused_at = self._access.refused_at(workspace_id)
        if refused_at is None:
            return
        if trio.current_time() - refused_at > self._config.listing_ttl:
            with contextlib.suppress(api.AmigoError):
                await self._listing(workspace_id).refresh()
            if not self._access.revoked(workspace_id):
                return
        raise FsError(errno.EACCES, f"{workspace_id}: access revoked")

    async def _call_listing(self, workspace_id: str) -> dict[str, CallSummary]:
        return await self._listing(workspace_id).get(self._nursery)

    def _listing(self, workspace_id: str) -> _Listing[dict[str, CallSummary]]:
        listing = self._calls.get(workspace_id)
        if listing is None:

            async def load() -> dict[str, CallSummary]:
                calls = await self._access.checked(
                    workspace_id, lambda: self._client.list_calls(workspace_id)
                )
                return {c.call_sid: c for c in calls}

            listing = self._calls[workspace_id] = _Listing(
                load,
                self._config.listing_ttl,
                f"call listing of {workspace_id}",
                restore=lambda: self._restore_calls(workspace_id),
                persist=lambda calls: self._save(
                    [call_summary_document(c) for c in calls.values()], "calls", workspace_id
                ),
            )
        return listing

    async def _workspace_entries(self, workspace_id: str) -> list[DirEntry]:
        calls = await self._call_listing(workspace_id)
        # Calls listed without a start time need their metadata for an mtime:
        # fetch those records together, bounded by the source's limiter.
        # Not a visit of those calls: they must not count as a walk (ahead=True).
        undated = [sid for sid, c in calls.items() if c.started_at is None]
        if undated:
            await gather(
                *(lambda sid=sid: self._record(workspace_id, sid, ahead=True) for sid in undated)
            )
        return [
            DirEntry(sid, await self._call_attrs(workspace_id, sid, visit=False))
            for sid in _listing_order(calls)
        ]

    async def _call_attrs(
        self, workspace_id: str, call_sid: str, *, visit: bool = True, listed_only: bool = False
    ) -> Attributes:
        if not is_identifier(call_sid):
            raise FsError(errno.ENOENT)
        calls = await self._call_listing(workspace_id)
        summary = calls.get(call_sid)
        if summary is None and listed_only:
            raise FsError(errno.ENOENT)
        if summary is not None and summary.started_at is not None:
            start_ns = _ns(summary.started_at)
        else:
            # Not (yet) in the listing, e.g. a call that just ended: its metadata decides.
            start_ns = _ns((await self._record(workspace_id, call_sid, ahead=not visit)).start)
        inode = self._inode(NodeKey(workspace_id, call_sid))
        return Attributes(inode, True, 0, start_ns, 2, IMMUTABLE_TIMEOUT)

    async def _record(
        self, workspace_id: str, call_sid: str, *, ahead: bool = False, fresh: bool = False
    ) -> CallRecord:
        """The call's record; `ahead`: not a visit (no walk detection); `fresh`: not
        the one kept on disk."""
        rkey = (workspace_id, call_sid)
        if not ahead:
            self._walk_ahead(workspace_id, call_sid)
        record = self._records.get(rkey)
        if record is not None:
            return record
        if rkey in self._missing:
            raise FsError(errno.ENOENT)
        listing = self._calls.get(workspace_id)
        summary = listing.cached.get(call_sid) if listing and listing.cached else None

        async def load() -> CallRecord:
            try:
                loaded = await self._source.load(workspace_id, call_sid, summary, fresh=fresh)
            except api.NotFound:
                self._missing[rkey] = True
                raise
            self._records[rkey] = loaded
            return loaded

        return await self._record_flights.run(rkey, load)

    def _walk_ahead(self, workspace_id: str, call_sid: str) -> None:
        """When call directories are entered in listing order (find, rsync, cp -r, a
        file manager's preview pane), loads the next few records ahead, a few at once,
        so a walk of a workspace does not pay one round trip after another."""
        listing = self._calls.get(workspace_id)
        calls = listing.cached if listing is not None else None
        if not calls:
            return
        order = self._walk_orders.get(workspace_id)
        if order is None or order[0] is not calls:
            sids = _listing_order(calls)
            order = self._walk_orders[workspace_id] = (
                calls,
                {s: i for i, s in enumerate(sids)},
                sids,
            )
        _calls, position, sids = order
        index = position.get(call_sid)
        previous = self._walk_last.get(workspace_id)
        if index == previous:
            return  # the same call directory again (its files being looked at)
        self._walk_last[workspace_id] = index
        if index is None or previous is None or not 0 < index - previous <= 2:
            return  # not a walk in order (yet)
        for sid in sids[index + 1 : index + 1 + WALK_AHEAD]:
            rkey = (workspace_id, sid)
            if rkey in self._records or rkey in self._walk_scheduled or rkey in self._missing:
                continue
            self._walk_scheduled.add(rkey)
            self._nursery.start_soon(self._load_quietly, workspace_id, sid)

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

    def _file_attrs(self, record: CallRecord, file: PresentedFile) -> Attributes:
        inode = self._inode(NodeKey(record.workspace_id, record.call_sid, file.name))
        # A kept record's sizes are asked for again each time until reads find them
        # right: when the server contradicts one, the kernel gets the new size.
        timeout = 0.0 if record.unconfirmed else IMMUTABLE_TIMEOUT
        return Attributes(inode, False, file.size, _ns(record.start), 1, timeout)

    # --- inodes and handles ---------------------------------------------------------

    def _inode(self, key: NodeKey) -> InodeT:
        inode = self._inodes.get(key)
        if inode is None:
            inode = self._inodes[key] = InodeT(len(self._inodes) + 1)
            self._keys[inode] = key
        return inode

    def _key(self, inode: InodeT) -> NodeKey:
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
    return values


def _encode(values: dict[str, str]) -> dict[str, bytes]:
    return {XATTR_PREFIX + name: value.encode() for name, value in values.items()}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _time(when: dt.datetime) -> str:
    # ISO 8601 in UTC, to the millisecond the API gives.
    when = when.astimezone(dt.UTC) if when.tzinfo is not None else when
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ns(when: dt.datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def _parse_workspace_ids(ids: object) -> list[str]:
    if not isinstance(ids, list) or not all(isinstance(i, str) and is_identifier(i) for i in ids):
        raise ValueError("not a list of workspace ids")
    return ids


def _listing_order(calls: Mapping[str, CallSummary]) -> list[str]:
    """Call ids in the order a workspace directory lists them: by id, the calls
    without a start time last. A walk (find, rsync) enters them in this order."""
    return sorted(calls, key=lambda sid: (calls[sid].started_at is None, sid))
