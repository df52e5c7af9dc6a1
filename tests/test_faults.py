"""Faults and outages through a real mount: exact bytes or a clear error, never a hang.

Each test has its own emulator (knobs differ) and a mount that is always unmounted
(tests/mounting.py); every wait is a poll with a deadline.
"""

from __future__ import annotations

import errno
import itertools
import os
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.emulator_proc import running_emulator, start_emulator
from tests.mounting import mounted, wait_until
from tests.reliability import (
    LISTED,
    PRESENTED,
    ThreadResult,
    errno_of,
    presented_bytes,
    read_until_error,
    request_log,
)

TOOL_TIMEOUT = 120


def test_rsync_of_a_workspace_under_15_percent_faults_is_byte_exact(tmp_path: Path) -> None:
    dataset = {"seed": 11, "workspaces": 1, "calls_per_workspace": 20, "max_duration": 20.0}
    with (
        running_emulator(
            **dataset,
            fault_rate=0.15,
            fault_kinds=("500", "503", "429", "drop", "stall", "ignore_range"),
            stall_seconds=1.5,
            retry_after=1,
        ) as faulty,
        running_emulator(**dataset) as clean,
        mounted(faulty.url, faulty.api_key, "--timeout", "15") as faulty_mnt,
        mounted(clean.url, clean.api_key) as clean_mnt,
    ):
        workspace_id = faulty.data.workspaces[0].id
        copies = {}
        for label, mnt in (("faulty", faulty_mnt), ("clean", clean_mnt)):
            copies[label] = tmp_path / label
            result = subprocess.run(
                ["rsync", "-a", f"{mnt.path / workspace_id}/", str(copies[label])],
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT,
            )
            assert result.returncode == 0, f"rsync from the {label} mount: {result.stderr}"
        diff = subprocess.run(
            ["diff", "-r", str(copies["faulty"]), str(copies["clean"])],
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
        )
        assert diff.returncode == 0, diff.stdout + diff.stderr
        compared = 0
        recordings = list(faulty.data.recordings())
        assert len(recordings) == 20
        for recording in recordings:
            for name in PRESENTED:
                copy = copies["faulty"] / recording.call_sid / name
                expected = presented_bytes(faulty, recording, name)
                assert copy.read_bytes() == expected, f"{copy} differs from the stored file"
                assert (
                    copy.stat().st_mtime
                    == (copies["clean"] / recording.call_sid / name).stat().st_mtime
                )
                compared += len(expected)

        stats = faulty.stats()
        faults = stats["faults"]
        print(f"\nfaults injected and survived: {faults}; bytes compared: {compared}")
        assert sum(faults.values()) >= 10, faults
        # Retries are bounded and back off; Retry-After is honoured. The emulator's log has
        # each request's arrival time, path and Range: group the tries of one request.
        tries: dict[tuple[str, str | None], list[dict[str, object]]] = defaultdict(list)
        for entry in stats["log"]:
            tries[str(entry["path"]), entry["range"]].append(entry)  # type: ignore[index]
        statuses = Counter(entry["status"] for entry in stats["log"])
        print(f"responses by status: {dict(statuses)}")
        assert statuses[429] >= 1 and statuses[500] + statuses[503] >= 1, statuses
        for key, entries in tries.items():
            if key[0].endswith("/calls"):
                continue  # pages share a path; the query (not logged) tells them apart
            assert len(entries) <= 8, f"{key}: {len(entries)} tries"
            for before, after in itertools.pairwise(entries):
                gap = float(after["time"]) - float(before["time"])  # type: ignore[arg-type]
                if before["status"] == 429:
                    assert gap >= 0.95, (
                        f"{key}: retried {gap:.2f} s after a 429 with Retry-After: 1"
                    )
                elif before["status"] in (500, 503):
                    assert gap >= 0.04, f"{key}: retried {gap:.3f} s after a {before['status']}"


def test_a_stalled_body_is_abandoned_and_retried_within_the_deadline() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=1, min_duration=30.0, max_duration=30.0, stall_seconds=60
    ) as emulator:
        recording = next(emulator.data.recordings())
        with mounted(emulator.url, emulator.api_key, "--timeout", "6") as mnt:
            call_dir = mnt.path / recording.workspace_id / recording.call_sid
            assert sorted(os.listdir(call_dir)) == sorted(LISTED)
            emulator.control(fault_rate=1.0, fault_kinds=["stall"])
            started = time.monotonic()
            reader = ThreadResult(lambda: (call_dir / "outbound.wav").read_bytes())
            wait_until(lambda: emulator.stats()["faults"].get("stall", 0) >= 1, 5, "a stall")
            # Only the first body stalls; a retry would get the bytes at once.
            emulator.control(fault_rate=0.0)
            data = reader.join(20)
            elapsed = time.monotonic() - started
            assert data == presented_bytes(emulator, recording, "outbound.wav")
            # The stall must be given up and the range fetched again before the deadline;
            # a read that failed at the deadline shows in the log (the kernel then retried the
            # failed readahead itself, which hides the EIO from this reader, not from others).
            assert "no answer within the deadline" not in mnt.log()
            assert elapsed < 6, f"the read took {elapsed:.1f} s: the whole deadline"


def test_expired_download_links_are_fetched_again_transparently() -> None:
    ttl = 1.0
    with running_emulator(
        workspaces=1, calls_per_workspace=4, max_duration=15.0, url_ttl=ttl
    ) as emulator:
        recordings = list(emulator.data.recordings())
        with mounted(emulator.url, emulator.api_key) as mnt:
            for recording in recordings:
                os.listdir(mnt.path / recording.workspace_id / recording.call_sid)
            compared = 0
            # Two rounds, each after the links handed out before it have expired: a mount
            # left up longer than a link's lifetime keeps reading, again and again.
            for batch in (recordings[:2], recordings[2:]):
                links_issued = time.time()
                # Links expire at ceil(issue time + ttl): poll the clock, not a fixed sleep.
                wait_until(lambda t=links_issued: time.time() > t + ttl + 1.05, 5, "links expiry")
                for recording in batch:
                    for name in ("inbound.wav", "outbound.wav"):
                        path = mnt.path / recording.workspace_id / recording.call_sid / name
                        expected = presented_bytes(emulator, recording, name)
                        assert path.read_bytes() == expected
                        compared += len(expected)
            log = request_log(emulator)
            refused = [
                e for e in log if e["op"] == "download-recording-file" and e["status"] == 403
            ]
            renewals = sum(1 for e in log if e["op"] == "get-recording-urls") - len(recordings)
            print(
                f"\nexpired links refused: {len(refused)}, renewals: {renewals}, bytes: {compared}"
            )
            assert len(refused) >= 2 and renewals >= 2


def test_server_gone_then_back_reads_again_without_a_remount() -> None:
    emulator = start_emulator(workspaces=1, calls_per_workspace=3, max_duration=20.0)
    port = emulator.port
    recordings = list(emulator.data.recordings())
    try:
        with mounted(emulator.url, emulator.api_key, "--timeout", "3", "--listing-ttl", "1") as mnt:
            workspace_dir = mnt.path / recordings[0].workspace_id
            listing = sorted(os.listdir(workspace_dir))
            call_listings = {
                r.call_sid: sorted(os.listdir(workspace_dir / r.call_sid)) for r in recordings
            }
            pid = mnt.process.pid
            emulator.stop()
            target = workspace_dir / recordings[0].call_sid / "outbound.wav"
            started = time.monotonic()
            assert errno_of(target.read_bytes) == errno.EIO
            assert time.monotonic() - started < 3 + 3
            # Cached directories stay listable, also once their listing's TTL has passed
            # (the refresh in the background fails; the cached listing is served).
            wait_until(
                lambda: (
                    bool(os.listdir(workspace_dir))
                    and "refresh failed, keeping the cached listing" in mnt.log()
                ),
                10,
                "a failed background refresh of the expired listing",
            )
            assert sorted(os.listdir(workspace_dir)) == listing
            for sid, files in call_listings.items():
                assert sorted(os.listdir(workspace_dir / sid)) == files
            assert mnt.process.poll() is None

            emulator = start_emulator(
                workspaces=1, calls_per_workspace=3, max_duration=20.0, port=port
            )
            back = time.monotonic()

            def readable() -> bool:
                try:
                    return target.read_bytes() == presented_bytes(
                        emulator, recordings[0], "outbound.wav"
                    )
                except OSError as exc:
                    assert exc.errno == errno.EIO
                    return False

            wait_until(readable, 15, "reads to work again once the server is back")
            print(
                f"\nreads worked again {time.monotonic() - back:.2f} s after the server came back"
            )
            for recording in recordings[1:]:
                for name in PRESENTED:
                    path = workspace_dir / recording.call_sid / name
                    assert path.read_bytes() == presented_bytes(emulator, recording, name)
            assert mnt.process.pid == pid and mnt.process.poll() is None
    finally:
        emulator.stop()


def test_a_read_in_progress_when_the_server_dies_gets_eio_never_wrong_bytes() -> None:
    # 60 s of outbound PCM is 1.9 MB (two 1 MiB blocks); at 600 kB/s it takes ~3 s.
    emulator = start_emulator(
        workspaces=1, calls_per_workspace=1, min_duration=60.0, max_duration=60.0, bandwidth=600_000
    )
    try:
        recording = next(emulator.data.recordings())
        expected = presented_bytes(emulator, recording, "outbound.wav")
        with mounted(emulator.url, emulator.api_key, "--timeout", "5") as mnt:
            path = mnt.path / recording.workspace_id / recording.call_sid / "outbound.wav"
            assert os.stat(path).st_size == len(expected)
            reader = ThreadResult(lambda: read_until_error(path))
            # Into the second block: the reader has had the first one.
            wait_until(lambda: emulator.stats()["audio_bytes"] >= 1_250_000, 10, "bytes flowing")
            emulator.process.kill()
            got, error = reader.join(5 + 10)
            assert error == errno.EIO, f"read ended with {error} after {len(got)} bytes"
            assert len(got) < len(expected)
            assert got == expected[: len(got)], "bytes before the error differ from the server's"
            assert mnt.process.poll() is None
    finally:
        emulator.stop()


def test_a_trickling_server_runs_into_the_deadline_then_reads_resume() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=1, min_duration=30.0, max_duration=30.0
    ) as emulator:
        recording = next(emulator.data.recordings())
        with mounted(emulator.url, emulator.api_key, "--timeout", "3") as mnt:
            call_dir = mnt.path / recording.workspace_id / recording.call_sid
            assert sorted(os.listdir(call_dir)) == sorted(LISTED)
            # 2 kB/s: bytes keep coming (no silence long enough for a read timeout), far too
            # slowly for a 1 MiB block.
            emulator.control(bandwidth=2000)
            started = time.monotonic()
            assert errno_of((call_dir / "outbound.wav").read_bytes) == errno.EIO
            elapsed = time.monotonic() - started
            # Bounded, not a hang (test_a_read_that_needs_the_network_fails_within_the_deadline
            # holds the mount to the deadline itself).
            assert elapsed < 2 * 3 + 2, f"EIO after {elapsed:.1f} s with --timeout 3"
            assert mnt.process.poll() is None
            emulator.control(bandwidth=None)
            expected = presented_bytes(emulator, recording, "outbound.wav")
            assert (call_dir / "outbound.wav").read_bytes() == expected


def _pread_tail(path: Path, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, os.fstat(fd).st_size - length)
    finally:
        os.close(fd)


@pytest.mark.parametrize("outage", ["server_gone", "trickle"])
def test_a_read_that_needs_the_network_fails_within_the_deadline(outage: str) -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=1, min_duration=30.0, max_duration=30.0
    ) as emulator:
        recording = next(emulator.data.recordings())
        with mounted(emulator.url, emulator.api_key, "--timeout", "3") as mnt:
            call_dir = mnt.path / recording.workspace_id / recording.call_sid
            assert sorted(os.listdir(call_dir)) == sorted(LISTED)
            if outage == "server_gone":
                emulator.stop()
            else:
                emulator.control(bandwidth=2000)
            started = time.monotonic()
            assert errno_of((call_dir / "outbound.wav").read_bytes) == errno.EIO
            elapsed = time.monotonic() - started
            print(f"\n{outage}: EIO after {elapsed:.2f} s with --timeout 3")
            assert elapsed < 3 + 1, f"EIO after {elapsed:.1f} s with --timeout 3"


def test_archived_while_mounted_fails_fast_with_eagain_then_reads_after_restore() -> None:
    # Ten-minute calls (19 MB of outbound): their tail is not fetched by listing or opening.
    with running_emulator(
        workspaces=1, calls_per_workspace=1, long_calls=1, long_duration=600.0
    ) as emulator:
        recording = next(emulator.data.recordings())
        expected = presented_bytes(emulator, recording, "outbound.wav")[-65536:]
        with mounted(emulator.url, emulator.api_key, "--timeout", "10") as mnt:
            call_dir = mnt.path / recording.workspace_id / recording.call_sid
            assert sorted(os.listdir(call_dir)) == sorted(LISTED)
            emulator.control(archive=[recording.call_sid])
            started = time.monotonic()
            path = call_dir / "outbound.wav"
            assert errno_of(lambda: _pread_tail(path, 65536)) == errno.EAGAIN
            # Fast: an archived recording is not retried until the deadline (10 s here).
            assert time.monotonic() - started < 2
            wait_until(lambda: "restore expected at" in mnt.log(), 5, "the restore time in the log")
            emulator.control(restore=[recording.call_sid])
            assert _pread_tail(path, 65536) == expected
