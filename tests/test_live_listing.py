"""Listings of a live service through real mounts (issue 19): a workspace receiving calls
while it is listed, and a server whose pages hold fewer rows than asked for.

Each test has its own emulator and mounts that are always unmounted (tests/mounting.py).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

from amigofs.emulator.calls import Call
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted
from tests.test_views import calls_of_day


def recorded_sids(calls: Sequence[Call]) -> list[str]:
    """The SIDs of the calls with a recording (those a mount shows)."""
    return [c.recording.call_sid for c in calls if c.recording is not None]


def listed_sids(emulator: EmulatorProc, workspace_id: str) -> list[str]:
    """The workspace's listing as the emulator serves it now, newest first."""
    return recorded_sids(emulator.synced_data().calls(workspace_id))


def assert_each_once(names: list[str]) -> None:
    doubled = [name for name, count in Counter(names).items() if count > 1]
    assert not doubled, f"listed twice: {doubled[:5]}"


def test_a_workspace_receiving_a_call_every_second_lists_whole_on_fresh_mounts() -> None:
    # 20,000 calls, 201 pages, 16 at a time at 50 ms a request: a listing takes
    # seconds here, and calls arrive during every one of them.
    with running_emulator(
        workspaces=1, calls_per_workspace=20_000, max_duration=30.0,
        new_calls_per_second=1.0, latency=0.05,
    ) as emu:  # fmt: skip
        workspace_id = emu.data.workspaces[0].id
        for mount_number in range(3):
            with mounted(emu.url, emu.api_key, "--workspace", workspace_id) as mnt:
                calls_before = emu.control()["calls"][workspace_id]
                names = os.listdir(mnt.path / workspace_id)
                calls = emu.synced_data().calls(workspace_id)
                arrived = len(calls) - calls_before  # at the head: newest first
                assert arrived > 0, "no call arrived during the listing"
                before, after = recorded_sids(calls[arrived:]), recorded_sids(calls)
                assert_each_once(names)
                # Every call there was when the listing began, none that never was; of
                # those that arrived meanwhile, the ones its last round saw.
                assert set(before) <= set(names), (
                    f"mount {mount_number}: {len(set(before) - set(names))} calls missing"
                )
                assert set(names) <= set(after)


def test_pages_of_50_rows_for_a_limit_of_100_give_whole_listings() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=3_000, max_duration=30.0, page_rows=50
    ) as emu:
        workspace_id = emu.data.workspaces[0].id
        day = emu.data.calls(workspace_id)[1_500].started_at.date()
        wanted = calls_of_day(emu, workspace_id, day)
        assert len(wanted) > 100  # pages of it
        with mounted(emu.url, emu.api_key, "--workspace", workspace_id) as mnt:
            # The day first: listed by its own date-filtered pages, not the workspace's.
            day_names = os.listdir(mnt.path / "by-date" / workspace_id / day.isoformat())
            assert_each_once(day_names)
            assert sorted(n.split("_", 1)[1] for n in day_names) == sorted(wanted)
            names = os.listdir(mnt.path / workspace_id)
            assert_each_once(names)
            assert sorted(names) == sorted(listed_sids(emu, workspace_id))
