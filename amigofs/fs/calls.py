"""Calls as the tree needs them: their records, their rows, and whether one may be seen.

Owns the records kept in memory (and the calls found missing or archived a moment
ago), the workspace syncs that fill the call index, and the days of by-date already
listed from the API. The call index (amigofs.cache.index) is the one cache of which
calls exist; a record (amigofs.fs.records) says which files a call has.

A workspace the API refuses (403) is refused here too, with EACCES, from the
workspace directory's contents down, cached or not: never as an empty listing,
which a `rsync --delete` would copy over a backup. Its cached data stays, for
when a later request for it is answered again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
from collections.abc import Awaitable

import cachetools
import trio

from amigofs.api import errors as api
from amigofs.api.client import CallPage, PlatformClient
from amigofs.api.models import CallSummary
from amigofs.cache.index import CallIndex, CallRow
from amigofs.cache.singleflight import SingleFlight
from amigofs.fs.errors import FsError
from amigofs.fs.listing import WorkspaceSync, list_filtered
from amigofs.fs.records import CallRecord, PresentedFile, RecordingSource
from amigofs.fs.views import Days
from amigofs.fs.walk import RecordsAhead, rate_limited

log = logging.getLogger(__name__)

# Bytes of metadata.json that weigh as much as a record in the records' LRU: a server's
# metadata answer may be far larger than the ~1 KiB one expects.
RECORD_WEIGHT = 4096


def _weight(record: CallRecord) -> int:
    return 1 + len(record.metadata.body) // RECORD_WEIGHT


class Calls:
    """The calls of the mount's workspaces: their records, their rows, their syncs."""

    def __init__(
        self,
        client: PlatformClient,
        source: RecordingSource,
        nursery: trio.Nursery,
        index: CallIndex,
        days: Days,
        *,
        listing_ttl: float,
        negative_ttl: float,
        failure_memory: float,
        max_records: int,
        records_in_flight: int,
    ) -> None:
        self._client = client
        self._source = source
        self._nursery = nursery
        self._index = index
        self._days = days
        self._access = source.access
        self._listing_ttl = listing_ttl
        self._failure_memory = failure_memory
        self._syncs: dict[str, WorkspaceSync] = {}
        # Bounded: the mount's memory must not grow with the calls ever looked up
        # (what is needed again is kept on disk, RecordingSource's MetaStore). A record
        # weighs one, and one more per RECORD_WEIGHT bytes of its metadata.json.
        self._records: cachetools.LRUCache[tuple[str, str], CallRecord] = cachetools.LRUCache(
            max_records, getsizeof=lambda record: min(max_records, _weight(record))
        )
        self._record_flights: SingleFlight[CallRecord] = SingleFlight()
        self._missing: cachetools.TTLCache[tuple[str, str], bool] = cachetools.TTLCache(
            maxsize=10_000, ttl=negative_ttl, timer=trio.current_time
        )
        # Calls whose recording is archived, with the restore time the API gave:
        # kept a few seconds, so `getfattr -d` costs one request, not one per name.
        self._archived: cachetools.TTLCache[tuple[str, str], api.Archived] = cachetools.TTLCache(
            maxsize=10_000, ttl=negative_ttl, timer=trio.current_time
        )
        # Days of by-date listed from the API (a workspace not synced yet) within a
        # listing TTL: their calls are in the index since, and listed from it.
        self._days_fetched: cachetools.TTLCache[tuple[str, str], bool] = cachetools.TTLCache(
            maxsize=64, ttl=listing_ttl, timer=trio.current_time
        )
        self._ahead = RecordsAhead(
            index,
            # A stat walk needs sizes only: the metadata, one request a call.
            lambda ws, sid: self.record(ws, sid, ahead=True, links=False),
            lambda ws, sid: (ws, sid) in self._records or (ws, sid) in self._missing,
            nursery,
            in_flight=records_in_flight,
            # Calls entered in name order before the workspace is listed: its
            # listing says which calls come next.
            list_workspace=lambda ws: self.sync(ws).ensure(),
            rate_limited=lambda: rate_limited(client.stats),
        )

    # --- access and listings -------------------------------------------------------

    async def allowed(self, workspace_id: str) -> None:
        """Refuses a workspace the API refuses, asking it again (one listing page) once
        `listing_ttl` has passed since it last did."""
        refused_at = self._access.refused_at(workspace_id)
        if refused_at is None:
            return
        if trio.current_time() - refused_at > self._listing_ttl:
            with contextlib.suppress(api.AmigoError):
                await self._access.checked(
                    workspace_id, lambda: self._client.list_calls_page(workspace_id, 0)
                )
            if not self._access.revoked(workspace_id):
                return
        raise FsError(errno.EACCES, f"{workspace_id}: access revoked")

    def revoked(self, workspace_id: str) -> bool:
        return self._access.revoked(workspace_id)

    def sync(self, workspace_id: str) -> WorkspaceSync:
        sync = self._syncs.get(workspace_id)
        if sync is None:
            sync = self._syncs[workspace_id] = WorkspaceSync(
                workspace_id,
                client=self._client,
                index=self._index,
                nursery=self._nursery,
                checked=self._access.checked,
                listing_ttl=self._listing_ttl,
                failure_memory=self._failure_memory,
            )
        return sync

    async def wait_listed(self, workspace_id: str, call_sid: str) -> CallRow | None:
        """The call's row once the workspace's sync has indexed it; None if the whole
        listing lacks it."""
        sync = self.sync(workspace_id)
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

    async def wait_complete(self, workspace_id: str) -> None:
        await self.sync(workspace_id).wait_complete()

    async def listed_after(self, workspace_id: str, start: int, limit: int) -> list[CallRow]:
        """The workspace's calls after row `start` in listing order. While its sync is
        still filling the index, this waits for the next calls; none at all means the
        listing is whole. A listing that cannot complete fails here: never a short one
        that looks whole."""
        sync = self.sync(workspace_id)
        while True:
            await self.allowed(workspace_id)
            rows = self._index.after(workspace_id, start, limit)
            if rows:
                return rows
            sync.ensure()
            if sync.complete:
                return []
            if sync.error is not None:
                raise sync.error
            await sync.changed.wait()

    async def day_rows(self, workspace_id: str, day: dt.date) -> list[CallRow]:
        """A day's calls: from the index if the workspace is synced, else first from the
        API's listing of that day (date_from/date_to), not the workspace's whole."""
        fetched = (workspace_id, day.isoformat())
        if fetched not in self._days_fetched and not self._index.sync_state(workspace_id).complete:
            first, last = self._days.utc_days(day)
            calls = await self._list_days(workspace_id, first, last)
            await trio.to_thread.run_sync(lambda: self._index.add(workspace_id, calls))
            self._days_fetched[fetched] = True
        start, end = self._days.bounds_ns(day)
        return self._index.started_between(workspace_id, start, end)

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

    def drop_listings(self) -> None:
        """Makes the next access list calls again (SIGHUP)."""
        for sync in self._syncs.values():
            sync.force()
        self._missing.clear()

    # --- one call ----------------------------------------------------------------

    def summary(self, workspace_id: str, call_sid: str) -> CallSummary | None:
        row = self._index.by_sid(workspace_id, call_sid)
        return None if row is None else row.summary()

    async def row(self, workspace_id: str, call_sid: str, *, visit: bool) -> CallRow:
        """The call's row in the index: one not indexed (not listed yet, or its
        workspace not synced yet) is looked up by its own requests and indexed."""
        row = self._index.by_sid(workspace_id, call_sid)
        if row is not None:
            return row
        try:
            # Its start and duration: the metadata gives them.
            record = await self.record(
                workspace_id, call_sid, ahead=not visit, links=None if visit else False
            )
        except api.Archived:
            # No record while it is archived: the listing has the call and its time.
            row = await self.wait_listed(workspace_id, call_sid)
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

    async def record(
        self,
        workspace_id: str,
        call_sid: str,
        *,
        ahead: bool = False,
        fresh: bool = False,
        whole: bool = False,
        links: bool | None = None,
    ) -> CallRecord:
        """The call's record; `ahead`: not a visit (no walk detection); `fresh`: not
        the one kept on disk; `whole`: for the call's directory or its metadata.json,
        which the metadata alone gives.

        `links`: True: with its download links (fetched now if it has none); False:
        the metadata is enough (a load ahead of a stat walk: one request). None: a
        load `ahead` wants links (walk prefetch, a reload: bytes follow); a lookup
        loads the links with the metadata, at once, for an audio file (not `whole`),
        and leaves a record already loaded as it is (its first read links it)."""
        rkey = (workspace_id, call_sid)
        if not ahead:
            self._ahead.visit(workspace_id, call_sid)
        wanted = links if links is not None else (True if ahead else None)
        record = self._records.get(rkey)
        if record is None:
            with_links = wanted if wanted is not None else not whole
            record = await self._load(workspace_id, call_sid, fresh, with_links)
        if wanted and not record.linked:
            await self._source.link(record)
        return record

    async def record_or_archived(
        self, workspace_id: str, call_sid: str
    ) -> CallRecord | api.Archived:
        """The call's record, or why there is none now: its recording is archived."""
        rkey = (workspace_id, call_sid)
        archived = self._archived.get(rkey)
        if archived is not None:
            return archived
        try:
            return await self.record(workspace_id, call_sid)
        except api.Archived as exc:
            self._archived[rkey] = exc
            return exc

    def known_archived(self, workspace_id: str, call_sid: str) -> bool:
        """Whether the call was found archived a moment ago: asks nobody."""
        return (workspace_id, call_sid) in self._archived

    async def reload(self, record: CallRecord, error: Exception) -> CallRecord:
        """The record loaded again from the API, the one kept on disk dropped: the
        server contradicts it (see RecordingSource.read_checked)."""
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
        return await self.record(*rkey, ahead=True, fresh=True, whole=True)

    async def _load(self, workspace_id: str, call_sid: str, fresh: bool, links: bool) -> CallRecord:
        rkey = (workspace_id, call_sid)
        if rkey in self._missing:
            raise FsError(errno.ENOENT)
        summary = self.summary(workspace_id, call_sid)

        async def load() -> CallRecord:
            try:
                loaded = await self._source.load(
                    workspace_id, call_sid, summary, fresh=fresh, links=links
                )
            except api.NotFound:
                self._missing[rkey] = True
                raise
            self._records[rkey] = loaded
            return loaded

        return await self._record_flights.run(rkey, load)

    def prefetch_stored(self, file: PresentedFile, length: int) -> None:
        """Fetches the first `length` stored bytes of a mono file ahead (walk prefetch)."""
        start = len(file.header)
        self._source.prefetch(file, start, start + length)
