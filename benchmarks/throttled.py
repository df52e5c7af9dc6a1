"""A cold read from an emulator that throttles each stream (20 MB/s and 20 ms of latency, by
default): amigofs's time against one curl stream of the same file.

The cap is per stream: this measures what amigofs's parallel ranged GETs gain over one
download, which the unthrottled loopback of the other scenarios hides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amigofs.emulator.data import Dataset
from benchmarks.harness import Harness
from benchmarks.memfs import config_from_knobs, presented_file, recordings
from benchmarks.report import median


def run(harness: Harness) -> None:
    s = harness.settings
    knobs = harness.knobs(calls_per_workspace=1, long_calls=1, long_duration=s.throttled_duration)
    data = Dataset(config_from_knobs(knobs))
    [rec] = list(recordings(data))
    pf = presented_file(data, rec, "outbound.wav")
    rel = Path(pf.workspace_id, pf.call_sid, pf.name)
    raw: dict[str, Any] = {
        "file_bytes": pf.size,
        "bandwidth": s.bandwidth,
        "latency": s.latency,
        "curl_s": [],
        "amigofs_s": [],
        "amigofs_download_requests": [],
    }
    harness.raw["throttled"] = raw
    with harness.emulator("throttled", **knobs, bandwidth=s.bandwidth, latency=s.latency) as emu:
        for run in range(s.runs):
            seconds, got = harness.curl(emu.url + pf.stored_path)
            if got != pf.stored_size:
                raise RuntimeError(f"curl got {got} bytes, expected {pf.stored_size}")
            raw["curl_s"].append(seconds)
            with harness.amigofs(emu) as mnt:
                (mnt.path / rel.parent).stat()
                emu.reset_stats()
                raw["amigofs_s"].append(harness.read_one(mnt.path / rel, pf.size))
                raw["amigofs_download_requests"].append(harness.downloaded(emu, pf.stored_path)[1])
            harness.progress(
                f"run {run + 1}/{s.runs}: {pf.size / 1e6:.1f} MB at {s.bandwidth / 1e6:g} MB/s"
                f" per stream + {s.latency * 1000:g} ms: curl {seconds:.3f}s,"
                f" amigofs {raw['amigofs_s'][-1]:.3f}s"
                f" ({raw['amigofs_download_requests'][-1]} requests)"
            )
    harness.figure(
        "amigofs.throttled_vs_curl",
        "other",
        f"throttled ({s.bandwidth / 1e6:g} MB/s/stream, {s.latency * 1000:g} ms):"
        " amigofs cold read / one curl stream",
        median(raw["amigofs_s"]),
        median(raw["curl_s"]),
        "s",
    )
