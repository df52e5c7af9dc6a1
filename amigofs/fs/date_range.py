"""A workspace's span of calls: its oldest and its newest call's start, the owner of what
by-date/<workspace>/ lists (every day from the oldest call's to the newest call's).

Asked of the API with a few list requests, never the whole listing (a million calls are
10,000 pages: a cold `ls by-date/WS/` must not wait for them), and kept for the listing
TTL. The first page (offset 0) gives the listing's `total` and, as the service lists
newest first, the newest calls; the page at the end of the listing (offset total - 100)
the oldest. The spec does not promise that order, so two date-filtered pages check it:
none after the newest call's UTC day, none before the oldest's (four requests in three
round trips). A check that finds calls beyond moves the bound to them and asks again, a
few times at most; a listing without a total, or one whose ends cannot be placed so, is
read whole (the workspace's sync) and the span taken from the call index.

What the index holds widens the span (calls that arrived since, or a sync that went
further): a day folder is never hidden from someone who found its calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import cachetools
import trio

from amigofs.api.client import PAGE_LIMIT, CallPage, PlatformClient
from amigofs.api.models import from_time_ns
from amigofs.cache.index import CallIndex, started_ns
from amigofs.cache.singleflight import SingleFlight
from amigofs.fs.views import Days

# The call starts the index can hold (SQLite's integers, of ns since the epoch: the
# years 1677 to 2262): a day outside has no calls, and asks nobody.
INDEXED_NS = range(-(1 << 63), 1 << 63)
# Date-filtered pages a bound may take to settle, when the listing is not newest first.
MAX_PROBES = 3

ListPage = Callable[[str, int, dt.date | None, dt.date | None], Awaitable[CallPage]]
"""One page of a workspace's calls: (workspace, offset, date_from, date_to)."""


@dataclass(slots=True, frozen=True)
class CallSpan:
    """The instants of a workspace's oldest and newest call starts, in ns since 1970."""

    oldest_ns: int
    newest_ns: int

    def widened(self, oldest_ns: int | None, newest_ns: int | None) -> CallSpan:
        return CallSpan(
            self.oldest_ns if oldest_ns is None else min(self.oldest_ns, oldest_ns),
            self.newest_ns if newest_ns is None else max(self.newest_ns, newest_ns),
        )

    def bounds(self, days: Days) -> tuple[dt.date, dt.date]:
        """The local days of the oldest and the newest call."""
        return _local_day(days, self.oldest_ns), _local_day(days, self.newest_ns)

    def days(self, days: Days) -> Iterator[dt.date]:
        """The local days from the oldest call's to the newest call's, each once."""
        first, last = self.bounds(days)
        for n in range((last - first).days + 1):
            yield first + dt.timedelta(days=n)

    def holds(self, day: dt.date, days: Days) -> bool:
        first, last = self.bounds(days)
        return first <= day <= last


def _local_day(days: Days, ns: int) -> dt.date:
    return dt.date.fromisoformat(days.day_of(ns))


Checked = Callable[[str, Callable[[], Awaitable[CallPage]]], Awaitable[CallPage]]


def api_pages(client: PlatformClient, checked: Checked) -> ListPage:
    """List pages through `checked` (amigofs.fs.records.WorkspaceAccess: a 403 revokes)."""

    def page(
        workspace_id: str, offset: int, date_from: dt.date | None, date_to: dt.date | None
    ) -> Awaitable[CallPage]:
        return checked(
            workspace_id,
            lambda: client.list_calls_page(
                workspace_id, offset, date_from=date_from, date_to=date_to
            ),
        )

    return page


class _Unplaced(Exception):
    """The listing's ends cannot be found from a few pages: read it whole."""


def _starts(page: CallPage) -> list[int]:
    return [ns for ns in map(started_ns, page.calls) if ns is not None]


def _utc_day(ns: int, days_after: int) -> dt.date | None:
    """The UTC day `days_after` days from the one of `ns`; None past the calendar's ends."""
    day = from_time_ns(ns).date()
    try:
        return day + dt.timedelta(days=days_after)
    except OverflowError:
        return None


def _empty(page: CallPage) -> bool:
    return page.entries == 0 and not page.has_more


class DateRanges:
    """Each workspace's CallSpan, from a few list requests, kept for the listing TTL."""

    def __init__(
        self,
        page: ListPage,
        index: CallIndex,
        whole_listing: Callable[[str], Awaitable[None]],
        *,
        listing_ttl: float,
    ) -> None:
        self._page = page
        self._index = index
        self._whole_listing = whole_listing
        # None: the workspace has no call with a start to show.
        self._spans: cachetools.TTLCache[str, CallSpan | None] = cachetools.TTLCache(
            maxsize=1024, ttl=listing_ttl, timer=trio.current_time
        )
        self._flights: SingleFlight[CallSpan | None] = SingleFlight()

    async def span(self, workspace_id: str) -> CallSpan | None:
        """The workspace's span, widened by what the index holds; None: no call."""
        try:
            asked = self._spans[workspace_id]
        except KeyError:
            asked = await self._flights.run(workspace_id, lambda: self._ask(workspace_id))
            self._spans[workspace_id] = asked
        oldest = self._index.first_start_from(workspace_id, INDEXED_NS.start)
        if oldest is None:
            return asked
        # The index's newest may miss one before 1970 (it keeps at least 0): its oldest then.
        newest = max(oldest, self._index.newest_ns(workspace_id) or oldest)
        return CallSpan(oldest, newest) if asked is None else asked.widened(oldest, newest)

    def drop(self) -> None:
        """The next span is asked again (SIGHUP)."""
        self._spans.clear()

    async def _ask(self, workspace_id: str) -> CallSpan | None:
        try:
            return await self._from_ends(workspace_id)
        except _Unplaced:
            await self._whole_listing(workspace_id)
            return None  # the index, now whole, has it (see span)

    async def _from_ends(self, workspace_id: str) -> CallSpan | None:
        head = await self._page(workspace_id, 0, None, None)
        if head.total is None:
            raise _Unplaced
        if not head.has_more and head.total <= head.entries:
            # The whole listing on one page.
            starts = _starts(head)
            return CallSpan(min(starts), max(starts)) if starts else None
        starts = _starts(head)
        if not starts:
            raise _Unplaced
        tail_at = max(0, head.total - PAGE_LIMIT)
        newest = max(starts)
        tail: list[CallPage] = []

        async def read_tail() -> None:
            tail.append(await self._page(workspace_id, tail_at, None, None))

        async def settle_newest() -> None:
            nonlocal newest
            newest = await self._settled(workspace_id, newest, 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_tail)
            nursery.start_soon(settle_newest)
        tail_starts = _starts(tail[0])
        if not tail_starts:
            raise _Unplaced
        oldest = await self._settled(workspace_id, min(tail_starts), -1)
        return CallSpan(min(oldest, newest), max(oldest, newest))

    async def _settled(self, workspace_id: str, bound: int, direction: int) -> int:
        """`bound` moved until no call starts on a UTC day beyond it: `direction` 1 for
        the newest (after its day), -1 for the oldest (before its day)."""
        for _ in range(MAX_PROBES):
            beyond = _utc_day(bound, direction)
            if beyond is None:
                return bound
            after, before = (beyond, None) if direction > 0 else (None, beyond)
            probe = await self._page(workspace_id, 0, after, before)
            if _empty(probe):
                return bound
            starts = _starts(probe)
            if not starts:
                raise _Unplaced
            bound = max(starts) if direction > 0 else min(starts)
        raise _Unplaced
