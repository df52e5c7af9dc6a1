"""Rows the index cannot keep as the server gives them (issue #19, 5 and 9), no mount.

A call whose start lies outside what the index stores (nanoseconds since 1970 in a signed
64-bit INTEGER: 1677-09-21 to 2262-04-11) or whose duration is absurd is listed without that
field, never failing its page; day names outside that range are no days; and an index
another process holds locked is named as such, not logged as a bug.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from amigofs.api.models import (
    MAX_CALL_SECONDS,
    CallSummary,
    from_time_ns,
    parse_call_summary,
    parse_recording_metadata,
    time_ns,
)
from amigofs.cache import index as index_module
from amigofs.cache.index import NAME, CallIndex
from amigofs.fs.views import Days

WS = "ws-1"
SID = "CA" + "0" * 32
INT64 = (-(1 << 63), (1 << 63) - 1)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def index(tmp_path: Path) -> Iterator[CallIndex]:
    opened = CallIndex(tmp_path)
    opened.open()
    try:
        yield opened
    finally:
        opened.close()


def entry(sid: str = SID, **fields: object) -> dict[str, object]:
    return {"call_sid": sid, "has_recording": True, "direction": "inbound", **fields}


# --- listing entries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "started_at",
    [
        "0001-01-01T00:00:00Z",  # Go's zero time
        "1600-01-01T00:00:00Z",
        "1677-09-21T00:12:43Z",  # a second before the first instant an int64 of ns holds
        "2262-04-11T23:47:17Z",  # a second after the last
        "2300-01-01T00:00:00Z",
        "9999-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00-05:00",
        "9999-12-31T23:59:59-05:00",  # past year 9999 in UTC
    ],
)
def test_a_start_the_index_cannot_hold_is_dropped_with_one_warning(
    started_at: str, caplog: pytest.LogCaptureFixture
) -> None:
    sid = f"CA{abs(hash(started_at)):032x}"[:34]
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # a listing read again (refreshes, a day's listing) says it once
            call = parse_call_summary(entry(sid, started_at=started_at, duration_seconds=30.0), WS)
            assert call is not None and call.call_sid == sid
            assert call.started_at is None and call.duration_seconds == 30.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert WS in warnings[0].getMessage() and sid in warnings[0].getMessage()
    assert started_at in warnings[0].getMessage()


@pytest.mark.parametrize(
    "duration",
    [1e308, -1.0, math.nan, math.inf, -math.inf, MAX_CALL_SECONDS + 1, 10**400, "61", True],
)
def test_an_absurd_duration_is_dropped_and_the_call_kept(duration: object) -> None:
    call = parse_call_summary(
        entry(started_at="2025-06-02T12:00:00Z", duration_seconds=duration), WS
    )
    assert call is not None and call.duration_seconds is None
    assert call.started_at == dt.datetime(2025, 6, 2, 12, tzinfo=dt.UTC)


def test_the_edges_of_the_range_are_kept() -> None:
    for text in ("1677-09-21T00:12:45Z", "2262-04-11T23:47:15Z"):
        call = parse_call_summary(entry(started_at=text), WS)
        assert call is not None and call.started_at is not None
        assert INT64[0] <= time_ns(call.started_at) <= INT64[1]


# --- the row conversion ------------------------------------------------------------------


@pytest.mark.parametrize(
    "started",
    [
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(1600, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2300, 1, 1, tzinfo=dt.UTC),
        dt.datetime.max.replace(tzinfo=dt.UTC),
    ],
)
def test_a_call_with_a_start_out_of_range_is_indexed_without_it(
    index: CallIndex, started: dt.datetime
) -> None:
    good = CallSummary(WS, "CA" + "1" * 32, dt.datetime(2025, 6, 2, tzinfo=dt.UTC), 30.0, None)
    bad = CallSummary(WS, SID, started, 1e308, "inbound")
    index.add(WS, [good, bad])  # today: OverflowError, the page and its workspace lost
    assert [r.call_sid for r in index.after(WS, 0, 10)] == [good.call_sid, SID]
    row = index.by_sid(WS, SID)
    assert row is not None and row.started_ns is None and row.duration is None
    assert index.newest_ns(WS) == time_ns(good.started_at)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shared_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallIndex]:
    """One index for every example of a property (a new one each costs a file)."""
    opened = CallIndex(tmp_path_factory.mktemp("index"))
    opened.open()
    try:
        yield opened
    finally:
        opened.close()


_sids = itertools.count()


@PROPERTY
@given(
    st.datetimes(timezones=st.timezones() | st.just(dt.UTC)),
    st.floats(allow_nan=True, allow_infinity=True),
)
@example(dt.datetime(1, 1, 1, tzinfo=dt.UTC), 1e308)
@example(dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC), -0.0)
def test_no_start_or_duration_raises_out_of_the_row_conversion(
    shared_index: CallIndex, started: dt.datetime, duration: float
) -> None:
    sid = f"CA{next(_sids):032x}"
    shared_index.add(WS, [CallSummary(WS, sid, started, duration, None)])
    row = shared_index.by_sid(WS, sid)
    assert row is not None
    assert row.started_ns is None or INT64[0] <= row.started_ns <= INT64[1]
    if row.started_ns is not None:
        assert from_time_ns(row.started_ns) == started.astimezone(dt.UTC)
    assert row.duration is None or 0 <= row.duration <= MAX_CALL_SECONDS
    row.summary()  # and back


@PROPERTY
@given(st.integers(*INT64))
def test_every_stored_start_reads_back(ns: int) -> None:
    when = from_time_ns(ns)
    # To the microsecond, rounded down; held to the first instant an int64 holds.
    assert time_ns(when) == max(ns - ns % 1000, INT64[0])


# --- day names -----------------------------------------------------------------------------


@PROPERTY
@given(st.dates(), st.sampled_from(["UTC", "America/New_York", "Pacific/Kiritimati"]))
@example(dt.date(1, 1, 1), "UTC")
@example(dt.date(9999, 12, 31), "UTC")
@example(dt.date(9999, 12, 31), "Pacific/Kiritimati")
def test_any_day_has_bounds_the_index_can_be_asked_about(day: dt.date, zone: str) -> None:
    days = Days.named(zone)
    parsed = days.parse(day.isoformat())
    assert parsed == day
    start, end = days.bounds_ns(parsed)  # 9999-12-31 had OverflowError, 0001 no int64
    assert INT64[0] <= start <= end <= INT64[1]
    days.utc_days(parsed)


# --- metadata ------------------------------------------------------------------------------


def test_metadata_with_an_absurd_duration_still_parses() -> None:
    document = {
        "call_sid": SID,
        "direction": "inbound",
        "duration_seconds": 1e308,
        "inbound_format": "mulaw",
        "inbound_sample_rate": 8000,
        "outbound_format": "pcm16",
        "outbound_sample_rate": 16000,
        "tts_provider": "x",
        "call_start_iso": "2025-06-02T12:00:00.000+00:00",
        "call_end_iso": "2025-06-02T12:01:00.000+00:00",
        "inbound_size_bytes": 480000,
        "outbound_size_bytes": 1920000,
        "media_start_epoch_ms": 1748865600100,
    }
    metadata = parse_recording_metadata(document, workspace_id=WS, call_sid=SID)
    assert metadata.duration_seconds == 1e308  # the server's word, in xattrs as it is


# --- a locked index --------------------------------------------------------------------------


def test_an_index_locked_by_another_process_is_named_and_the_mount_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "LOCK_WAIT", 0.2, raising=False)
    index = CallIndex(tmp_path)
    index.open()
    first = CallSummary(WS, "CA" + "1" * 32, dt.datetime(2025, 6, 2, tzinfo=dt.UTC), 30.0, None)
    index.add(WS, [first])
    other = sqlite3.connect(tmp_path / NAME, isolation_level=None)  # as `sqlite3 index.sqlite`
    other.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING):
            index.add(WS, [CallSummary(WS, SID, None, None, None)])
            index.add(WS, [CallSummary(WS, "CA" + "2" * 32, None, None, None)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    # Read on from memory: what was indexed before the lock, and what came after.
    assert [r.call_sid for r in index.after(WS, 0, 10)] == [
        first.call_sid, SID, "CA" + "2" * 32
    ]  # fmt: skip
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert "locked" in message and str(tmp_path / NAME) in message
    assert lines[0].exc_info is None


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_an_index_locked_at_start_is_not_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, journal: str
) -> None:
    monkeypatch.setattr(index_module, "LOCK_WAIT", 0.2, raising=False)
    made = CallIndex(tmp_path)
    made.open()
    made.add(WS, [CallSummary(WS, SID, None, None, None)])
    made.close()
    other = sqlite3.connect(tmp_path / NAME, isolation_level=None)
    # Out of WAL mode (another tool's doing), an exclusive lock keeps readers out too.
    other.execute(f"PRAGMA journal_mode={journal}")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO format VALUES ('held')")
    try:
        with caplog.at_level(logging.WARNING):
            reopened = CallIndex(tmp_path)
            reopened.open()
            reopened.add(WS, [CallSummary(WS, "CA" + "2" * 32, None, None, None)])
            assert {r.call_sid for r in reopened.after(WS, 0, 10)} >= {"CA" + "2" * 32}
            reopened.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The other process's file is never deleted as "unusable" because it is locked.
    assert "unusable" not in caplog.text and "rebuilding" not in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    check = sqlite3.connect(tmp_path / NAME)
    assert check.execute("SELECT call_sid FROM calls").fetchall() == [(SID,)]
    check.close()
