"""Records loaded ahead of a walk (amigofs.fs.walk.RecordsAhead) in the walker's own
order, as many at once as the cap allows and no more, stopping with the walker; the
policy behind it (amigofs.policy.walk: AheadLimit, UnlistedWalk). Against a real call
index in a temporary directory and a loader that holds its loads until released."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from amigofs.api.models import CallSummary
from amigofs.api.stats import ClientStats
from amigofs.cache.index import CallIndex
from amigofs.config import parse_records_in_flight
from amigofs.fs.walk import RecordsAhead, rate_limited
from amigofs.policy.walk import FIRST_AHEAD, UNLISTED_WALK_STEPS, AheadLimit, UnlistedWalk

WS = "ws_order"
START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
# Listed in this order (row ids); SIDs a permutation, so name order differs.
LISTING = [f"CA{(i * 37) % 120:03d}" for i in range(120)]
BY_NAME = sorted(LISTING)
CAP = 8


def _summaries(sids: list[str]) -> list[CallSummary]:
    return [
        CallSummary(WS, sid, START + dt.timedelta(minutes=i), 60.0, "inbound")
        for i, sid in enumerate(sids)
    ]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[CallIndex]:
    index = CallIndex(tmp_path)
    index.open()
    index.add(WS, _summaries(LISTING))
    yield index
    index.close()


@pytest.fixture
def empty_index(tmp_path: Path) -> Iterator[CallIndex]:
    index = CallIndex(tmp_path)
    index.open()
    yield index
    index.close()


class _Loader:
    """Loads held until released, so that what is in flight at once can be seen."""

    def __init__(self, index: CallIndex, nursery: trio.Nursery, cap: int = CAP) -> None:
        self.started: list[str] = []
        self.kept: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = trio.Event()
        self.listed: list[str] = []
        self.throttles = 0
        self.ahead = RecordsAhead(
            index,
            self.load,
            lambda ws, sid: sid in self.kept,
            nursery,
            in_flight=cap,
            list_workspace=self.listed.append,
            rate_limited=lambda: self.throttles,
        )

    async def load(self, workspace_id: str, call_sid: str) -> object:
        self.started.append(call_sid)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        self.kept.add(call_sid)
        return call_sid

    async def visit(self, *sids: str) -> None:
        for sid in sids:
            self.ahead.visit(WS, sid)
            await trio.testing.wait_all_tasks_blocked()

    async def finish(self) -> None:
        """Lets every load in flight end; loads started later are held again."""
        self.release.set()
        await trio.testing.wait_all_tasks_blocked()
        self.release = trio.Event()


async def test_the_next_calls_in_the_walkers_order_are_loaded_the_cap_at_once(
    index: CallIndex,
) -> None:
    for order in (LISTING, BY_NAME):  # find's order (readdir's), rsync's (sorted)
        async with trio.open_nursery() as nursery:
            loader = _Loader(index, nursery)
            await loader.visit(*order[:3])
            # A few at first: a server that takes fewer is not sent the whole cap.
            assert sorted(loader.started) == sorted(order[3 : 3 + FIRST_AHEAD])
            # The walker goes on while the loads are slow: nothing more starts until
            # some end.
            await loader.visit(*order[3:20])
            assert loader.in_flight == FIRST_AHEAD and len(loader.started) == FIRST_AHEAD
            # Each that ended well lets one more start: twice as many, up to the cap,
            # within the cap past the walker's last call.
            await loader.finish()
            await loader.visit(order[20])
            assert sorted(loader.started[FIRST_AHEAD:]) == sorted(order[21 : 21 + CAP])
            assert loader.in_flight == loader.most_in_flight == CAP
            nursery.cancel_scope.cancel()


async def test_a_walker_that_stops_costs_at_most_the_cap(index: CallIndex) -> None:
    async with trio.open_nursery() as nursery:
        loader = _Loader(index, nursery)
        for position in range(3, 12):
            await loader.visit(BY_NAME[position])
            await loader.finish()
        started = list(loader.started)
        assert started and max(map(BY_NAME.index, started)) <= 11 + CAP
        # Its files looked at again and again, a call already passed: no step, no load,
        # though loads have ended and there would be room for more.
        await loader.visit(BY_NAME[11], BY_NAME[11], BY_NAME[10])
        await loader.finish()
        assert loader.started == started


async def test_a_jump_out_of_order_starts_nothing(index: CallIndex) -> None:
    async with trio.open_nursery() as nursery:
        loader = _Loader(index, nursery)
        await loader.visit(*BY_NAME[:3])
        await loader.finish()
        before = list(loader.started)
        await loader.visit(BY_NAME[90], BY_NAME[40], BY_NAME[70])
        assert loader.started == before


async def test_a_429_halves_the_loads_at_once_and_loads_that_end_well_bring_them_back(
    index: CallIndex,
) -> None:
    async with trio.open_nursery() as nursery:
        loader = _Loader(index, nursery)
        loader.throttles = 1  # the API answered 429 (to anyone) before the walk went on
        await loader.visit(*BY_NAME[:3])
        assert loader.in_flight == FIRST_AHEAD // 2
        # As many as the limit ended well (a round trip): one more at once.
        await loader.finish()
        await loader.visit(*BY_NAME[3:7])
        assert loader.in_flight == FIRST_AHEAD // 2 + 1
        nursery.cancel_scope.cancel()


async def test_calls_not_listed_entered_in_name_order_have_their_workspace_listed(
    empty_index: CallIndex,
) -> None:
    async with trio.open_nursery() as nursery:
        loader = _Loader(empty_index, nursery)
        # A few calls, or many out of order (a list not sorted): no listing.
        await loader.visit(*BY_NAME[:UNLISTED_WALK_STEPS])
        await loader.visit(*LISTING[:40])
        assert loader.listed == []
        await loader.visit(*BY_NAME[: UNLISTED_WALK_STEPS + 1])
        assert set(loader.listed) == {WS}
        assert loader.started == []  # nothing known to load ahead yet
        # Once listed, the calls after the walker are known: loaded in name order.
        empty_index.add(WS, _summaries(LISTING))
        await loader.visit(*BY_NAME[UNLISTED_WALK_STEPS + 1 : UNLISTED_WALK_STEPS + 4])
        after = UNLISTED_WALK_STEPS + 4
        assert sorted(loader.started) == BY_NAME[after : after + FIRST_AHEAD]
        nursery.cancel_scope.cancel()


def test_the_429_answers_of_a_client_are_counted_whatever_the_operation() -> None:
    stats = ClientStats()
    stats.finished["get-recording-metadata", "429"] += 3
    stats.finished["list-calls", "429"] += 1
    stats.finished["get-recording-metadata", "200"] += 9
    assert rate_limited(stats) == 4


# --- the policy --------------------------------------------------------------------


@given(st.integers(0, 300), st.lists(st.booleans(), max_size=200), st.integers(0, 400))
def test_loads_at_once_stay_between_one_and_the_cap(
    cap: int, answers: list[bool], in_flight: int
) -> None:
    limit = AheadLimit(cap)
    for throttled in answers:
        if throttled:
            limit.throttled()
        else:
            limit.succeeded()
        assert min(1, cap) <= limit.limit <= cap
        assert 0 <= limit.room(in_flight) <= limit.limit
    # Once the API stops answering 429, the cap comes back (one more a round trip).
    for _ in range(cap * cap):
        limit.succeeded()
    assert limit.limit == cap


@given(st.lists(st.integers(0, 10_000), unique=True, min_size=1, max_size=60))
def test_an_unlisted_walk_is_names_in_sorted_order_long_enough(numbers: list[int]) -> None:
    sids = [f"CA{n:05d}" for n in numbers]
    walk = UnlistedWalk()
    said = [walk.step(sid) for sid in sorted(sids)]
    assert said == [i >= UNLISTED_WALK_STEPS for i in range(len(sids))]
    # The same call again is no step; one out of order begins the count again.
    assert walk.step(max(sids)) == said[-1]
    if len(sids) > 1:
        assert walk.step(min(sids)) is False


def test_the_cap_is_a_whole_number_from_0_to_256() -> None:
    assert [parse_records_in_flight(v) for v in (0, 32, "64", " 256 ")] == [0, 32, 64, 256]
    for wrong in (-1, 257, "many", "8.5", 8.0, True):
        with pytest.raises(ValueError, match="whole number from 0 to 256"):
            parse_records_in_flight(wrong)
