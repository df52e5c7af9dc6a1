"""What is got ahead of a walk (amigofs.fs.walk): records (RecordsAhead) and stored
bytes (WalkPrefetch), against a real call index in a temporary directory and
stand-ins for the loader and the fetcher that record what they were asked."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from amigofs.api import errors as api
from amigofs.api.models import CallSummary, RecordingMetadata
from amigofs.cache.block_format import FileKey
from amigofs.cache.index import CallIndex
from amigofs.cache.store import DownloadLink, StoredFile
from amigofs.fs.records import INBOUND, METADATA, OUTBOUND, CallRecord, PresentedFile
from amigofs.fs.walk import BYTES_AHEAD, CALLS_AHEAD, RecordsAhead, WalkPrefetch
from amigofs.policy.walk import FIRST_AHEAD

WS = "ws_walk"
START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
# Listed in this order (row ids); SIDs a permutation, so name order differs.
LISTING = [f"CA{(i * 7) % 40:02d}" for i in range(40)]
BY_NAME = sorted(LISTING)
# A cap no more than the loads a walk starts with: all of it at once, from the first
# step (how the limit grows to a larger cap: test_records_ahead_order).
RECORDS_AHEAD = FIRST_AHEAD
STORED = 1000  # bytes of each stored audio file
HEADER = b"RIFF" + bytes(40)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[CallIndex]:
    index = CallIndex(tmp_path)
    index.open()
    calls = [
        CallSummary(WS, sid, START + dt.timedelta(minutes=i), 60.0, "inbound")
        for i, sid in enumerate(LISTING)
    ]
    index.add(WS, calls)
    yield index
    index.close()


# --- records ahead -----------------------------------------------------------------


class _Records:
    """Stand-in for the namespace's records: loads them, remembers those it has, and
    has a RecordsAhead load them ahead of its visits."""

    def __init__(self, index: CallIndex, nursery: trio.Nursery) -> None:
        self.loads: list[str] = []
        self.kept: set[str] = set()
        self.failing: dict[str, Exception] = {}
        self.ahead = RecordsAhead(index, self.load, self.known, nursery, in_flight=RECORDS_AHEAD)

    async def load(self, workspace_id: str, call_sid: str) -> object:
        await trio.lowlevel.checkpoint()
        self.loads.append(call_sid)
        if call_sid in self.failing:
            raise self.failing[call_sid]
        self.kept.add(call_sid)
        return call_sid

    def known(self, workspace_id: str, call_sid: str) -> bool:
        return call_sid in self.kept

    async def visit(self, sids: list[str]) -> list[str]:
        """Visits the calls; what was loaded ahead so far, in no particular order."""
        for sid in sids:
            self.ahead.visit(WS, sid)
            await trio.testing.wait_all_tasks_blocked()
        return sorted(self.loads)


@pytest.mark.parametrize("order", [LISTING, BY_NAME], ids=["listing", "name"])
async def test_calls_entered_in_order_load_the_next_records_ahead_each_once(
    index: CallIndex, order: list[str]
) -> None:
    async with trio.open_nursery() as nursery:
        records = _Records(index, nursery)
        assert await records.visit(order[:2]) == []  # one step: could be chance
        assert await records.visit(order[2:3]) == sorted(order[3 : 3 + RECORDS_AHEAD])
        # Each step on loads the one call that came into reach; none twice.
        await records.visit(order[3:6])
        assert sorted(records.loads) == sorted(order[3 : 6 + RECORDS_AHEAD])


async def test_one_call_the_same_call_again_or_calls_out_of_order_load_nothing(
    index: CallIndex,
) -> None:
    async with trio.open_nursery() as nursery:
        records = _Records(index, nursery)
        jumps = [LISTING[0], LISTING[0], LISTING[5], LISTING[12], LISTING[5], LISTING[30]]
        assert await records.visit(jumps) == []


async def test_looking_at_a_calls_files_or_an_unindexed_call_does_not_break_a_walk(
    index: CallIndex,
) -> None:
    async with trio.open_nursery() as nursery:
        records = _Records(index, nursery)
        visits = [LISTING[0], LISTING[0], "CAunknown", LISTING[1], LISTING[1], LISTING[2]]
        assert await records.visit(visits) == sorted(LISTING[3 : 3 + RECORDS_AHEAD])


async def test_records_known_already_are_not_loaded_again(index: CallIndex) -> None:
    async with trio.open_nursery() as nursery:
        records = _Records(index, nursery)
        records.kept = set(LISTING[3:5])
        loaded = await records.visit(LISTING[:3])
        assert loaded == sorted(LISTING[5 : 3 + RECORDS_AHEAD])


async def test_a_failed_load_ahead_ends_only_itself_and_is_tried_again_later(
    index: CallIndex, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="amigofs.fs.walk")
    gone, bug = LISTING[4], LISTING[6]
    async with trio.open_nursery() as nursery:
        records = _Records(index, nursery)
        records.failing = {gone: api.ServerError("503", status=503), bug: RuntimeError("a bug")}
        await records.visit(LISTING[:3])
        assert records.kept == set(LISTING[3 : 3 + RECORDS_AHEAD]) - {gone, bug}
        await records.visit(LISTING[3:4])
    # Not known: the next step of the walk asks again.
    assert Counter(records.loads)[gone] == Counter(records.loads)[bug] == 2
    logged = {(r.levelno, r.exc_info is not None) for r in caplog.records if gone in r.getMessage()}
    assert logged == {(logging.DEBUG, False)}
    bugs = [r for r in caplog.records if bug in r.getMessage()]
    assert bugs and all(r.levelno == logging.ERROR and r.exc_info for r in bugs)
    assert all("loading ahead failed" in r.getMessage() for r in bugs)


# --- bytes ahead -------------------------------------------------------------------


def _record(call_sid: str) -> CallRecord:
    metadata = RecordingMetadata(
        WS, call_sid, "inbound", 60.0, "pcm_s16le", 8000, "pcm_s16le", 8000, "none",
        START, START + dt.timedelta(minutes=1), STORED, STORED, 0.0,
    )  # fmt: skip
    files = {
        name: PresentedFile(
            name,
            len(HEADER) + STORED,
            HEADER,
            StoredFile(FileKey(WS, call_sid, name, STORED), cast(DownloadLink, None)),
        )
        for name in (INBOUND, OUTBOUND)
    }
    files[METADATA] = PresentedFile(METADATA, 2, content=b"{}")
    return CallRecord(WS, call_sid, START, metadata, files)


class _Fetcher:
    """Stand-in for the namespace's loader and block store, recording what they were
    asked, and the WalkPrefetch it feeds. `gate`, when set, holds every record load
    until it is set."""

    def __init__(
        self,
        index: CallIndex,
        nursery: trio.Nursery,
        *,
        gated: bool = False,
        room: int = 1 << 30,
        bytes_ahead: int = BYTES_AHEAD,
    ) -> None:
        self.loads: list[str] = []
        self.fetched: list[tuple[str, str, int]] = []  # call SID, stored file, bytes
        self.gate = trio.Event() if gated else None
        self.walk = WalkPrefetch(
            index, self.load, self.prefetch, nursery, room=lambda: room, bytes_ahead=bytes_ahead
        )

    async def load(self, workspace_id: str, call_sid: str) -> CallRecord:
        self.loads.append(call_sid)
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        return _record(call_sid)

    def prefetch(self, file: PresentedFile, length: int) -> None:
        assert file.stored is not None
        self.fetched.append((file.stored.key.call_sid, file.name, length))

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()

    def calls(self) -> set[str]:
        return {sid for sid, _, _ in self.fetched}

    async def read_whole(self, reads: list[tuple[str, str]]) -> None:
        for sid, name in reads:
            self.walk.read_whole(WS, sid, name, _record(sid).files[name].size)
            await trio.testing.wait_all_tasks_blocked()


def _rsync(
    calls: list[str], names: tuple[str, ...] = (INBOUND, METADATA, OUTBOUND)
) -> list[tuple[str, str]]:
    """Whole reads as rsync makes them: each call's files in name order."""
    return [(sid, name) for sid in calls for name in names]


async def test_an_rsync_walk_fetches_the_next_calls_audio_once_each(index: CallIndex) -> None:
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery)
        await fetcher.read_whole(_rsync(BY_NAME[:1]))
        assert fetcher.fetched == []  # the files of one call: no order yet
        await fetcher.read_whole(_rsync(BY_NAME[1:2]))
        assert fetcher.calls() == set(BY_NAME[2 : 2 + CALLS_AHEAD])
        await fetcher.read_whole(_rsync(BY_NAME[2:4]))
    assert fetcher.calls() == set(BY_NAME[2 : 4 + CALLS_AHEAD])
    # Both audio files of each, whole, once; metadata.json has no stored bytes.
    assert Counter(fetcher.fetched) == {
        (sid, name, STORED): 1 for sid in fetcher.calls() for name in (INBOUND, OUTBOUND)
    }


async def test_a_walk_in_listing_order_of_one_file_a_call_fetches_only_that_file(
    index: CallIndex,
) -> None:
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery)
        # tar or `sha256sum */outbound.wav` in readdir's order.
        await fetcher.read_whole(_rsync(LISTING[:3], (OUTBOUND,)))
    assert sorted(fetcher.fetched) == sorted(
        (sid, OUTBOUND, STORED) for sid in LISTING[3 : 3 + CALLS_AHEAD]
    )


async def test_a_walk_fetches_no_more_than_its_byte_budget(index: CallIndex) -> None:
    budget = 5 * STORED + STORED // 2
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery, bytes_ahead=budget)
        await fetcher.read_whole(_rsync(BY_NAME[:2]))
    assert sum(length for _, _, length in fetcher.fetched) == budget
    assert fetcher.calls() <= set(BY_NAME[2 : 2 + CALLS_AHEAD])
    assert len(set(fetcher.fetched)) == len(fetcher.fetched)


async def test_a_cache_under_pressure_gets_nothing_fetched_ahead(index: CallIndex) -> None:
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery, room=0)
        await fetcher.read_whole(_rsync(BY_NAME[:3]))
    assert fetcher.loads == []
    assert fetcher.fetched == []


async def test_one_cat_a_few_files_out_of_order_or_readers_side_by_side_fetch_nothing(
    index: CallIndex,
) -> None:
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery)
        await fetcher.read_whole([(LISTING[7], INBOUND)])  # one cat
        await fetcher.read_whole([(LISTING[20], OUTBOUND), (LISTING[33], INBOUND)])
        await fetcher.read_whole([(BY_NAME[5], INBOUND), (BY_NAME[5], INBOUND)])
        # Two readers side by side (amigofs prefetch -j 2): the namespace says so.
        for sid in BY_NAME[10:16]:
            fetcher.walk.interleaved(WS)
            await fetcher.read_whole([(sid, OUTBOUND)])
    assert fetcher.loads == []
    assert fetcher.fetched == []


async def test_a_whole_read_out_of_order_ends_the_walk_and_drops_its_pending_fetches(
    index: CallIndex,
) -> None:
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery, gated=True)
        await fetcher.read_whole(_rsync(BY_NAME[:2]))
        assert sorted(fetcher.loads) == BY_NAME[2 : 2 + CALLS_AHEAD]
        await fetcher.read_whole([(BY_NAME[30], INBOUND)])  # elsewhere
        fetcher.release()
    assert sorted(fetcher.loads) == BY_NAME[2 : 2 + CALLS_AHEAD]  # nothing more started
    assert fetcher.fetched == []  # what was loading is not fetched


async def test_readers_side_by_side_end_a_walk(index: CallIndex) -> None:
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery, gated=True)
        await fetcher.read_whole(_rsync(BY_NAME[:2]))
        fetcher.walk.interleaved(WS)
        fetcher.release()
        await trio.testing.wait_all_tasks_blocked()
        await fetcher.read_whole(_rsync(BY_NAME[2:3]))
    assert fetcher.fetched == []  # one step since: not yet a walk again


async def test_a_call_the_reader_reaches_before_its_fetch_starts_is_left_to_the_reader(
    index: CallIndex,
) -> None:
    async with trio.open_nursery() as nursery:
        fetcher = _Fetcher(index, nursery, gated=True)
        await fetcher.read_whole([*_rsync(BY_NAME[:2]), (BY_NAME[2], INBOUND)])
        fetcher.release()
    # The reader fetches BY_NAME[2] itself; the window moved one call on.
    assert fetcher.calls() == set(BY_NAME[3 : 3 + CALLS_AHEAD])
