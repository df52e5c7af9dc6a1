"""The call index (amigofs.cache.index) in a temporary directory, no mount: each call
once in listing order, row ids that never move, a sync's progress kept across a
reopen, and a damaged file rebuilt instead of served."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amigofs.api.models import CallSummary, time_ns
from amigofs.cache.index import NAME, CallIndex
from amigofs.policy.listing import PageRecord

WS = "ws-1"
EPOCH = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def call(n: int, workspace_id: str = WS, *, started: bool = True) -> CallSummary:
    start = EPOCH + dt.timedelta(minutes=n) if started else None
    return CallSummary(workspace_id, f"CA{n:032x}", start, 30.0 + n, "inbound")


@contextmanager
def opened(directory: Path) -> Iterator[CallIndex]:
    index = CallIndex(directory)
    index.open()
    try:
        yield index
    finally:
        index.close()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[CallIndex]:
    with opened(tmp_path) as opened_index:
        yield opened_index


def listing(index: CallIndex, workspace_id: str = WS, batch: int = 7) -> list[str]:
    """Every call, as a readdir pages through them (by row id, `batch` at a time)."""
    names: list[str] = []
    after = 0
    while rows := index.after(workspace_id, after, batch):
        names.extend(row.call_sid for row in rows)
        after = rows[-1].row_id
    return names


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 60), max_size=25), max_size=8))
def test_calls_added_in_any_pages_are_listed_once_in_the_order_first_seen(
    pages: list[list[int]],
) -> None:
    with tempfile.TemporaryDirectory() as directory, opened(Path(directory)) as index:
        first_seen: dict[str, None] = {}
        for page in pages:
            calls = [call(n) for n in page]
            index.add(WS, calls)
            first_seen.update((c.call_sid, None) for c in calls)
        assert listing(index) == list(first_seen)
        assert index.listed_count(WS) == len(first_seen)


def test_a_calls_row_id_and_inodes_do_not_move_when_it_is_listed_again(
    index: CallIndex,
) -> None:
    index.add(WS, [call(1)], listed=False)  # known by a lookup first
    looked_up = index.by_sid(WS, call(1).call_sid)
    assert looked_up is not None and not looked_up.listed
    assert index.known(WS, [call(1).call_sid]) == set()
    index.add(WS, [call(2), call(1), call(3)])
    listed = index.by_sid(WS, call(1).call_sid)
    assert listed is not None and listed.listed
    assert listed.row_id == looked_up.row_id
    assert index.by_id(listed.row_id) == listed
    assert index.known(WS, [call(n).call_sid for n in (1, 2, 9)]) == {
        call(1).call_sid,
        call(2).call_sid,
    }
    assert listed.summary() == call(1)


def test_workspaces_are_apart(index: CallIndex) -> None:
    index.add(WS, [call(1), call(2)])
    index.add("ws-2", [call(1, "ws-2"), call(3, "ws-2")])
    assert listing(index) == [call(1).call_sid, call(2).call_sid]
    assert listing(index, "ws-2") == [call(1).call_sid, call(3).call_sid]
    assert index.by_sid("ws-2", call(2).call_sid) is None


def test_days_and_names_are_found_by_start_and_by_sid(index: CallIndex) -> None:
    index.add(WS, [call(n) for n in (5, 1, 3)] + [call(9, started=False)])
    start = time_ns(EPOCH)
    minute = 60 * 10**9
    between = index.started_between(WS, start + 2 * minute, start + 6 * minute)
    assert [r.call_sid for r in between] == [call(3).call_sid, call(5).call_sid]
    assert index.first_start_from(WS, start + 2 * minute) == start + 3 * minute
    assert index.first_start_from(WS, start + 6 * minute) is None
    assert index.newest_ns(WS) == start + 5 * minute
    by_name = index.after_sid(WS, call(1).call_sid, 2)
    assert [r.call_sid for r in by_name] == [call(3).call_sid, call(5).call_sid]


def test_a_syncs_progress_is_kept_across_a_reopen_and_dropped_when_it_ends(
    tmp_path: Path,
) -> None:
    with opened(tmp_path) as index:
        assert not index.sync_state(WS).complete
        index.begin_sync(WS, 250, newest_first=True)
        index.add_page(WS, [call(n) for n in range(100)], PageRecord(0, 100, 250))
        index.add_page(WS, [call(n) for n in range(200, 250)], PageRecord(200, 50, 251))
    with opened(tmp_path) as index:  # a mount killed and started again
        state = index.sync_state(WS, with_pages=True)
        assert (state.complete, state.base_total, state.newest_first) == (False, 250, True)
        assert state.pages == (PageRecord(0, 100, 250), PageRecord(200, 50, 251))
        assert index.sync_state(WS).pages == ()  # only when asked for
        assert index.listed_count(WS) == 150
        index.finish_sync(WS, 1234.5)
        state = index.sync_state(WS, with_pages=True)
        assert (state.complete, state.synced_at, state.pages) == (True, 1234.5, ())
        index.restart_sync(WS)
        state = index.sync_state(WS, with_pages=True)
        assert (state.complete, state.base_total) == (False, None)
        assert index.listed_count(WS) == 150  # kept while the listing is read again


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other format"])
def test_a_damaged_index_is_set_aside_and_rebuilt_empty(tmp_path: Path, damage: str) -> None:
    with opened(tmp_path) as index:
        index.add(WS, [call(n) for n in range(500)])
    path = tmp_path / NAME
    for leftover in tmp_path.glob(f"{NAME}-*"):
        leftover.unlink()
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif damage == "garbage":
        path.write_bytes(b"\x13" * path.stat().st_size)
    else:  # an index an older amigofs wrote
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE format SET value = 'amigofs-index 0'")
    with opened(tmp_path) as index:
        assert listing(index) == []  # rebuilt from the API, never served wrong
        index.add(WS, [call(1)])
        assert listing(index) == [call(1).call_sid]
