"""The views people browse: by-date (a day's calls as links) and by-name (issue 12),
through real mounts of the emulator."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted, workspace_names
from tests.reliability import LISTED

TOOL_TIMEOUT = 120


@pytest.fixture(scope="module")
def big() -> Iterator[EmulatorProc]:
    # 100,000 calls over nine days: some 11,000 a day, 110 pages a day.
    with running_emulator(workspaces=1, calls_per_workspace=100_000, max_duration=30.0) as emu:
        yield emu


def list_requests(emulator: EmulatorProc) -> list[str]:
    return [str(e["path"]) for e in emulator.stats()["log"] if e["op"] == "list-calls"]


def calls_of_day(
    emulator: EmulatorProc, workspace_id: str, day: dt.date, zone: dt.tzinfo = dt.UTC
) -> dict[str, dt.datetime]:
    """The recorded calls starting on `day` in `zone`: sid -> start. From the dataset's index:
    the day's positions by binary search on start times, and only that day's calls made."""
    calls = emulator.data.calls(workspace_id)
    midnight = dt.datetime.combine(day, dt.time(), zone)
    newest, oldest = (
        calls.first_before(midnight + dt.timedelta(days=1)),
        calls.first_before(midnight),
    )
    return {
        c.recording.call_sid: c.started_at for c in calls[newest:oldest] if c.recording is not None
    }


def test_a_day_of_100000_calls_lists_from_that_days_pages_only(big: EmulatorProc) -> None:
    workspace_id = big.data.workspaces[0].id
    day = big.data.calls(workspace_id)[50_000].started_at.date()
    wanted = calls_of_day(big, workspace_id, day)
    with mounted(big.url, big.api_key, "--workspace", workspace_id) as mnt:
        big.reset_stats()
        day_dir = mnt.path / "by-date" / workspace_id / day.isoformat()
        names = os.listdir(day_dir)
        requests = list_requests(big)
        # That day's pages (the day as the listing's filter), not the workspace's 1,000.
        assert len(requests) <= -(-len(wanted) // 100) + 1, len(requests)
        assert sorted(name.split("_", 1)[1] for name in names) == sorted(wanted)
        for name in names[:200]:
            sid = name.split("_", 1)[1]
            start = wanted[sid]
            assert name == f"{start.strftime('%H-%M-%S')}_{sid}"
            entry = day_dir / name
            st = os.lstat(entry)
            assert stat.S_ISLNK(st.st_mode)
            assert st.st_mtime == int(start.timestamp())  # the call's start
            assert os.readlink(entry) == f"../../../{workspace_id}/{sid}"
        # The links lead to the call directories.
        first = day_dir / sorted(names)[0]
        assert sorted(os.listdir(first)) == sorted(LISTED)
        assert big.stats()["audio_bytes"] == 0


def test_with_a_timezone_a_call_just_before_local_midnight_is_on_its_local_day(
    big: EmulatorProc,
) -> None:
    zone = ZoneInfo("America/New_York")
    workspace_id = big.data.workspaces[0].id
    late = next(
        c for c in big.data.calls(workspace_id)
        if c.call_sid is not None and c.recording is not None
        and c.started_at.astimezone(zone).hour == 23
    )  # fmt: skip
    local = late.started_at.astimezone(zone)
    assert late.started_at.date() != local.date()  # the next day in UTC
    with mounted(big.url, big.api_key, "--workspace", workspace_id,
                 "--timezone", "America/New_York") as mnt:  # fmt: skip
        day_dir = mnt.path / "by-date" / workspace_id / local.date().isoformat()
        names = os.listdir(day_dir)
        assert f"{local.strftime('%H-%M-%S')}_{late.call_sid}" in names
        assert sorted(n.split("_", 1)[1] for n in names) == sorted(
            calls_of_day(big, workspace_id, local.date(), zone)
        )
        # Not on its UTC day in this zone's listing.
        utc_day = mnt.path / "by-date" / workspace_id / late.started_at.date().isoformat()
        assert not any(n.endswith(str(late.call_sid)) for n in os.listdir(utc_day))


@pytest.fixture(scope="module")
def small() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=2, calls_per_workspace=12, max_duration=10.0) as emu:
        yield emu


def test_the_days_of_a_workspace_and_the_workspaces_by_name(
    small: EmulatorProc, tmp_path: Path
) -> None:
    with mounted(small.url, small.api_key) as mnt:
        assert {"by-date", "by-name"} <= set(os.listdir(mnt.path))
        for workspace in small.data.workspaces:
            days = sorted(os.listdir(mnt.path / "by-date" / workspace.id))
            with_calls = sorted({
                c.started_at.date()
                for c in small.data.calls(workspace.id)
                if c.call_sid is not None and c.recording is not None
            })  # fmt: skip
            # Every day from the oldest call's to the newest's; those without calls empty.
            first, last = with_calls[0], with_calls[-1]
            expected = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
            assert days == [day.isoformat() for day in expected]
            for day in set(expected) - set(with_calls):
                assert os.listdir(mnt.path / "by-date" / workspace.id / day.isoformat()) == []
            link = mnt.path / "by-name" / workspace.slug
            assert os.readlink(link) == f"../{workspace.id}"
            assert sorted(os.listdir(link)) == sorted(os.listdir(mnt.path / workspace.id))
        # A backup of the views copies links, not the recordings again.
        copy = subprocess.run(["rsync", "-a", f"{mnt.path}/by-date/", str(tmp_path / "dates")],
                              capture_output=True, text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
        assert copy.returncode == 0, copy.stderr
        copied = [p for p in (tmp_path / "dates").rglob("*") if not p.is_dir() or p.is_symlink()]
        assert copied and all(p.is_symlink() for p in copied)
        assert small.stats()["audio_bytes"] == 0
        # find -type f counts every recording once: the views hold links only.
        found = subprocess.run(["find", str(mnt.path), "-type", "f"], capture_output=True,
                               text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
        files = found.stdout.split()
        calls = [r for ws in workspace_names(mnt.path) for r in os.listdir(mnt.path / ws)]
        assert len(files) == len(set(files)) == len(LISTED) * len(calls)
        assert not any("/by-date/" in f or "/by-name/" in f for f in files)


def test_call_wav_says_what_it_is_in_its_xattrs(small: EmulatorProc) -> None:
    recording = next(small.data.recordings())
    with mounted(small.url, small.api_key) as mnt:
        call_wav = mnt.path / recording.workspace_id / recording.call_sid / "call.wav"
        shown = subprocess.run(["getfattr", "--absolute-names", "-d", str(call_wav)],
                               capture_output=True, text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert 'user.amigo.format="pcm_s16le"' in shown.stdout
        rates = {int(str(recording.metadata[f"{c}_sample_rate"])) for c in ("inbound", "outbound")}
        assert f'user.amigo.sample_rate="{max(rates)}"' in shown.stdout
