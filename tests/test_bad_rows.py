"""Rows that cannot be shown as the server gives them, through a real mount (issue #19, 5).

A listing entry that starts in 0001 (Go's zero time) or 2300, outside what the call index
keeps (nanoseconds since 1970 in a signed 64-bit integer), or metadata that says
`duration_seconds: 1e308`: the workspace and its by-date tree list whole, the call is listed
without what cannot be shown, its files read byte for byte, and the log says so once, as a
warning naming the call, never as a bug. An index another process holds locked is named in
one warning, and listings go on (from memory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3

from amigofs.emulator.config import ROW_FAULTS
from amigofs.fs.views import BY_DATE, parse_entry
from tests.emulator_proc import running_emulator
from tests.mounting import mounted
from tests.reliability import PRESENTED, presented_bytes, read_until_error

BAD_STARTS = ("zero_time", "far_future")


def test_bad_rows_cost_their_own_fields_only() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=6, max_duration=10.0, bad_rows=len(ROW_FAULTS)
    ) as emulator:
        bad = emulator.data.faulty("row")
        assert [r.row_fault for r in bad] == list(ROW_FAULTS)
        workspace_id = emulator.data.workspaces[0].id
        recordings = list(emulator.data.recordings())
        with mounted(emulator.url, emulator.api_key, "--timeout", "10") as mnt:
            workspace = mnt.path / workspace_id
            assert sorted(os.listdir(workspace)) == sorted(r.call_sid for r in recordings)

            # by-date holds every call whose listing gives a start it can show, on its day.
            by_date = mnt.path / BY_DATE / workspace_id
            dated = {
                parse_entry(name): day
                for day in os.listdir(by_date)
                for name in os.listdir(by_date / day)
            }
            shown = {r.call_sid for r in recordings if r.row_fault not in BAD_STARTS}
            assert set(dated) == shown
            for recording in recordings:
                if recording.call_sid in shown:
                    start = dt.datetime.fromisoformat(str(recording.metadata["call_start_iso"]))
                    assert dated[recording.call_sid] == start.astimezone(dt.UTC).date().isoformat()

            # Days no call can start on (the index holds none) are empty or none, not EIO.
            for day in ("0001-01-01", "1600-01-01", "2300-01-01", "9999-12-31"):
                with contextlib.suppress(FileNotFoundError):
                    assert os.listdir(by_date / day) == [], day

            for recording in bad:
                call_dir = workspace / recording.call_sid
                # Listed without a start time, its directory takes the metadata's.
                start = dt.datetime.fromisoformat(str(recording.metadata["call_start_iso"]))
                assert call_dir.stat().st_mtime == start.timestamp(), recording.row_fault
                listed = os.listdir(call_dir)
                for name in PRESENTED:
                    assert name in listed, (recording.row_fault, name)
                    assert (call_dir / name).read_bytes() == presented_bytes(
                        emulator, recording, name
                    ), (recording.row_fault, name)
                if recording.row_fault == "absurd_duration" and recording.storage == "wav":
                    # Its layout needs the duration (a stored WAV's samples): not shown, said.
                    assert "call.wav" not in listed
                    assert any(
                        "WARNING" in line and recording.call_sid in line and "call.wav" in line
                        for line in mnt.log().splitlines()
                    )
                else:
                    data, error = read_until_error(call_dir / "call.wav")
                    assert error is None and len(data) == (call_dir / "call.wav").stat().st_size

            for recording in emulator.data.sound():
                for name in PRESENTED:
                    path = workspace / recording.call_sid / name
                    assert path.read_bytes() == presented_bytes(emulator, recording, name)

            log = mnt.log()
            assert "a bug" not in log and "unexpected error" not in log, log
            assert "Traceback" not in log, log
            for recording in bad:
                if recording.row_fault in BAD_STARTS:
                    lines = [line for line in log.splitlines() if recording.call_sid in line]
                    assert len(lines) == 1 and "WARNING" in lines[0], lines
                    assert workspace_id in lines[0]
            assert mnt.process.poll() is None


def test_an_index_locked_by_another_process_is_named_and_listings_go_on() -> None:
    with running_emulator(workspaces=2, calls_per_workspace=5, max_duration=10.0) as emulator:
        first, second = (ws.id for ws in emulator.data.workspaces)
        with mounted(emulator.url, emulator.api_key, "--timeout", "20") as mnt:
            assert len(os.listdir(mnt.path / first)) == 5
            assert mnt.cache_dir is not None
            index_file = mnt.cache_dir / "index.sqlite"
            # As a user's `sqlite3 index.sqlite` then `BEGIN EXCLUSIVE;` would.
            other = sqlite3.connect(index_file, isolation_level=None)
            try:
                other.execute("BEGIN EXCLUSIVE")
                # The second workspace's listing is written to the index: it waits on the
                # lock, then goes on from memory.
                assert len(os.listdir(mnt.path / second)) == 5
                assert len(os.listdir(mnt.path / first)) == 5
            finally:
                other.execute("ROLLBACK")
                other.close()
            log = mnt.log()
            named = [line for line in log.splitlines() if "locked by another process" in line]
            assert len(named) == 1 and "WARNING" in named[0] and str(index_file) in named[0], log
            assert "a bug" not in log and "unexpected error" not in log and "Traceback" not in log
            assert mnt.process.poll() is None
