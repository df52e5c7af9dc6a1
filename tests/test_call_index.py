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
from tests.reliability import ThreadResult

pytestmark = pytest.mark.mount

DEADLINE = 180.0


def recorded_sids(emulator: EmulatorProc, workspace_id: str) -> list[str]:
    """The calls of a workspace a mount must list (the server's, as of now)."""
    data = emulator.synced_data()
    return [
        c.call_sid
        for c in data.calls(workspace_id)
        if c.call_sid is not None and c.recording is not None
    ]


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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_ls_of_100000_calls_behind_a_latency_lists_every_call_once() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=100_000, latency=0.02, max_duration=30.0
    ) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        expected = recorded_sids(emulator, workspace_id)
        # A deadline far shorter than the whole sync (1,000 pages at 20 ms).
        with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id,
                     "--timeout", "2") as mnt:  # fmt: skip
            names = ls_until_complete(mnt.path / workspace_id)
            doubled = [name for name, count in Counter(names).items() if count > 1]
            assert not doubled, doubled[:5]
            assert sorted(names) == sorted(expected)
            # Pages by offset, each once: 1,000 for 100,000 calls, and a few more at most.
            assert list_calls(emulator) <= len(expected) // 100 + 20
            assert emulator.stats()["audio_bytes"] == 0
            assert peak_rss_mib(mnt.process.pid) < 300
            # Listed again: from the index, not one request more.
            emulator.reset_stats()
            assert sorted(os.listdir(mnt.path / workspace_id)) == sorted(expected)
            assert list_calls(emulator) == 0


def test_the_first_entries_come_before_the_sync_is_done_and_a_remount_lists_at_once() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=20_000, latency=0.1, max_duration=30.0
    ) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        expected = sorted(recorded_sids(emulator, workspace_id))
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
            assert sorted(ls_until_complete(mnt.path / workspace_id)) == expected
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
        sid = recorded_sids(emulator, workspace_id)[54_321]
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
            before_and_during = set(recorded_sids(emulator, workspace_id))
            assert set(names) == before_and_during
            # After the sync: 150 more, and a refresh once the listing's TTL is over.
            emulator.control(add_calls=150)
            emulator.reset_stats()
            wanted = set(recorded_sids(emulator, workspace_id))

            def refreshed() -> bool:
                return set(os.listdir(workspace)) == wanted

            wait_until(refreshed, DEADLINE, "the new calls to be listed", interval=0.2)
            # Pages from the newest end until one is all known: 3 for 150 new calls.
            assert list_calls(emulator) <= 4, emulator.stats()["requests"]
            names = os.listdir(workspace)
            assert len(names) == len(set(names)) == len(wanted)


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage"])
def test_a_damaged_index_is_rebuilt_and_the_listing_is_exact(damage: str) -> None:
    with running_emulator(workspaces=1, calls_per_workspace=2_000, max_duration=30.0) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        expected = sorted(recorded_sids(emulator, workspace_id))
        cache = public_tempdir("amigofs-cache-")
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            assert sorted(ls_until_complete(mnt.path / workspace_id)) == expected
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
        expected = sorted(recorded_sids(emulator, workspace_id))
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
            assert sorted(names) == expected and len(names) == len(set(names))
            # The pages read before the kill are not read again (a few in flight may be).
            assert list_calls(emulator) <= pages - done_before + 20
            assert "resuming the listing's sync" in mnt.log()
