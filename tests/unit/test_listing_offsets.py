"""The listing's offset arithmetic (amigofs.policy.listing) against a listing served from
memory: which calls a sync ends up with, in how many rounds and requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from amigofs.policy.listing import (
    MAX_ROUNDS,
    ListingProgress,
    PageRecord,
    covered,
    is_newest_first,
    missing_offsets,
    next_refresh_offset,
    page_stride,
)

PAGE = 10  # small pages: the arithmetic is the same as at the API's 100


@dataclass(slots=True)
class Listing:
    """A workspace's listing as the API pages it: newest first, new calls at the head;
    or oldest first, new calls at the tail. `rows`: the most a page holds (a server
    that sends fewer than asked for)."""

    newest_first: bool
    sids: list[str] = field(default_factory=list)
    made: int = 0
    rows: int = PAGE

    def arrive(self, count: int) -> None:
        new = [f"CA{self.made + i:06d}" for i in range(count)]
        self.made += count
        self.sids = new[::-1] + self.sids if self.newest_first else self.sids + new

    def page(self, offset: int) -> tuple[list[str], int]:
        return self.sids[offset : offset + min(PAGE, self.rows)], len(self.sids)


@dataclass(slots=True)
class Outcome:
    listed: list[str]  # every call of every page read, in order
    complete: bool  # False: the sync gave up after MAX_ROUNDS
    requests: int
    rounds: int
    seen: int = 0  # the listing's size as of the last round the sync covered


def sync(
    listing: Listing,
    arrivals: Callable[[int], int] = lambda request: 0,
    order: Callable[[list[int]], list[int]] = lambda offsets: offsets,
) -> Outcome:
    """What amigofs.fs.listing.WorkspaceSync does, with the requests served from memory:
    the first page, then rounds of the missing offsets, the pages of a round read in the
    `order` given (as pages in flight land in any order). `arrivals(n)` calls arrive
    just before request n (0 is the first page)."""
    outcome = Outcome([], False, 0, 0)

    def read(offset: int) -> PageRecord:
        listing.arrive(arrivals(outcome.requests))
        outcome.requests += 1
        calls, total = listing.page(offset)
        outcome.listed.extend(calls)
        return PageRecord(offset, covered(len(calls), PAGE), total)

    first = read(0)
    stride = page_stride(min(PAGE, listing.rows), first.entries, PAGE)
    progress = ListingProgress.of(first.total, listing.newest_first, [first], stride)
    for outcome.rounds in range(MAX_ROUNDS + 1):
        todo = progress.next_round()
        if todo is None or outcome.rounds == MAX_ROUNDS:
            break
        for record in [read(offset) for offset in order(todo)]:
            progress.landed(record)
    outcome.complete = progress.settled is not None
    outcome.seen = progress.settled or 0
    return outcome


def listing_of(calls: int, newest_first: bool, rows: int = PAGE) -> Listing:
    listing = Listing(newest_first, rows=rows)
    listing.arrive(calls)
    return listing


def assert_every_call_listed(outcome: Outcome, listing: Listing) -> None:
    """Every call of the listing as of the last round the sync covered is read (those
    that arrived later may be too; the index keeps each call once)."""
    assert outcome.complete, f"gave up after {outcome.requests} requests"
    if listing.newest_first:
        arrived_late = set(listing.sids[: len(listing.sids) - outcome.seen])
    else:
        arrived_late = set(listing.sids[outcome.seen :])
    assert set(listing.sids) - arrived_late <= set(outcome.listed)


@given(st.integers(0, 300), st.booleans())
def test_a_still_listing_is_read_in_one_round_each_page_once(
    calls: int, newest_first: bool
) -> None:
    listing = listing_of(calls, newest_first)
    outcome = sync(listing)
    assert outcome.complete
    assert outcome.listed == listing.sids  # every call, once, none skipped
    assert outcome.requests == max(1, -(-calls // PAGE))
    assert outcome.rounds <= 1


@given(st.integers(0, 300), st.booleans(), st.integers(1, PAGE - 1))
def test_pages_shorter_than_asked_for_are_followed_to_the_end(
    calls: int, newest_first: bool, rows: int
) -> None:
    # A server that sends `rows` a page for a limit of PAGE: its continuation token
    # says so, and the sync pages by it, still in one round.
    listing = listing_of(calls, newest_first, rows)
    outcome = sync(listing)
    assert outcome.complete
    assert outcome.listed == listing.sids
    assert outcome.rounds <= 1


@given(st.integers(1, 300), st.integers(1, 250), st.integers(1, 40))
def test_calls_arriving_at_the_tail_of_an_oldest_first_listing_are_all_listed(
    calls: int, arrived: int, before_request: int
) -> None:
    listing = listing_of(calls, newest_first=False)
    outcome = sync(listing, lambda n: arrived if n == before_request else 0)
    assert_every_call_listed(outcome, listing)


@given(st.integers(1, 300), st.integers(1, 250))
def test_a_burst_after_the_first_page_of_a_newest_first_listing_is_listed(
    calls: int, arrived: int
) -> None:
    # The burst shifts every page after the first: those are all read shifted, and
    # the new calls at the head are read in the next round if the shift left a gap
    # (else at the next refresh).
    listing = listing_of(calls, newest_first=True)
    outcome = sync(listing, lambda n: arrived if n == 1 else 0)
    assert_every_call_listed(outcome, listing)


@settings(derandomize=True)
@given(st.integers(3 * PAGE, 300), st.integers(1, 250), st.integers(2, 30))
def test_calls_arriving_during_a_newest_first_listing_are_all_listed(
    calls: int, arrived: int, before_request: int
) -> None:
    listing = listing_of(calls, newest_first=True)
    outcome = sync(listing, lambda n: arrived if n == before_request else 0)
    assert_every_call_listed(outcome, listing)


@settings(max_examples=300)
@given(st.integers(0, 400), st.booleans(), st.integers(1, PAGE), st.data())
def test_any_arrivals_in_any_page_order_list_every_call(
    calls: int, newest_first: bool, rows: int, data: st.DataObject
) -> None:
    # Up to a page of arrivals before each of the first requests, the pages of each
    # round landing in any order, pages of any length the server likes: every call the
    # listing held as of the last round the sync covered is read.
    listing = listing_of(calls, newest_first, rows)
    schedule = data.draw(st.lists(st.integers(0, rows), max_size=MAX_ROUNDS - 4))

    def arrivals(request: int) -> int:
        return schedule[request] if request < len(schedule) else 0

    def order(offsets: list[int]) -> list[int]:
        return list(data.draw(st.permutations(offsets)))

    outcome = sync(listing, arrivals, order)
    assert_every_call_listed(outcome, listing)


def test_a_sync_cut_short_reads_only_the_pages_it_lacks() -> None:
    read = [PageRecord(offset, PAGE, 95) for offset in (0, 10, 20, 50)]
    assert missing_offsets(read, 95, True, PAGE) == [30, 40, 60, 70, 80, 90]
    assert missing_offsets(read, 95, False, PAGE) == [30, 40, 60, 70, 80, 90]


def test_pages_read_after_arrivals_are_placed_where_their_calls_were() -> None:
    # 5 calls arrived after the first page: page 20 then held what was at 15..25.
    read = [PageRecord(0, PAGE, 50), PageRecord(20, PAGE, 55)]
    # Missing, in the first page's numbering: the 5 new calls (-5..0) and 10..15,
    # 25..50; where those are now: 5 places further down.
    assert missing_offsets(read, 50, True, PAGE) == [0, 15, 30, 40, 50]
    # Oldest first, offsets do not move: the 5 new ones are at 50..55.
    assert missing_offsets(read, 50, False, PAGE) == [10, 30, 40, 50]


def test_a_page_with_more_entries_than_asked_covers_only_its_own() -> None:
    assert covered(250, PAGE) == PAGE
    assert covered(3, PAGE) == 3
    assert missing_offsets([PageRecord(0, covered(250, PAGE), 30)], 30, True, PAGE) == [10, 20]


def test_the_order_of_a_listing_is_read_off_its_first_page() -> None:
    day = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    assert is_newest_first([day + hour, day])
    assert not is_newest_first([day, day + hour])
    assert is_newest_first([day])  # too few to tell: the API's order
    assert is_newest_first([])


def refresh(listing: Listing, known: set[str]) -> list[int]:
    """The offsets a refresh of a synced listing reads (as WorkspaceSync._refresh)."""
    offsets, offset, listed = [], 0, len(known)
    while True:
        offsets.append(offset)
        calls, total = listing.page(offset)
        following = next_refresh_offset(
            offset=offset, entries=len(calls), has_more=offset + PAGE < total, total=total,
            newest_first=listing.newest_first, all_known=set(calls) <= known,
            listed=listed, page_size=PAGE,
        )  # fmt: skip
        if following is None:
            return offsets
        known.update(calls)
        offset = following


@given(st.integers(1, 200), st.integers(0, 60))
def test_a_newest_first_refresh_reads_from_the_head_until_a_page_is_all_known(
    calls: int, new: int
) -> None:
    listing = listing_of(calls, newest_first=True)
    known = set(listing.sids)
    listing.arrive(new)
    offsets = refresh(listing, known)
    assert offsets == list(range(0, PAGE * len(offsets), PAGE))
    # Every new call read, and then one page of known calls at most.
    assert set(listing.sids[: PAGE * len(offsets)]) >= set(listing.sids[:new])
    assert len(offsets) <= new // PAGE + 2


@given(st.integers(1, 200), st.integers(0, 60))
def test_an_oldest_first_refresh_skips_to_the_tail(calls: int, new: int) -> None:
    listing = listing_of(calls, newest_first=False)
    known = set(listing.sids)
    listing.arrive(new)
    offsets = refresh(listing, known)
    read = {sid for offset in offsets for sid in listing.page(offset)[0]}
    assert set(listing.sids[calls:]) <= read
    # The first page, then from a page before the tail on.
    assert len(offsets) <= 1 + (new + PAGE) // PAGE + 1
