"""How far into a file walk prefetch fetches ahead (amigofs.fs.walk): no further than
the walk has shown its reader reads, the largest file read whole in the calls it has
passed, or its least reach (7 MiB, what `file` reads of a file's start) if more. `file`
over a workspace reads short calls whole and long ones only at their ends; the long
calls ahead of such a walk are fetched only that far, not whole."""

from __future__ import annotations

import trio
import trio.testing

from amigofs.cache.index import CallIndex
from amigofs.fs.records import INBOUND, OUTBOUND
from amigofs.fs.walk import CALLS_AHEAD, WalkPrefetch
from amigofs.policy.readahead import LARGE_READ
from tests.unit.test_walk_ahead import BY_NAME, STORED, WS, _Fetcher, index

__all__ = ["index"]  # the fixture, from the walk-ahead tests

SHORT = STORED // 10
LEAST = STORED // 5  # the least reach here: files are of STORED bytes, not MiB
BOTH = (INBOUND, OUTBOUND)

# One part of a walk: these calls' files read whole, as `size` bytes each, in name order.
Part = tuple[list[str], int, tuple[str, ...]]


async def _walked(
    index: CallIndex, *parts: Part, ended: bool = False, least: int = LEAST
) -> _Fetcher:
    """A walk of these parts (then ended, as the namespace ends it when a file is read in
    part and closed); what it fetched ahead."""
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery)
        fetcher.walk = WalkPrefetch(
            index, fetcher.load, fetcher.prefetch, nursery, room=lambda: 1 << 30,
            least_reach=least,
        )  # fmt: skip
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


async def test_after_short_files_the_files_ahead_are_fetched_only_as_far_as_the_least_reach(
    index: CallIndex,
) -> None:
    fetcher = await _walked(index, (BY_NAME[:3], SHORT, BOTH))
    assert fetcher.calls() == set(BY_NAME[2 : 3 + CALLS_AHEAD])
    assert _lengths(fetcher) == {LEAST}


async def test_after_files_longer_than_the_least_reach_as_far_as_the_longest(
    index: CallIndex,
) -> None:
    longest = STORED // 2
    fetcher = await _walked(index, (BY_NAME[:1], SHORT, BOTH), (BY_NAME[1:3], longest, BOTH))
    # The first calls ahead were started when only the short call was passed.
    assert _lengths(fetcher) == {LEAST, longest}
    assert (BY_NAME[2 + CALLS_AHEAD], OUTBOUND, longest) in fetcher.fetched


async def test_a_walk_that_read_files_as_long_as_those_ahead_fetches_them_whole(
    index: CallIndex,
) -> None:
    fetcher = await _walked(index, (BY_NAME[:3], STORED, BOTH))
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
    assert _lengths(fetcher) == {LEAST}


async def test_files_of_7_mib_or_less_are_fetched_whole_ahead_whatever_was_read(
    index: CallIndex,
) -> None:
    assert STORED <= LARGE_READ
    fetcher = await _walked(index, (BY_NAME[:3], SHORT, BOTH), least=LARGE_READ)
    assert _lengths(fetcher) == {STORED}
