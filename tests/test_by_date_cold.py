"""by-date without the whole listing (issue 21): a cold `ls by-date/WS/` of a 100,000-call
workspace lists every day from its oldest call's to its newest call's from a few list
requests, in UTC and in a --timezone, through a real mount of the emulator."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest

from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted
from tests.reliability import request_log


@pytest.fixture(scope="module")
def big() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=1, calls_per_workspace=100_000, max_duration=30.0) as emu:
        yield emu


def list_requests(emulator: EmulatorProc) -> int:
    return sum(1 for e in request_log(emulator) if e["op"] == "list-calls")


def expected_days(emulator: EmulatorProc, workspace_id: str, zone: dt.tzinfo) -> list[str]:
    """Every local day from the oldest to the newest mountable call: the dataset's two ends
    (newest first), not its 100,000 calls."""
    calls = emulator.data.calls(workspace_id)
    ends = [*range(100), *range(len(calls) - 100, len(calls))]
    starts = [
        calls[p].started_at for p in ends if calls[p].call_sid and calls[p].recording is not None
    ]
    first, last = (when.astimezone(zone).date() for when in (min(starts), max(starts)))
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_a_cold_by_date_listing_costs_a_few_list_requests(big: EmulatorProc, zone: str) -> None:
    workspace_id = big.data.workspaces[0].id
    with mounted(big.url, big.api_key, "--workspace", workspace_id, "--timezone", zone) as mnt:
        big.reset_stats()
        days = sorted(os.listdir(mnt.path / "by-date" / workspace_id))
        assert list_requests(big) <= 5
        assert days == expected_days(big, workspace_id, ZoneInfo(zone))
        # A day folder lists that day's calls (its own pages, not the workspace's).
        day = dt.date.fromisoformat(days[len(days) // 2])
        names = os.listdir(mnt.path / "by-date" / workspace_id / day.isoformat())
        midnight = dt.datetime.combine(day, dt.time(), ZoneInfo(zone))
        calls = big.data.call_list(workspace_id)
        assert calls is not None
        of_day = calls.first_before(midnight) - calls.first_before(midnight + dt.timedelta(1))
        assert 0 < len(names) <= of_day
        # Its UTC days' pages (two for a day of another zone), and a first page each.
        assert list_requests(big) <= 5 + 2 * (-(-of_day // 100) + 1)
