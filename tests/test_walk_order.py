"""Records loaded ahead in the order the walker goes, enough at once, stopping with it.

Counted by the emulator: each call's metadata request (one per call loaded), and when
they arrive. A request takes at least the emulator's latency, so requests that arrive
within one latency of each other were in flight together.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amigofs.config import Settings
from amigofs.daemon.control import read_stats
from amigofs.policy.walk import FIRST_AHEAD
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted, wait_until

DEADLINE = 120.0
CAP = Settings().records_in_flight
METADATA = "get-recording-metadata"


def _loaded(emulator: EmulatorProc) -> Counter[str]:
    """How many times each call's record was loaded (its metadata asked), by call SID."""
    return Counter(
        str(e["path"]).rsplit("/", 2)[-2] for e in emulator.stats()["log"] if e["op"] == METADATA
    )


def _most_together(log: list[dict[str, Any]], latency: float) -> int:
    """The most metadata requests that arrived within one latency: in flight together."""
    times = sorted(float(e["time"]) for e in log if e["op"] == METADATA)
    most = first = 0
    for last, at in enumerate(times):
        while at - times[first] >= latency:
            first += 1
        most = max(most, last - first + 1)
    return most


def _settle(emulator: EmulatorProc, mnt: Mount) -> None:
    """Waits until the mount has no request in flight and the calls loaded are the
    same twice in a row."""
    seen: list[Counter[str]] = []

    def settled() -> bool:
        seen.append(_loaded(emulator))
        return _quiet(mnt) and len(seen) > 1 and seen[-1] == seen[-2]

    wait_until(settled, DEADLINE, "the loads ahead to end")


def _quiet(mnt: Mount) -> bool:
    """No request of the mount in flight: every one started has ended."""
    stats = read_stats(mnt.path)
    ended = {op: sum(by.values()) for op, by in stats["requests_by_status"].items()}
    return all(ended.get(op, 0) == count for op, count in stats["requests"].items())


@contextlib.contextmanager
def _listed(calls: int) -> Iterator[tuple[EmulatorProc, Mount, Path, list[str]]]:
    """A workspace of `calls` calls, mounted and listed: the emulator, the mount, the
    workspace directory and its calls in listing order (readdir's); then no request
    counted yet."""
    with (
        running_emulator(workspaces=1, calls_per_workspace=calls) as emu,
        mounted(emu.url, emu.api_key) as mnt,
    ):
        workspace = mnt.path / next(iter(emu.data.recordings())).workspace_id
        listing = os.listdir(workspace)
        assert len(listing) == calls
        emu.reset_stats()
        yield emu, mnt, workspace, listing


def test_rsync_files_from_in_name_order_keeps_many_loads_in_flight_each_call_once() -> None:
    calls, latency = 2000, 0.02
    with (
        running_emulator(workspaces=1, calls_per_workspace=calls, latency=latency) as emu,
        mounted(emu.url, emu.api_key) as mnt,
        tempfile.TemporaryDirectory() as scratch,
    ):
        by_name = sorted(r.call_sid for r in emu.data.recordings())
        workspace = mnt.path / next(iter(emu.data.recordings())).workspace_id
        # rsync's own sorted order, on a mount that has not listed the workspace.
        files = Path(scratch) / "files"
        files.write_text("".join(f"{sid}/inbound.wav\n{sid}/metadata.json\n" for sid in by_name))
        done = subprocess.run(
            ["rsync", "-an", f"--files-from={files}", f"{workspace}/", f"{scratch}/copy/"],
            capture_output=True, text=True, timeout=DEADLINE, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        _settle(emu, mnt)
        assert _loaded(emu) == Counter(by_name), "a call loaded twice, or one not at all"
        # One at a time, as an order-blind loader goes, would be 1 or 2 (a load's own
        # request and the next call's beside it).
        together = _most_together(emu.stats()["log"], latency)
        assert together >= 8, f"at most {together} calls loaded at once"


def test_find_that_stops_costs_at_most_the_cap_past_it() -> None:
    lines = 300
    with _listed(600) as (emu, mnt, workspace, _):
        done = subprocess.run(
            f"find '{workspace}' | head -n {lines}",
            shell=True, capture_output=True, text=True, timeout=DEADLINE, check=False,
        )  # fmt: skip
        assert len(done.stdout.splitlines()) == lines
        _settle(emu, mnt)
        # A call directory and its files are at least 3 lines of find's output: the calls
        # find reached, and the cap past the last of them (find's buffered output, which
        # head never read, is some calls more than head saw).
        loaded = _loaded(emu)
        assert sum(loaded.values()) <= lines // 3 + CAP, f"{len(loaded)} calls loaded"
        assert set(loaded.values()) == {1}


def test_a_walk_in_listing_order_loads_ahead_in_that_order_and_stops_with_it() -> None:
    walked = 40
    with _listed(120) as (emu, mnt, workspace, listing):  # as find and tar go
        assert sorted(listing) != listing, "the listing order is the name order"
        for sid in listing[:walked]:
            assert os.listdir(workspace / sid)
        _settle(emu, mnt)
        # The calls after the walker in listing order, each once, up to the cap past it
        # (the loads at once grow from a few to the cap as they end well).
        loaded = _loaded(emu)
        ahead = len(loaded) - walked
        assert FIRST_AHEAD <= ahead <= CAP, f"{ahead} calls loaded ahead"
        assert loaded == Counter(listing[: walked + ahead])
        # The walker stopped: nothing more starts while it looks at its call again.
        assert os.listdir(workspace / listing[walked - 1])
        _settle(emu, mnt)
        assert _loaded(emu) == loaded
