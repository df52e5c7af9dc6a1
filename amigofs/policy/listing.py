"""Which pages of a workspace's call listing a sync still has to read: offset arithmetic.

A sync reads the listing page by page, by offset, many pages at once. Calls that
arrive meanwhile shift every offset of a newest-first listing: each page reports the
listing's total as it was when that page was read, and a page read after `s` new
calls arrived holds the calls that were at [offset - s, offset - s + n) when the sync
began. The sync is done when those ranges cover the whole listing it began with
(`base` calls), plus the new calls at its head. A listing that is oldest first grows
at its tail instead, and its offsets do not move.

This module owns that arithmetic and the progress it works on (the pages read, as
`PageRecord`s); the sync in amigofs.fs.listing does the requests, and the call index
keeps the records on disk so that a sync cut short goes on where it stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Rounds of catching up on pages that shifted under a sync before it gives up.
MAX_ROUNDS = 8


@dataclass(slots=True, frozen=True)
class PageRecord:
    """One page a sync read: its offset, the places of the listing it covers, and the
    listing's total it reported."""

    offset: int
    entries: int
    total: int


@dataclass(slots=True)
class ListingProgress:
    """The pages a sync of a listing of `base` calls has read so far, by offset (a page
    read again at the same offset replaces the earlier one)."""

    base: int
    newest_first: bool
    pages: dict[int, PageRecord] = field(default_factory=dict)

    @classmethod
    def of(cls, base: int, newest_first: bool, pages: Iterable[PageRecord]) -> ListingProgress:
        return cls(base, newest_first, {p.offset: p for p in pages})

    def landed(self, page: PageRecord) -> None:
        self.pages[page.offset] = page

    def missing(self, page_size: int) -> list[int]:
        """The offsets to read next; none once the listing is covered."""
        return missing_offsets(list(self.pages.values()), self.base, self.newest_first, page_size)


def covered(entries: int, page_size: int) -> int:
    """How many places of the listing a page covers: a page that carries more entries
    than asked for (a broken or hostile server) still covers only its own."""
    return min(entries, page_size)


def is_newest_first(starts: Sequence[dt.datetime]) -> bool:
    """Whether a page's start times (in listing order) run from the newest: a page of
    fewer than two tells nothing, and newest first is what the API does."""
    return len(starts) < 2 or starts[0] >= starts[-1]


def missing_offsets(
    pages: Sequence[PageRecord], base: int, newest_first: bool, page_size: int
) -> list[int]:
    """Offsets still to read so that the pages read cover the listing a sync began
    with (`base` calls) and the calls added since (see the module's docstring)."""
    latest = max([base, *(p.total for p in pages)])
    added = latest - base
    if newest_first:
        # Each page's range in the numbering of when the sync began; new calls at
        # negative positions, before the first.
        ranges = sorted((p.offset - (p.total - base), p.entries) for p in pages)
        want_start, want_end, shift = -added, base, added
    else:
        ranges = sorted((p.offset, p.entries) for p in pages)
        want_start, want_end, shift = 0, latest, 0
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
) -> int | None:
    """Where a refresh of a synced listing reads next after the page at `offset`; None
    when it has seen everything new. Newest first: pages from the head until one whose
    calls are all known. Oldest first: new calls are at the tail (`listed` calls are
    indexed), so it skips there."""
    if not has_more or not entries:
        return None
    if newest_first:
        return None if all_known else offset + entries
    following = max(offset + entries, listed - page_size)
    return None if following >= (total or 0) else following
