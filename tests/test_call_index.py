"""Workspaces of real size: the call index on disk, listings that stream from it, and
a sync the mount owns (issue 11). Through real mounts of emulator workspaces of up to
100,000 calls behind a latency; counts are the emulator's."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from amigofs.daemon.mount_table import is_mounted
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted, public_tempdir, unmount_guards, wait_until
from tests.reliability import ThreadResult, proc_status_mib

pytestmark = pytest.mark.mount

DEADLINE = 180.0


def listing_errors(emulator: EmulatorProc, workspace_id: str, names: list[str]) -> list[str]:
    """What keeps `names` from being the workspace's recorded calls, each once, as the server
    has them now; none if they are. Read from the dataset's index (each SID's position by
    find(), and only the few positions left unlisted made as calls), not by making every call
    of the workspace, which at 100,000 takes seconds."""
    calls = emulator.synced_data().calls(workspace_id)
    doubled = sorted(name for name, count in Counter(names).items() if count > 1)
    errors = [f"listed twice: {doubled[:5]}"] if doubled else []
    positions = {calls.find(name) for name in names}
    if None in positions:
        errors.append("a name that is no call of the workspace")
    unlisted = set(range(len(calls))) - positions
    # Added calls are all recorded; of those the server started with, these are not.
    unrecorded = emulator.config.null_sid_calls + emulator.config.no_recording_calls
    if len(unlisted) != unrecorded:
        errors.append(f"{len(unlisted) - unrecorded} recorded calls more unlisted than listed")
    else:
        errors += [
            f"{call.call_sid} is not listed"
            for call in (calls[position] for position in unlisted)
            if call.recording is not None
        ]
    return errors


def list_calls(emulator: EmulatorProc) -> int:
    return int(emulator.stats()["requests"].get("list-calls", 0))


def ls_until_complete(workspace: Path) -> list[str]:
    """What `ls` shows, trying again (as a user would) while it fails."""
    failures = []

    def attempt() -> bool:
        try:
            names[:] = os.listdir(workspace)
        except OSError as exc:
            failures.append(exc.errno)
            return False
        return True

    names: list[str] = []
    wait_until(attempt, DEADLINE, f"a complete listing of {workspace}", interval=0.1)
    return names


def peak_rss_mib(pid: int) -> float:
    return proc_status_mib(pid, "VmHWM")


def test_ls_of_100000_calls_behind_a_latency_lists_every_call_once() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=100_000, latency=0.02, max_duration=30.0
    ) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        # A deadline far shorter than the whole sync (1,000 pages at 20 ms).
        with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id,
                     "--timeout", "2") as mnt:  # fmt: skip
            names = ls_until_complete(mnt.path / workspace_id)
            assert not listing_errors(emulator, workspace_id, names)
            # Pages by offset, each once: 1,000 for 100,000 calls, and a few more at most.
            assert list_calls(emulator) <= len(names) // 100 + 20
            assert emulator.stats()["audio_bytes"] == 0
            assert peak_rss_mib(mnt.process.pid) < 300
            # Listed again: from the index, not one request more.
            emulator.reset_stats()
            assert sorted(os.listdir(mnt.path / workspace_id)) == sorted(names)
            assert list_calls(emulator) == 0


def test_the_first_entries_come_before_the_sync_is_done_and_a_remount_lists_at_once() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=20_000, latency=0.1, max_duration=30.0
    ) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        cache = public_tempdir("amigofs-cache-")
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            # A reader of the directory gets entries while most pages are still to come.
            first_batch = subprocess.Popen(
                ["sh", "-c", f"ls -f {mnt.path / workspace_id} | head -n 50"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            out, _ = first_batch.communicate(timeout=60)
            assert len(out.split()) == 50
            assert list_calls(emulator) < 100, "the first entries waited for the whole listing"
            expected = sorted(ls_until_complete(mnt.path / workspace_id))
            assert not listing_errors(emulator, workspace_id, expected)
        emulator.reset_stats()
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            # From the index on disk, before any list request returns (the listing is
            # fresh: no refresh before --listing-ttl).
            assert sorted(os.listdir(mnt.path / workspace_id)) == expected
            assert list_calls(emulator) == 0


def test_stat_of_a_call_by_sid_on_a_cold_mount_makes_no_list_request() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=100_000, latency=0.02, max_duration=30.0
    ) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        sid = next(
            call.recording.call_sid
            for call in emulator.data.calls(workspace_id)[54_321:54_330]
            if call.recording is not None
        )
        with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id) as mnt:
            emulator.reset_stats()
            call = emulator.data.call(workspace_id, sid)
            assert call is not None
            assert os.stat(mnt.path / workspace_id / sid).st_mtime == call.started_at.timestamp()
            size = os.stat(mnt.path / workspace_id / sid / "outbound.wav").st_size
            assert size > 0
            requests = emulator.stats()["requests"]
            assert "list-calls" not in requests, requests
            # That call's urls and metadata (one round trip), its metadata.json (another).
            assert sum(requests.values()) <= 3, requests


def test_calls_arriving_during_and_after_a_sync_are_listed_once_and_refreshes_are_cheap() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=20_000, latency=0.05, max_duration=30.0
    ) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        with mounted(emulator.url, emulator.api_key, "--listing-ttl", "1") as mnt:
            workspace = mnt.path / workspace_id
            lister = ThreadResult(lambda: ls_until_complete(workspace))
            # Half way through the sync's 200 pages, 150 new calls arrive at the head of
            # the newest-first listing: every offset after shifts by 150.
            wait_until(lambda: list_calls(emulator) >= 100, DEADLINE, "half the sync")
            emulator.control(add_calls=150)
            names = lister.join(DEADLINE)
            assert len(names) == len(set(names)), "a call listed twice"
            assert not listing_errors(emulator, workspace_id, names)
            # After the sync: 150 more, and a refresh once the listing's TTL is over.
            emulator.control(add_calls=150)
            emulator.reset_stats()

            def refreshed() -> bool:
                return len(os.listdir(workspace)) >= len(names) + 150

            wait_until(refreshed, DEADLINE, "the new calls to be listed", interval=0.2)
            # Pages from the newest end until one is all known: 3 for 150 new calls.
            assert list_calls(emulator) <= 4, emulator.stats()["requests"]
            assert not listing_errors(emulator, workspace_id, os.listdir(workspace))


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage"])
def test_a_damaged_index_is_rebuilt_and_the_listing_is_exact(damage: str) -> None:
    with running_emulator(workspaces=1, calls_per_workspace=2_000, max_duration=30.0) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        cache = public_tempdir("amigofs-cache-")
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            expected = sorted(ls_until_complete(mnt.path / workspace_id))
            assert not listing_errors(emulator, workspace_id, expected)
        index = cache / "index.sqlite"
        for leftover in cache.glob("index.sqlite-*"):
            leftover.unlink()
        if damage == "deleted":
            index.unlink()
        elif damage == "truncated":
            os.truncate(index, index.stat().st_size // 2)
        else:
            index.write_bytes(os.urandom(index.stat().st_size))
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            names = ls_until_complete(mnt.path / workspace_id)
            assert sorted(names) == expected and len(names) == len(set(names))
            if damage != "deleted":
                assert "rebuilding it from the API" in mnt.log()


def test_a_sync_killed_half_way_goes_on_where_it_stopped_after_a_remount() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=30_000, latency=0.05, max_duration=30.0
    ) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        pages = -(-len(emulator.data.calls(workspace_id)) // 100)
        cache = public_tempdir("amigofs-cache-")
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            lister = subprocess.Popen(["ls", "-f", str(mnt.path / workspace_id)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                wait_until(lambda: list_calls(emulator) >= pages // 2, DEADLINE, "half the sync")
                mnt.process.send_signal(signal.SIGKILL)
                mnt.process.wait(30)
                wait_until(lambda: not is_mounted(mnt.path), 30, "the killed mount to go")
                wait_until(lambda: not unmount_guards(mnt.path), 30, "the guard to exit")
            finally:
                lister.kill()
                lister.wait(30)
        done_before = list_calls(emulator)
        assert done_before < pages, "the sync finished before the kill"
        emulator.reset_stats()
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            names = ls_until_complete(mnt.path / workspace_id)
            assert not listing_errors(emulator, workspace_id, names)
            # The pages read before the kill are not read again (a few in flight may be).
            assert list_calls(emulator) <= pages - done_before + 20
            assert "resuming the listing's sync" in mnt.log()
