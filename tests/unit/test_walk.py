"""Walk detection (amigofs.policy.walk): files read whole, and walks through calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from amigofs.policy.walk import (
    BYTES_WALK,
    MAX_PENDING_RANGES,
    NEXT_CALLS,
    RECORDS_WALK,
    Order,
    Walk,
    WalkRule,
    WholeRead,
)

# --- WholeRead -------------------------------------------------------------------


@st.composite
def _split(draw: st.DrawFn, max_ranges: int = 120) -> tuple[int, list[tuple[int, int]]]:
    """A file size and [0, size) cut into ranges; the last may ask past the end (a
    read of a whole page)."""
    cuts = draw(st.lists(st.integers(1, 1 << 20), min_size=1, max_size=max_ranges))
    ranges, offset = [], 0
    for length in cuts:
        ranges.append((offset, offset + length))
        offset += length
    past_end = draw(st.integers(0, 4096))
    size = offset
    ranges[-1] = (ranges[-1][0], size + past_end)
    return size, ranges


@st.composite
def _disordered(draw: st.DrawFn, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges as the kernel's readahead sends them: in order but for shuffles
    within runs short enough to leave fewer than MAX_PENDING_RANGES gaps open."""
    run = draw(st.integers(1, MAX_PENDING_RANGES))
    out: list[tuple[int, int]] = []
    for start in range(0, len(ranges), run):
        out += draw(st.permutations(ranges[start : start + run]))
    return out


def _covered(reads: Sequence[tuple[int, int]], size: int) -> bool:
    frontier = 0
    for offset, end in sorted(reads):
        if offset > frontier:
            return False
        frontier = max(frontier, end)
    return frontier >= size


@given(st.data())
def test_a_file_read_in_any_split_and_readahead_order_is_whole_once_when_covered(
    data: st.DataObject,
) -> None:
    size, ranges = data.draw(_split())
    reads = data.draw(_disordered(ranges))
    whole = WholeRead(size)
    whole.begin()
    reports = []
    for i, (offset, end) in enumerate(reads):
        reports.append(whole.on_read(offset, end))
        # Whole exactly when the reads so far first cover the file.
        assert reports[-1] == (_covered(reads[: i + 1], size) and not _covered(reads[:i], size))
        assert whole.in_progress == (not _covered(reads[: i + 1], size))
    assert reports.count(True) == 1
    assert not whole.on_read(0, size)  # read again: no second report


@given(st.data())
def test_a_read_with_a_gap_is_never_whole(data: st.DataObject) -> None:
    size, ranges = data.draw(_split(max_ranges=60).filter(lambda split: len(split[1]) >= 2))
    missing = data.draw(st.integers(0, len(ranges) - 1))
    reads = data.draw(_disordered(ranges[:missing] + ranges[missing + 1 :]))
    whole = WholeRead(size)
    whole.begin()
    assert not any(whole.on_read(offset, end) for offset, end in reads)
    assert whole.in_progress


@given(st.integers(MAX_PENDING_RANGES + 2, 200))
def test_reads_too_scattered_stop_counting_even_once_the_gaps_fill(count: int) -> None:
    # Backwards, block by block: more gaps open at once than readahead ever leaves.
    whole = WholeRead(count * 4096)
    reads = [(i * 4096, (i + 1) * 4096) for i in reversed(range(count))]
    assert not any(whole.on_read(offset, end) for offset, end in reads)
    assert not whole.on_read(0, count * 4096)


def test_a_file_is_in_progress_from_its_first_read_asked_until_whole() -> None:
    whole = WholeRead(100)
    assert not whole.in_progress  # opened, nothing asked yet
    whole.begin()
    assert whole.in_progress  # asked, its bytes not yet here
    assert whole.on_read(0, 100)
    assert not whole.in_progress


def test_an_empty_file_is_never_being_read_nor_reported() -> None:
    whole = WholeRead(0)
    whole.begin()
    assert not whole.in_progress
    assert not whole.on_read(0, 4096)


# --- Walk --------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class _Call:
    row_id: int
    call_sid: str


# Listing order (row ids) and name order (SIDs) differ: SIDs are a permutation.
_CALLS = [_Call(i, f"CA{(i * 37) % 64:02d}") for i in range(64)]
_BY_NAME = sorted(_CALLS, key=lambda c: c.call_sid)
_ORDERED: dict[Order, list[_Call]] = {"listing": _CALLS, "name": _BY_NAME}


def _after(order: Order, call: _Call, n: int) -> list[_Call]:
    calls = _ORDERED[order]
    i = calls.index(call)
    return calls[i + 1 : i + 1 + n]


def _next_in(order: Order, a: _Call, b: _Call) -> bool:
    return b in _after(order, a, NEXT_CALLS)


RULES = st.sampled_from([RECORDS_WALK, BYTES_WALK])
ORDERS = st.sampled_from(["listing", "name"])


@given(
    RULES,
    ORDERS,
    st.integers(0, 40),
    st.lists(st.integers(1, NEXT_CALLS), min_size=2, max_size=10),
)
def test_a_reader_stepping_through_calls_in_one_order_is_a_walk_after_two_steps(
    rule: WalkRule, order: Order, start: int, strides: list[int]
) -> None:
    calls = _ORDERED[order]
    walk: Walk[_Call] = Walk(rule, _after)
    position = start
    assert walk.step(calls[position], "inbound.wav") == "start"
    for steps, stride in enumerate(strides, 1):
        position += stride
        assert walk.step(calls[position], "inbound.wav") == order
        assert walk.walking == (order if steps >= 2 else None)
    # Ahead: the calls after the reader, in its order.
    assert walk.ahead(5) == calls[position + 1 : position + 6]


@given(RULES, st.lists(st.integers(0, len(_CALLS) - 1), min_size=1, max_size=30))
def test_a_walk_is_two_steps_to_the_next_calls_in_its_order(
    rule: WalkRule, positions: list[int]
) -> None:
    """Whatever the reader does, a walk is only ever declared behind two steps in its
    order (for calls entered, two to a next call)."""
    walk: Walk[_Call] = Walk(rule, _after)
    seen: list[_Call] = []
    for p in positions:
        call = _CALLS[p]
        if walk.step(call) == "same":
            continue
        seen.append(call)
        order = walk.walking
        if order is None:
            assert walk.ahead(4) == []
            continue
        assert len(seen) >= 3
        assert _next_in(order, seen[-2], seen[-1])
        assert _next_in(order, seen[-3], seen[-2])
        assert walk.ahead(4) == _after(order, call, 4)


@given(RULES, st.integers(0, 10))
def test_a_reader_jumping_further_than_the_next_calls_is_no_walk(
    rule: WalkRule, start: int
) -> None:
    # Every third call in listing order: neither the next in listing nor in name order.
    jumps = _CALLS[start :: NEXT_CALLS + 1]
    assert not any(_next_in(o, a, b) for a, b in pairwise(jumps) for o in _ORDERED)
    walk: Walk[_Call] = Walk(rule, _after)
    for call in jumps:
        assert walk.step(call) == "start"
        assert walk.walking is None


@given(RULES, ORDERS)
def test_a_step_out_of_order_ends_the_walk(rule: WalkRule, order: Order) -> None:
    calls = _ORDERED[order]
    walk: Walk[_Call] = Walk(rule, _after)
    for call in calls[:3]:
        walk.step(call)
    assert walk.walking == order
    assert walk.step(calls[40]) == "start"
    assert walk.walking is None
    assert walk.ahead(8) == []
    walk.step(calls[41])
    assert walk.walking is None  # one step from there: not yet a walk again
    walk.step(calls[42])
    assert walk.walking == order


def test_the_same_call_again_is_no_step_for_calls_entered() -> None:
    walk: Walk[_Call] = Walk(RECORDS_WALK, _after)
    a, b, c = _CALLS[:3]
    assert [walk.step(x) for x in (a, a, b, b, b, c)] == [
        "start", "same", "listing", "same", "same", "listing"
    ]  # fmt: skip
    assert walk.walking == "listing"
    assert walk.step(c) == "same"
    assert walk.walking == "listing"  # its files being looked at end nothing


def test_for_whole_reads_a_later_file_of_the_same_call_is_a_step_an_earlier_one_no_walk() -> None:
    walk: Walk[_Call] = Walk(BYTES_WALK, _after)
    a, b = _BY_NAME[:2]
    assert walk.step(a, "inbound.wav") == "start"
    assert walk.step(a, "outbound.wav") == "file"
    assert walk.walking is None  # two files of one call: no order yet
    assert walk.step(b, "inbound.wav") == "name"
    assert walk.walking == "name"  # two steps, one to the next call
    assert walk.step(b, "inbound.wav") == "start"  # the same file again
    assert walk.walking is None
    walk.step(b, "outbound.wav")
    assert walk.walking is None  # only files of one call since: order unknown


def test_the_rules_differ_on_a_step_in_the_other_order() -> None:
    """Calls entered: a step in the other order starts a count in that order; files
    read whole: it ends the walk, and the count starts from the call it reached."""
    # a -> b is a step in listing order only, b -> c and c -> d in name order only.
    b = _CALLS[10]
    c = _after("name", b, 1)[0]
    d = _after("name", c, 1)[0]
    a = _CALLS[9]
    assert not _next_in("name", a, b) and not _next_in("listing", b, c)
    assert not _next_in("listing", c, d)
    records: Walk[_Call] = Walk(RECORDS_WALK, _after)
    files: Walk[_Call] = Walk(BYTES_WALK, _after)
    assert [records.step(x) for x in (a, b, c)] == ["start", "listing", "name"]
    assert [files.step(x, "outbound.wav") for x in (a, b, c)] == ["start", "listing", "start"]
    assert records.walking is None  # one step in each order: no walk yet
    records.step(d)
    files.step(d, "outbound.wav")
    assert records.walking == "name"
    assert files.walking is None
    files.step(_after("name", d, 1)[0], "outbound.wav")
    assert files.walking == "name"


def test_a_call_skipped_goes_on_with_the_walk() -> None:
    walk: Walk[_Call] = Walk(RECORDS_WALK, _after)
    for call in (_CALLS[0], _CALLS[2], _CALLS[4]):  # each skips one
        walk.step(call)
    assert walk.walking == "listing"
