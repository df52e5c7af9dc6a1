"""What a stat walk and a first read cost, counted by the emulator: a walk's sizes cost
one request a call (its metadata, no link, no download), metadata.json is the metadata
answer's bytes (no download either), and `head -c 65536` of a cold audio file of a
listed call makes three requests in two round trips (urls and metadata together, then
one ranged download)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections import Counter
from typing import Any

from amigofs.emulator.data import METADATA_FILENAME, Recording
from amigofs.fs.wav import audio_layout
from tests.emulator_proc import running_emulator
from tests.mounting import mounted
from tests.reliability import request_log, stored_name

TOOL_TIMEOUT = 60
CALLS = 150


def _presented_size(recording: Recording, name: str) -> int:
    if name == METADATA_FILENAME:
        return len(recording.metadata_bytes)
    channel = name.removesuffix(".wav")
    metadata = recording.metadata
    return audio_layout(
        stored_name(recording, name),
        str(metadata[f"{channel}_format"]),
        int(str(metadata[f"{channel}_sample_rate"])),
        int(str(metadata[f"{channel}_size_bytes"])),
    ).size


def _call_requests(log: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(e["op"]) for e in log if e["op"] != "list-calls")


def test_a_stat_walk_costs_one_request_a_call_and_shows_the_emulators_sizes() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=CALLS, max_duration=30.0) as emu,
        mounted(emu.url, emu.api_key) as mnt,
    ):
        workspace_id = emu.data.workspaces[0].id
        workspace = mnt.path / workspace_id
        recordings = {r.call_sid: r for r in emu.data.recordings()}
        assert sorted(os.listdir(workspace)) == sorted(recordings)
        assert {r.storage for r in recordings.values()} == {"wav", "raw"}
        emu.reset_stats()
        found = subprocess.run(
            ["find", str(workspace), "-type", "f", "-printf", "%s %P\n"],
            capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=True,
        )  # fmt: skip
        sizes = {}
        for line in found.stdout.splitlines():
            size, relative = line.split(" ", 1)
            sizes[relative] = int(size)
        assert len(sizes) == 4 * CALLS  # call.wav too
        for sid, recording in recordings.items():
            for name in ("inbound.wav", "outbound.wav", METADATA_FILENAME):
                assert sizes[f"{sid}/{name}"] == _presented_size(recording, name), (sid, name)
        requests = _call_requests(request_log(emu))
        assert requests["download-recording-file"] == 0, requests
        assert requests.total() <= 1.2 * CALLS, requests
        assert requests["get-recording-metadata"] == CALLS, "each call's metadata once"
        # Read after the walk, the files are whole: the first read fetches the links.
        for sid in sorted(recordings)[:4]:
            for name in ("call.wav", "inbound.wav"):
                data = (workspace / sid / name).read_bytes()
                assert (
                    len(data) == sizes[f"{sid}/{name}"] == os.stat(workspace / sid / name).st_size
                )
                assert data[:4] == b"RIFF", (sid, name)


def test_metadata_json_is_the_metadata_answer_with_no_download() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=4) as emu,
        mounted(emu.url, emu.api_key) as mnt,
    ):
        recording = next(emu.data.recordings())
        call_dir = mnt.path / recording.workspace_id / recording.call_sid
        assert recording.call_sid in os.listdir(call_dir.parent)
        emu.reset_stats()
        path = call_dir / METADATA_FILENAME
        assert os.stat(path).st_size == len(recording.metadata_bytes)
        assert _call_requests(request_log(emu)) == {"get-recording-metadata": 1}
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == hashlib.sha256(recording.metadata_bytes).hexdigest()
        assert _call_requests(request_log(emu)) == {"get-recording-metadata": 1}


def test_head_of_a_cold_file_of_a_listed_call_is_two_round_trips_three_requests() -> None:
    latency = 0.4
    with (
        running_emulator(workspaces=1, calls_per_workspace=3, latency=latency) as emu,
        mounted(emu.url, emu.api_key) as mnt,
    ):
        recording = next(emu.data.recordings())
        workspace = mnt.path / recording.workspace_id
        assert recording.call_sid in os.listdir(workspace)
        emu.reset_stats()
        head = subprocess.run(
            ["head", "-c", "65536", str(workspace / recording.call_sid / "inbound.wav")],
            capture_output=True, timeout=TOOL_TIMEOUT, check=True,
        )  # fmt: skip
        assert len(head.stdout) == 65536
        log = request_log(emu)
        assert _call_requests(log) == {
            "get-recording-urls": 1, "get-recording-metadata": 1, "download-recording-file": 1,
        }, log  # fmt: skip
        arrived = {str(e["op"]): float(e["time"]) for e in log}
        urls, metadata = arrived["get-recording-urls"], arrived["get-recording-metadata"]
        # In flight together: each sent before the other's answer (a latency) came back.
        assert abs(urls - metadata) < latency / 2, arrived
        # The bytes in the next round trip.
        assert arrived["download-recording-file"] - max(urls, metadata) < 1.5 * latency, arrived
