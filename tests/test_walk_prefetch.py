"""Walk prefetch: a workspace read file after file gets the next calls' audio ahead.

Counted in the emulator's own bytes per downloaded file: a walk fetches each byte
once, no further ahead than its budget (8 calls), nothing once it stops; a peek at
headers, ffprobe or a single `cat` fetches nothing of the calls it did not touch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from amigofs.daemon.control import read_stats
from amigofs.emulator.data import Recording
from amigofs.fs.walk import CALLS_AHEAD
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted, wait_until
from tests.reliability import (
    LISTED,
    PRESENTED,
    downloads_landed,
    fetched_bytes,
    presented_bytes,
    stored_name,
    stored_size,
)

DEADLINE = 60.0
AUDIO = ("inbound.wav", "outbound.wav")


def _by_name(emulator: EmulatorProc) -> list[Recording]:
    return sorted(emulator.data.recordings(), key=lambda r: r.call_sid)


@contextlib.contextmanager
def _listed_workspace(
    **knobs: float,
) -> Iterator[tuple[EmulatorProc, Mount, Path, list[Recording]]]:
    """One workspace of 16 calls of `knobs` durations, mounted and listed: the emulator,
    the mount, the workspace directory and its calls in name order."""
    with (
        running_emulator(workspaces=1, calls_per_workspace=16, **knobs) as emu,  # type: ignore[arg-type]
        mounted(emu.url, emu.api_key) as mnt,
    ):
        recordings = _by_name(emu)
        workspace = mnt.path / recordings[0].workspace_id
        assert len(os.listdir(workspace)) == len(recordings)
        yield emu, mnt, workspace, recordings


def test_a_walk_fetches_the_next_calls_once_within_its_budget_and_stops_with_it() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=24, max_duration=8.0) as emu,
        mounted(emu.url, emu.api_key) as mnt,
    ):
        recordings = _by_name(emu)
        workspace = mnt.path / recordings[0].workspace_id
        assert sorted(os.listdir(workspace)) == [r.call_sid for r in recordings]
        walked = 4
        # As rsync reads them: the calls in name order, each call's files in name order.
        for recording in recordings[:walked]:
            for name in sorted(LISTED):
                (workspace / recording.call_sid / name).read_bytes()
        ahead = recordings[walked : walked + CALLS_AHEAD]
        wait_until(
            lambda: all(
                fetched_bytes(emu, r, name) == stored_size(r, name) for r in ahead for name in AUDIO
            ),
            DEADLINE,
            f"the {CALLS_AHEAD} calls after the walk to be fetched ahead",
        )
        downloads_landed(mnt)
        for recording in recordings[: walked + CALLS_AHEAD]:
            for name in AUDIO:
                assert fetched_bytes(emu, recording, name) == stored_size(recording, name), (
                    f"{recording.call_sid}/{name}: fetched other than once"
                )
        beyond = recordings[walked + CALLS_AHEAD :]
        assert [fetched_bytes(emu, r, name) for r in beyond for name in AUDIO] == [0] * (
            2 * len(beyond)
        ), "fetched past the walk's budget, or after it stopped"
        # What was fetched ahead is what the walk then reads: bytes as stored.
        for recording in ahead:
            for name in PRESENTED:
                data = (workspace / recording.call_sid / name).read_bytes()
                assert data == presented_bytes(emu, recording, name)


def test_peeks_ffprobe_and_one_cat_fetch_nothing_of_other_calls() -> None:
    with _listed_workspace(min_duration=40.0, max_duration=60.0) as (
        emu,
        mnt,
        workspace,
        recordings,
    ):
        peeked, rest = recordings[:8], recordings[8:]
        # A file manager's preview: the first 4 KiB of each audio file, in order.
        for recording in peeked:
            for name in (*AUDIO, "call.wav"):
                with open(workspace / recording.call_sid / name, "rb") as f:
                    assert len(f.read(4096)) == 4096
        for recording in peeked:
            probe = subprocess.run(
                ["ffprobe", "-v", "error", "-show_format", str(workspace / recording.call_sid /
                 "outbound.wav")],
                capture_output=True, timeout=DEADLINE, check=False,
            )  # fmt: skip
            assert probe.returncode == 0, probe.stderr
        # One cat of one file, whole.
        single = rest[0]
        data = (workspace / single.call_sid / "outbound.wav").read_bytes()
        assert (
            hashlib.sha256(data).digest()
            == hashlib.sha256(presented_bytes(emu, single, "outbound.wav")).digest()
        )
        downloads_landed(mnt)
        for recording in peeked:
            for name in AUDIO:
                assert fetched_bytes(emu, recording, name) <= 2 << 20, (recording.call_sid, name)
        assert fetched_bytes(emu, single, "outbound.wav") == stored_size(single, "outbound.wav")
        untouched = [(r.call_sid, n, fetched_bytes(emu, r, n)) for r in rest[1:] for n in AUDIO]
        assert [f for *_, f in untouched] == [0] * len(untouched), untouched
        assert fetched_bytes(emu, single, "inbound.wav") == 0


def test_under_cache_pressure_a_walk_keeps_the_file_being_read_and_the_bound(
    tmp_path: Path,
) -> None:
    with running_emulator(workspaces=1, calls_per_workspace=40, min_duration=40.0,
                          max_duration=50.0) as emu:  # fmt: skip
        recordings = _by_name(emu)
        stored = sum(stored_size(r, n) for r in recordings for n in AUDIO)
        cache_size = 16 << 20  # the least --cache-size takes
        assert stored > 2 * cache_size
        with mounted(emu.url, emu.api_key, "--cache-size", str(cache_size)) as mnt:
            workspace_id = recordings[0].workspace_id
            copy = tmp_path / "copy"
            result = subprocess.run(
                ["rsync", "-a", f"{mnt.path / workspace_id}/", str(copy)],
                capture_output=True, text=True, timeout=DEADLINE * 2, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            downloads_landed(mnt)
            stats = read_stats(mnt.path)
            assert stats["cache"]["used_bytes"] <= stats["cache"]["max_bytes"] == cache_size
            for recording in recordings:
                for name in PRESENTED:
                    got = (copy / recording.call_sid / name).read_bytes()
                    assert got == presented_bytes(emu, recording, name), (recording, name)
                for name in AUDIO:
                    # Each byte once: call.wav, inbound.wav and outbound.wav of a call are
                    # read one after the other from the same blocks, none evicted between.
                    assert fetched_bytes(emu, recording, name) == stored_size(recording, name), (
                        recording.call_sid,
                        name,
                    )


def test_the_first_bytes_of_a_listed_call_wait_for_no_metadata_file() -> None:
    """head -c 64K of a listed call's audio: its urls and metadata at once, then the audio
    (2 round trips, not 3); metadata.json is the metadata answer, never downloaded. The
    emulator's request log says so: with 400 ms a request, the audio request arrives one
    round after the urls and metadata, not a whole request later."""
    latency = 0.4
    with (
        running_emulator(workspaces=1, calls_per_workspace=3, latency=latency) as emu,
        mounted(emu.url, emu.api_key) as mnt,
    ):
        recording = _by_name(emu)[0]
        workspace = mnt.path / recording.workspace_id
        assert recording.call_sid in os.listdir(workspace)
        emu.reset_stats()
        with open(workspace / recording.call_sid / "inbound.wav", "rb") as f:
            data = f.read(65536)
        assert data == presented_bytes(emu, recording, "inbound.wav")[:65536]
        log = [e for e in emu.stats()["log"] if recording.call_sid in str(e["path"])]
        arrivals = {
            str(e["path"]).rsplit("/", 1)[-1].split("?")[0] if "/download/" in str(e["path"])
            else str(e["op"]): float(e["time"])  # type: ignore[arg-type]
            for e in log
        }  # fmt: skip
        audio = arrivals[stored_name(recording, "inbound.wav")]
        first = min(arrivals["get-recording-urls"], arrivals["get-recording-metadata"])
        assert audio - first < 1.5 * latency, arrivals  # one round after urls and metadata
        assert "metadata.json" not in arrivals, arrivals


def _rounds(emulator: EmulatorProc, latency: float) -> list[list[str]]:
    """The emulator's requests since its last reset, as rounds: a request arriving within
    half a latency of a round's first one is part of that round (sent beside it)."""
    rounds: list[tuple[float, list[str]]] = []
    for entry in sorted(emulator.stats()["log"], key=lambda e: float(e["time"])):
        when, what = float(entry["time"]), str(entry["path"]).split("?")[0]
        if rounds and when - rounds[-1][0] < latency / 2:
            rounds[-1][1].append(what)
        else:
            rounds.append((when, [what]))
    return [names for _, names in rounds]


def test_the_first_bytes_of_a_call_looked_up_by_sid_take_three_rounds_at_most() -> None:
    """A cold mount, nothing listed: `head -c 64K ws/SID/inbound.wav` costs the root's
    listing (to know the workspace), the call's urls and metadata, then the audio."""
    latency = 0.4
    with (
        running_emulator(workspaces=1, calls_per_workspace=3, latency=latency) as emu,
        mounted(emu.url, emu.api_key) as mnt,
    ):
        recording = _by_name(emu)[-1]
        emu.reset_stats()
        path = mnt.path / recording.workspace_id / recording.call_sid / "inbound.wav"
        with open(path, "rb") as f:
            assert f.read(65536) == presented_bytes(emu, recording, "inbound.wav")[:65536]
        rounds = _rounds(emu, latency)
        audio = stored_name(recording, "inbound.wav")
        reached = next(i for i, names in enumerate(rounds) if any(audio in n for n in names))
        assert reached + 1 <= 3, rounds


def test_files_read_whole_side_by_side_are_no_walk() -> None:
    """Several readers at once (amigofs prefetch -j 4, a parallel copy) read what they chose
    and fetch in parallel already: files each read whole, in order, but while the others
    are being read, fetch nothing of the calls after them."""
    # Files larger than what the first reads (and the kernel's readahead) cover.
    with _listed_workspace(min_duration=50.0, max_duration=60.0) as (
        emu,
        mnt,
        workspace,
        recordings,
    ):
        chosen = recordings[:4]
        files = [open(workspace / r.call_sid / "outbound.wav", "rb") for r in chosen]  # noqa: SIM115
        try:
            starts = [f.read(4096) for f in files]  # all of them begun
            for recording, f, start in zip(chosen, files, starts, strict=True):
                assert start + f.read() == presented_bytes(emu, recording, "outbound.wav")
        finally:
            for f in files:
                f.close()
        downloads_landed(mnt)
        rest = [(r.call_sid, n, fetched_bytes(emu, r, n)) for r in recordings[4:] for n in AUDIO]
        assert [f for *_, f in rest] == [0] * len(rest), rest
