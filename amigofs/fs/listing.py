"""The sync of a workspace's call listing into the call index, owned by the mount.

A FUSE request never waits for a whole listing, and never cancels one: a sync runs
in the mount's nursery, keeps its progress in the index page by page, and readers
(readdir) take what is indexed so far and wait for more. Once the first page gives
the listing's `total`, the other pages are fetched by offset, PARALLEL_PAGES at a
time (the client honours 429 and Retry-After).

Pages are written to the index by one writer in a worker thread, a transaction at a
time, and the pages that land while one is written go together in the next (a group
commit): a request's place is free again once its page is read, so the requests go on
while SQLite commits (and, now and then, syncs a checkpoint to disk), and a sync pays
a commit per batch of pages, not per page. A page's fetch still waits for its write: a
sync ends once all it read is indexed, or fails with the write's error.

Calls that arrive during a sync shift every offset of a newest-first listing. Each
page reports the listing's total as it was when that page was read; a page read
after `s` new calls arrived holds the calls that were at [offset - s, offset - s + n)
when the sync began. The sync fetches pages in rounds until those ranges cover the
whole listing it began with, plus the new calls at its head as its last round found
them: none missed, none doubled (the index keeps each call once). Calls that arrive
during the last round are left to the next refresh, so a sync ends however fast
calls arrive. A service that lists oldest first grows at the tail instead; which one
the service does is read off the first page's start times. Pages hold what the
server sends: the first page's continuation token gives the stride, and a page
shorter than that leaves a gap the next round reads.

After a complete sync, a refresh (after --listing-ttl) asks only for what is new:
pages from the newest end until a page whose calls are all known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import trio

from amigofs.api import errors as api
from amigofs.api.client import PAGE_LIMIT, CallPage, PlatformClient
from amigofs.api.models import CallSummary
from amigofs.cache.index import CallIndex
from amigofs.concurrency import first_error
from amigofs.policy.failures import FailureMemory
from amigofs.policy.listing import (
    MAX_ROUNDS,
    ListingProgress,
    PageRecord,
    covered,
    is_newest_first,
    next_refresh_offset,
    page_stride,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Pages in flight: at 50 ms a request, 8 listed a million calls 4.0x as fast as one page
# after another, 16 5.3x (the emulator's own CPU, on the same two cores, is then the
# limit); the mount's client has 16 connections.
PARALLEL_PAGES = 16
# Pages a sync holds read and not yet written, at most, beyond those being read: a
# checkpoint's fsync (tens of ms, a few pages' worth) holds no request, and a sync killed
# (its progress is what is written) reads again no more than a few pages besides those
# that were in flight.
STORE_BACKLOG = PARALLEL_PAGES // 4
# A refresh that finds more new pages than this syncs the whole listing again.
MAX_REFRESH_PAGES = 200


class WorkspaceSync:
    """Keeps one workspace's listing in the index."""

    def __init__(
        self,
        workspace_id: str,
        *,
        client: PlatformClient,
        index: CallIndex,
        nursery: trio.Nursery,
        checked: Callable[[str, Callable[[], Awaitable[CallPage]]], Awaitable[CallPage]],
        listing_ttl: float,
        failure_memory: float,
    ) -> None:
        self.workspace_id = workspace_id
        self._client = client
        self._index = index
        self._nursery = nursery
        self._checked = checked
        self._ttl = listing_ttl
        self._failure = FailureMemory(failure_memory)
        self._running = False
        self._forced = False  # SIGHUP: the next listing waits for a refresh
        self.changed = trio.Event()  # set (and replaced) as calls land and at the end
        self.requests = 0
        self._request_places = trio.CapacityLimiter(PARALLEL_PAGES)
        self._writer = PageWriter(partial(index.add_pages, workspace_id), self._notify)

    @property
    def error(self) -> BaseException | None:
        """The last sync's failure, until the next sync starts."""
        return self._failure.error

    @property
    def complete(self) -> bool:
        """The index holds a whole listing, and no refresh is being waited for."""
        return not self._forced and self._index.sync_state(self.workspace_id).complete

    def ensure(self, *, retry: bool = False) -> None:
        """Starts a sync if none runs and the index lacks a whole or fresh listing;
        `retry`: at once after a failure (a new listing of the directory)."""
        if self._running:
            return
        if not retry and self._failure.recent(trio.current_time()) is not None:
            return  # readers get this error for a moment, then the next try
        self._failure.forget()
        state = self._index.sync_state(self.workspace_id)
        fresh = state.synced_at is not None and time.time() - state.synced_at <= self._ttl
        if state.complete and fresh and not self._forced:
            return
        self._running = True
        self._nursery.start_soon(self._run)

    async def wait_complete(self) -> None:
        """Until the index holds the whole listing (a new try at once after a failure);
        raises the sync's error if it fails."""
        self.ensure(retry=True)
        while not self.complete:
            if self.error is not None:
                raise self.error
            await self.changed.wait()
            self.ensure()

    def force(self) -> None:
        """The next listing shows what the API has now (SIGHUP)."""
        self._forced = True
        self._failure.forget()
        self.ensure()

    async def _run(self) -> None:
        refreshing = False
        try:
            state = self._index.sync_state(self.workspace_id)
            refreshing = state.complete
            if refreshing:
                await self._refresh(state.newest_first)
            else:
                await self._sync()
            self._forced = False
        except Exception as exc:
            self._failure.remember(exc, trio.current_time())
            what = f"call listing of {self.workspace_id}"
            if isinstance(exc, api.AuthError) and exc.status == 403:
                # Said once, by WorkspaceAccess: not again at every refresh.
                log.debug("%s: refused: %s", what, exc)
            elif isinstance(exc, api.AmigoError) and refreshing:
                log.warning("%s: refresh failed, keeping the cached listing: %s", what, exc)
            elif isinstance(exc, api.AmigoError):
                log.warning("%s: failed (what is indexed is kept): %s", what, exc)
            else:
                log.exception("%s: %s (a bug)", what, "refresh failed" if refreshing else "failed")
        finally:
            self._running = False
            self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _page(self, offset: int) -> CallPage:
        async with self._request_places:
            self.requests += 1
            return await self._checked(
                self.workspace_id, lambda: self._client.list_calls_page(self.workspace_id, offset)
            )

    async def _store(self, page: CallPage, record: PageRecord | None) -> None:
        await self._writer.store(page.calls, record)

    # --- a whole listing ---------------------------------------------------------

    async def _sync(self) -> None:
        state = self._index.sync_state(self.workspace_id, with_pages=True)
        base, newest_first = state.base_total, state.newest_first
        if base is None or not any(p.offset == 0 for p in state.pages):
            first = await self._page(0)
            if first.total is None:
                await self._sync_in_order(first)
                return
            base = first.total
            newest_first = listed_newest_first(first)
            await trio.to_thread.run_sync(
                lambda: self._index.begin_sync(self.workspace_id, base, newest_first)
            )
            record = page_record(first, 0)
            await self._store(first, record)
            progress = ListingProgress.of(base, newest_first, [record], first_stride(first))
        else:
            progress = ListingProgress.of(base, newest_first, state.pages)
            log.info(
                "%s: resuming the listing's sync (%d pages read)",
                self.workspace_id, len(progress.pages),
            )  # fmt: skip

        async def fetch(offset: int) -> PageRecord:
            page = await self._page(offset)
            record = page_record(page, offset)
            await self._store(page, record)
            return record

        try:
            await read_rounds(
                progress, fetch, f"list-calls {self.workspace_id}",
                tasks=PARALLEL_PAGES + STORE_BACKLOG,
            )  # fmt: skip
        except ListingShifting:
            # The next try starts from the listing as it is then, not from this one's
            # pages.
            await trio.to_thread.run_sync(lambda: self._index.restart_sync(self.workspace_id))
            raise
        await trio.to_thread.run_sync(
            lambda: self._index.finish_sync(self.workspace_id, time.time())
        )
        log.info("%s: listing synced (%d requests)", self.workspace_id, self.requests)

    async def _sync_in_order(self, first: CallPage) -> None:
        """A server that gives no total: one page after another."""
        page, offset = first, 0
        await self._store(page, None)
        while page.has_more and page.entries:
            offset = following_offset(page, offset)
            page = await self._page(offset)
            await self._store(page, None)
        await trio.to_thread.run_sync(
            lambda: self._index.finish_sync(self.workspace_id, time.time())
        )

    # --- what is new since -------------------------------------------------------

    async def _refresh(self, newest_first: bool) -> None:
        offset = 0
        listed = 0 if newest_first else self._index.listed_count(self.workspace_id)
        for _ in range(MAX_REFRESH_PAGES):
            page = await self._page(offset)
            known = self._index.known(self.workspace_id, (c.call_sid for c in page.calls))
            await self._store(page, None)
            following = next_refresh_offset(
                offset=offset, entries=page.entries, has_more=page.has_more, total=page.total,
                newest_first=newest_first, all_known=len(known) == len(page.calls),
                listed=listed, page_size=PAGE_LIMIT, next_offset=page.next_offset,
            )  # fmt: skip
            if following is None:
                break
            offset = following
        else:
            # More new calls than a refresh should page through: sync it all again.
            await trio.to_thread.run_sync(lambda: self._index.restart_sync(self.workspace_id))
            await self._sync()
            return
        await trio.to_thread.run_sync(
            lambda: self._index.finish_sync(self.workspace_id, time.time())
        )


StoredPage = tuple[Sequence[CallSummary], PageRecord | None]


@dataclass(slots=True, eq=False)
class _Batch:
    """Pages written to the index in one transaction."""

    pages: list[StoredPage] = field(default_factory=list)
    ended: bool = False  # written, failed, or dropped (its writer cancelled before it)
    written: bool = False
    error: Exception | None = None


class PageWriter:
    """Writes pages to the index in a worker thread, one transaction at a time; the
    pages given while one is written go together in the next (a group commit). Each
    `store` returns once its page is written, or raises the error that its write
    failed with; a task whose page waits while no write is under way writes the
    batch its page is in (no task of its own to cancel or to outlive a sync)."""

    def __init__(
        self, write: Callable[[list[StoredPage]], None], written: Callable[[], None]
    ) -> None:
        self._write = write
        self._written = written
        self._open = _Batch()
        self._writing = False
        self._turn = trio.Event()  # set (and replaced) as each write ends

    async def store(self, calls: Sequence[CallSummary], record: PageRecord | None) -> None:
        page: StoredPage = (calls, record)
        while True:
            batch = self._open
            batch.pages.append(page)
            try:
                while not batch.ended:
                    if self._writing:
                        await self._turn.wait()
                    else:
                        await self._write_open()
            except BaseException:
                # A page given up on (its sync failed or was cancelled) is not written
                # later, by another sync, with progress that is not that one's.
                if batch is self._open:
                    batch.pages = [p for p in batch.pages if p is not page]
                raise
            if batch.error is not None:
                raise batch.error
            if batch.written:
                return
            # Dropped: its writer was cancelled before it began; into the next one.

    async def _write_open(self) -> None:
        batch, self._open = self._open, _Batch()
        self._writing = True
        began = False

        def write() -> None:
            nonlocal began
            began = True
            self._write(batch.pages)

        try:
            # Not abandoned when cancelled: once begun, a write ends before this returns.
            await trio.to_thread.run_sync(write)
        except Exception as exc:
            batch.error = exc
        finally:
            batch.written = began and batch.error is None
            batch.ended = True
            self._writing = False
            self._turn.set()
            self._turn = trio.Event()
        if batch.written:
            self._written()


async def in_parallel(
    offsets: Iterable[int], fetch: Callable[[int], Awaitable[None]], tasks: int = PARALLEL_PAGES
) -> None:
    """`fetch` of each offset, `tasks` at a time; the first error ends them all."""
    limiter = trio.CapacityLimiter(tasks)

    async def one(offset: int) -> None:
        async with limiter:
            await fetch(offset)

    try:
        async with trio.open_nursery() as nursery:
            for offset in offsets:
                nursery.start_soon(one, offset)
    except BaseExceptionGroup as group:
        # The API's own error, for the errno map (a 403 is EACCES, a 429 EAGAIN), not
        # trio's group of it (EIO, logged as a bug).
        raise first_error(group) from None


class ListingShifting(api.ProtocolError):
    """The listing moved under every round of a sync: more calls arrived during each
    round than a page holds."""


def page_record(page: CallPage, offset: int) -> PageRecord:
    """The places of the listing a page read at `offset` covers, and its total (a page
    without one: as if the listing ended with it)."""
    total = page.total if page.total is not None else offset + page.entries
    return PageRecord(offset, covered(page.entries, PAGE_LIMIT), total)


def first_stride(first: CallPage) -> int:
    """Rows a page of this listing holds, as the server pages it."""
    return page_stride(first.next_offset if first.has_more else None, first.entries, PAGE_LIMIT)


def following_offset(page: CallPage, offset: int) -> int:
    """Where the page after `page` starts: where the server says, else after its rows."""
    if page.next_offset is not None and page.next_offset > offset:
        return page.next_offset
    return offset + page.entries


def listed_newest_first(first: CallPage) -> bool:
    return is_newest_first([c.started_at for c in first.calls if c.started_at is not None])


async def read_rounds(
    progress: ListingProgress,
    fetch: Callable[[int], Awaitable[PageRecord]],
    what: str,
    *,
    tasks: int = PARALLEL_PAGES,
) -> None:
    """Reads the pages `progress` lacks, a round at a time, each round's pages at once
    (`tasks` fetches at a time), until the listing as last seen is covered, or at least
    the listing as of a round's beginning once the rounds run out (the calls that
    arrived since are the refresh's)."""
    for rounds in range(MAX_ROUNDS + 1):
        todo = progress.next_round()  # last: whether the last round covered its aim
        if todo is None or rounds == MAX_ROUNDS:
            break
        landed: list[PageRecord] = []
        await in_parallel(todo, partial(gather, fetch, into=landed), tasks)
        for record in landed:
            progress.landed(record)
    if progress.settled is None:
        raise ListingShifting(f"{what}: the listing kept shifting; try again later")


async def gather(
    fetch: Callable[[int], Awaitable[PageRecord]], offset: int, *, into: list[PageRecord]
) -> None:
    into.append(await fetch(offset))


async def list_filtered(page: Callable[[int], Awaitable[CallPage]]) -> list[CallSummary]:
    """Every call of a filtered listing (a day of by-date): the first page gives its
    total and the rows a page holds, the others come at once, in rounds as a sync's
    (a page shorter than the others, or calls arriving today, leave gaps the next
    round reads); from a server that gives no total, one page after another. Never
    fewer pages than the listing has."""
    head = await page(0)
    calls = list(head.calls)
    if head.total is not None:

        async def fetch(offset: int) -> PageRecord:
            current = await page(offset)
            calls.extend(current.calls)
            return page_record(current, offset)

        progress = ListingProgress.of(
            head.total, listed_newest_first(head), [page_record(head, 0)], first_stride(head)
        )
        await read_rounds(progress, fetch, "list-calls (by date)")
    else:
        offset, current = 0, head
        while current.next_offset is not None and current.next_offset > offset:
            offset = current.next_offset
            current = await page(offset)
            calls.extend(current.calls)
    return list({c.call_sid: c for c in calls}.values())
