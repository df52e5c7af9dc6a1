"""How far into a file walk prefetch fetches ahead (amigofs.fs.walk.READ_REACH): no
further than the walk has shown its reader reads. `file` over a workspace reads short
calls whole and long ones only at their ends; the long calls ahead of such a walk are
fetched only as far as the short files it read, not whole."""

from __future__ import annotations

import trio
import trio.testing

from amigofs.cache.index import CallIndex
from amigofs.fs.records import INBOUND, OUTBOUND
from amigofs.fs.walk import CALLS_AHEAD, READ_REACH
from tests.unit.test_walk_ahead import BY_NAME, STORED, WS, _Fetcher, index

__all__ = ["index"]  # the fixture, from the walk-ahead tests

SHORT = STORED // 10
BOTH = (INBOUND, OUTBOUND)

# One part of a walk: these calls' files read whole, as `size` bytes each, in name order.
Part = tuple[list[str], int, tuple[str, ...]]


async def _walked(index: CallIndex, *parts: Part, ended: bool = False) -> _Fetcher:
    """A walk of these parts (then ended, as the namespace ends it when a file is read in
    part and closed); what it fetched ahead."""
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery)
        for calls, size, names in parts:
            for sid in calls:
                for name in names:
                    fetcher.walk.read_whole(WS, sid, name, size)
                    await trio.testing.wait_all_tasks_blocked()
        if ended:
            fetcher.walk.interleaved(WS)
    return fetcher


def _lengths(fetcher: _Fetcher) -> set[int]:
    return {length for _, _, length in fetcher.fetched}


async def test_files_ahead_are_fetched_no_further_than_twice_the_largest_read_whole(
    index: CallIndex,
) -> None:
    fetcher = await _walked(index, (BY_NAME[:3], SHORT, BOTH))
    assert fetcher.calls() == set(BY_NAME[2 : 3 + CALLS_AHEAD])
    assert _lengths(fetcher) == {READ_REACH * SHORT}


async def test_a_walk_that_read_files_half_as_long_as_those_ahead_fetches_them_whole(
    index: CallIndex,
) -> None:
    fetcher = await _walked(index, (BY_NAME[:3], STORED // READ_REACH, BOTH))
    assert _lengths(fetcher) == {STORED}


async def test_a_long_file_read_whole_in_a_call_read_in_part_widens_nothing(
    index: CallIndex,
) -> None:
    # `file` on a long call after short ones: its inbound.wav's two ends meet (a whole
    # read), its outbound.wav is read in part and closed.
    fetcher = await _walked(
        index, (BY_NAME[:2], SHORT, BOTH), (BY_NAME[2:3], STORED, (INBOUND,)), ended=True
    )
    assert BY_NAME[2 + CALLS_AHEAD] in fetcher.calls()  # the window moved on
    assert _lengths(fetcher) == {READ_REACH * SHORT}
