"""Which pages of a workspace's call listing a sync still has to read: offset arithmetic.

A sync reads the listing page by page, by offset, many pages at once. Calls that
arrive meanwhile shift every offset of a newest-first listing: each page reports the
listing's total as it was when that page was read, and a page read after `s` new
calls arrived holds the calls that were at [offset - s, offset - s + n) when the sync
began. Every page read is kept (two reads of one offset at different totals hold
different calls), and the sync is done when those ranges cover the whole listing it
began with (`base` calls), plus the new calls at its head up to the `target` it aimed
at in a round: it aims again at the listing as last seen while it has rounds left, and
ends with the last one it covered. A listing that is oldest first grows at its tail instead, and
its offsets do not move.

The server decides how many rows a page holds (`stride`: where its continuation
token put the second page), and a page may hold fewer: a range a page left uncovered
is read in the next round, whatever the reason.

This module owns that arithmetic and the progress it works on (the pages read, as
`PageRecord`s); the sync in amigofs.fs.listing does the requests, and the call index
keeps the records on disk so that a sync cut short goes on where it stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Rounds of catching up on pages that shifted under a sync: it ends after these with the
# listing as of the last round it covered, or gives up if it covered none. A round
# without arrivals closes every gap; one with fewer arrivals than a page holds closes
# those it began with and leaves gaps no larger than those arrivals.
MAX_ROUNDS = 32
# Rounds a sync goes on for once it covers the listing as of a round's beginning, to
# take in the calls that arrived during that round: while calls arrive faster than
# rounds end, chasing them costs requests and shows nothing the next refresh won't.
CATCH_UP_ROUNDS = 2
# Pages a sync reads at most, in pages of the listing it began with and rounds: a
# listing that grows by more than a page with each request read makes every round
# larger than the last, and must not make a sync read without end.
READS_PER_PAGE = 3


@dataclass(slots=True, frozen=True)
class PageRecord:
    """One page a sync read: its offset, the places of the listing it covers, and the
    listing's total it reported."""

    offset: int
    entries: int
    total: int


@dataclass(slots=True)
class ListingProgress:
    """The pages a sync of a listing of `base` calls has read so far, all of them, the
    listing's size its current round aims to cover (`target`), and the largest it is
    known to cover (`settled`: the sync may end there)."""

    base: int
    newest_first: bool
    stride: int
    pages: list[PageRecord] = field(default_factory=list)
    target: int = 0
    settled: int | None = None  # the largest listing size the pages read cover
    _catch_up: int = 0  # rounds planned since a round's aim was covered

    @classmethod
    def of(
        cls, base: int, newest_first: bool, pages: Iterable[PageRecord], stride: int | None = None
    ) -> ListingProgress:
        """Progress from pages read (`stride`: rows a page holds, as the server pages;
        by default the most any page held)."""
        records = list(pages)
        if stride is None:
            stride = max((p.entries for p in records), default=1)
        return cls(base, newest_first, max(1, stride), records, base)

    @property
    def latest(self) -> int:
        """The listing's size as last seen."""
        return max([self.base, *(p.total for p in self.pages)])

    def landed(self, page: PageRecord) -> None:
        self.pages.append(page)

    def missing(self) -> list[int]:
        """The offsets to read so that the listing up to `target` calls is covered."""
        return missing_offsets(self.pages, self.base, self.newest_first, self.stride, self.target)

    def next_round(self) -> list[int] | None:
        """The offsets of the next round, aiming at the listing as last seen; None once
        that is covered, CATCH_UP_ROUNDS after the listing as of a round's beginning
        was, or once the sync has read all it may. Each round's aim is the size the
        listing had when it began: calls that arrive during it are the next round's,
        so a sync ends however fast calls arrive, with the listing `settled` as of the
        last round it covered (None: it covered none)."""
        if not self.missing():
            self.settled = self.target
        if self.settled is not None:
            self._catch_up += 1
        self.target = self.latest
        todo = self.missing()
        if not todo:
            self.settled = self.target
        room = self.reads_allowed - len(self.pages)
        if not todo or self._catch_up > CATCH_UP_ROUNDS or room <= 0:
            return None
        return todo[:room]

    @property
    def reads_allowed(self) -> int:
        return READS_PER_PAGE * -(-self.base // self.stride) + MAX_ROUNDS


def covered(entries: int, page_size: int) -> int:
    """How many places of the listing a page covers: a page that carries more entries
    than asked for (a broken or hostile server) still covers only its own."""
    return min(entries, page_size)


def page_stride(next_offset: int | None, entries: int, page_size: int) -> int:
    """Rows a page of the listing holds, as the server pages it: where it says the
    second page starts, else what the first held; never more than asked for."""
    rows = next_offset if next_offset is not None and next_offset > 0 else entries
    return max(1, min(rows, page_size))


def is_newest_first(starts: Sequence[dt.datetime]) -> bool:
    """Whether a page's start times (in listing order) run from the newest: a page of
    fewer than two tells nothing, and newest first is what the API does."""
    return len(starts) < 2 or starts[0] >= starts[-1]


def missing_offsets(
    pages: Sequence[PageRecord],
    base: int,
    newest_first: bool,
    page_size: int,
    target: int | None = None,
) -> list[int]:
    """Offsets still to read so that the pages read cover the listing a sync began
    with (`base` calls) and the calls added since, up to `target` calls in all (by
    default as many as the latest page reported); see the module's docstring."""
    latest = max([base, *(p.total for p in pages)])
    target = latest if target is None else min(max(target, base), latest)
    added = latest - base
    if newest_first:
        # Each page's range in the numbering of when the sync began; new calls at
        # negative positions, before the first.
        ranges = sorted((p.offset - (p.total - base), p.entries) for p in pages)
        want_start, want_end, shift = -(target - base), base, added
    else:
        ranges = sorted((p.offset, p.entries) for p in pages)
        want_start, want_end, shift = 0, target, 0
    gaps: list[tuple[int, int]] = []
    position = want_start
    for start, length in ranges:
        if start > position:
            gaps.append((position, min(start, want_end)))
        position = max(position, start + length)
        if position >= want_end:
            break
    if position < want_end:
        gaps.append((position, want_end))
    offsets: list[int] = []
    for start, end in gaps:
        # Where those calls are now: `shift` places further down a newest-first listing.
        first = max(0, start + shift)
        offsets.extend(range(first, end + shift, page_size))
    return sorted(set(offsets))


def next_refresh_offset(
    *,
    offset: int,
    entries: int,
    has_more: bool,
    total: int | None,
    newest_first: bool,
    all_known: bool,
    listed: int,
    page_size: int,
    next_offset: int | None = None,
) -> int | None:
    """Where a refresh of a synced listing reads next after the page at `offset`; None
    when it has seen everything new. Newest first: pages from the head, each where the
    server said the last one ended, until one whose calls are all known. Oldest first:
    new calls are at the tail (`listed` calls are indexed), so it skips there."""
    if not has_more or not entries:
        return None
    following = next_offset if next_offset is not None and next_offset > offset else None
    if newest_first:
        return None if all_known else (following or offset + entries)
    following = max(following or offset + entries, listed - page_size)
    return None if following >= (total or 0) else following
