"""The read path, on hour-long calls (20 minutes with --quick), all read from one emulator:

- cold read of an outbound.wav through a fresh amigofs mount, against the memfs ceiling (the
  same bytes from memory through pyfuse3) and against curl straight from the emulator; the
  bytes it fetched, over the file's size;
- re-read after a remount over the same cache directory (and after drop_caches, unless
  --no-drop-caches): time against the ceiling, and bytes fetched again;
- an ffmpeg seek to the middle of an inbound.wav: bytes fetched, over the file's size;
- peak RSS of the mount after reading `rss_files` files (5: two one after the other, then
  three at once), over the bytes read, and over its RSS when idle after mounting;
- CPU seconds per GB of the cold read and the re-read: the mount process and its helpers
  (the fetch worker), from /proc/PID/stat, beside the peers' (benchmarks/peers.py).

The ceiling measured here is kept in `harness.memfs_read_s` for the peers; `ceiling` measures
it on its own when this scenario did not run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from amigofs.emulator.data import Dataset
from benchmarks.harness import COMMAND_DEADLINE, READER, Harness, series
from benchmarks.memfs import PresentedFile, config_from_knobs, presented_file, recordings
from benchmarks.report import median
from tests.emulator_proc import EmulatorProc


def run(harness: Harness) -> None:
    """Starts one emulator with the hour-long calls; each measurement on it fails on its own."""
    s = harness.settings
    calls = max(s.runs, s.rss_files, 2)
    knobs = harness.knobs(
        calls_per_workspace=calls, long_calls=calls, long_duration=s.long_duration
    )
    data = Dataset(config_from_knobs(knobs))
    recs = list(recordings(data))
    outbound = [presented_file(data, rec, "outbound.wav") for rec in recs]
    inbound = [presented_file(data, rec, "inbound.wav") for rec in recs]
    harness.raw["settings_long_calls"] = {
        "knobs": knobs,
        "outbound_bytes": outbound[0].size,
        "inbound_bytes": inbound[0].size,
    }
    with harness.emulator("long", **knobs) as emu:
        harness.scenario("cold read and re-read", lambda: cold_read(harness, emu, data, outbound))
        harness.scenario("ffmpeg seek", lambda: seek(harness, emu, data, inbound))
        harness.scenario("peak RSS", lambda: peak_rss(harness, emu, outbound))


def ceiling(harness: Harness, knobs: dict[str, Any], files: list[PresentedFile]) -> float | None:
    """The memfs read time of these files (median over the runs), when the cold-read
    scenario did not measure it; one mount per run, so each file is read once per mount."""
    seconds = []
    for run in range(harness.settings.runs):
        pf = files[run % len(files)]
        with harness.memfs(knobs, preload=[pf.name]) as mem:
            path = mem.path / pf.workspace_id / pf.call_sid / pf.name
            path.parent.stat()
            seconds.append(harness.read_one(path, pf.size))
        harness.progress(f"run {run + 1}/{harness.settings.runs}: memfs {seconds[-1]:.3f}s")
    return median(seconds)


def cold_read(
    harness: Harness, emu: EmulatorProc, data: Dataset, files: list[PresentedFile]
) -> None:
    s = harness.settings
    knobs = emu.knobs
    raw = series(
        "memfs_s",
        "curl_s",
        "amigofs_cold_s",
        "amigofs_cold_fetched",
        "amigofs_reread_s",
        "amigofs_reread_fetched",
        "amigofs_reread_dropped_s",
        "amigofs_reread_dropped_fetched",
        "amigofs_cold_cpu_s",
        "amigofs_reread_cpu_s",
        "amigofs_reread_dropped_cpu_s",
    )
    size = files[0].size
    harness.raw["cold_read"] = {"file_bytes": size, **raw}
    with harness.memfs(knobs, preload=["outbound.wav"]) as mem:
        for run in range(s.runs):
            pf = files[run]
            rel = Path(pf.workspace_id, pf.call_sid, pf.name)
            # The ceiling: each memfs file is read once per mount, so never from the page cache.
            (mem.path / rel.parent).stat()
            raw["memfs_s"].append(harness.read_one(mem.path / rel, pf.size))
            if run == 0:
                harness.verify(mem.path / rel, pf, data)
            seconds, got = harness.curl(emu.url + pf.stored_path)
            if got != pf.stored_size:
                raise RuntimeError(f"curl got {got} bytes, expected {pf.stored_size}")
            raw["curl_s"].append(seconds)

            cache = harness.work.new("cache")
            with harness.amigofs(emu, cache) as mnt:
                (mnt.path / rel.parent).stat()  # lookups and the call's small requests
                emu.reset_stats()
                cpu = cpu_seconds(mnt.process.pid)
                raw["amigofs_cold_s"].append(harness.read_one(mnt.path / rel, pf.size))
                raw["amigofs_cold_cpu_s"].append(cpu_seconds(mnt.process.pid) - cpu)
                raw["amigofs_cold_fetched"].append(harness.downloaded(emu, pf.stored_path)[0])
                harness.verify(mnt.path / rel, pf, data)
            # A new mount over the same cache directory: the kernel's pages are gone with
            # the old mount; what is left is whatever amigofs kept on disk.
            variants = [("amigofs_reread", False)]
            if s.drop_caches:
                variants.append(("amigofs_reread_dropped", True))
            for key, drop in variants:
                if drop:
                    harness.drop_caches()
                with harness.amigofs(emu, cache) as mnt:
                    (mnt.path / rel.parent).stat()
                    emu.reset_stats()
                    cpu = cpu_seconds(mnt.process.pid)
                    raw[f"{key}_s"].append(harness.read_one(mnt.path / rel, pf.size))
                    raw[f"{key}_cpu_s"].append(cpu_seconds(mnt.process.pid) - cpu)
                    raw[f"{key}_fetched"].append(harness.downloaded(emu, pf.stored_path)[0])
            harness.progress(
                f"run {run + 1}/{s.runs}: {size / 1e6:.0f} MB memfs {raw['memfs_s'][-1]:.3f}s"
                f" curl {raw['curl_s'][-1]:.3f}s amigofs cold {raw['amigofs_cold_s'][-1]:.3f}s"
                f" re-read {raw['amigofs_reread_s'][-1]:.3f}s"
                f" (fetched {raw['amigofs_reread_fetched'][-1] / 1e6:.1f} MB);"
                f" CPU {raw['amigofs_cold_cpu_s'][-1]:.2f} / {raw['amigofs_reread_cpu_s'][-1]:.2f} s"
            )
    mem_s = median(raw["memfs_s"])
    harness.memfs_read_s = mem_s
    cold_s = median(raw["amigofs_cold_s"])
    curl_s = median(raw["curl_s"])
    mb = f"{size / 1e6:.0f} MB"
    harness.figure("amigofs.cold", "read", f"amigofs cold read {mb} / memfs", cold_s, mem_s, "s")
    harness.figure("curl.emulator", "read", f"curl from emulator {mb} / memfs", curl_s, mem_s, "s")
    harness.figure(
        "amigofs.cold_vs_curl",
        "other",
        "amigofs cold read / curl from emulator",
        cold_s,
        curl_s,
        "s",
    )
    harness.figure(
        "amigofs.reread",
        "read",
        "amigofs re-read after remount / memfs",
        median(raw["amigofs_reread_s"]),
        mem_s,
        "s",
    )
    for key, label in (("cold", "cold read"), ("reread", "re-read after remount")):
        cpu_figure(
            harness, f"amigofs.{key}_cpu", f"amigofs {label}", raw[f"amigofs_{key}_cpu_s"], size
        )
    if s.drop_caches:
        harness.figure(
            "amigofs.reread_dropped",
            "read",
            "amigofs re-read after remount + drop_caches / memfs",
            median(raw["amigofs_reread_dropped_s"]),
            mem_s,
            "s",
        )
    harness.figure(
        "amigofs.cold_fetched",
        "bytes",
        "amigofs cold read: fetched / size",
        median(raw["amigofs_cold_fetched"]),
        size,
        "bytes",
    )
    harness.figure(
        "amigofs.reread_fetched",
        "bytes",
        "amigofs re-read after remount: fetched / size",
        median(raw["amigofs_reread_fetched"]),
        size,
        "bytes",
    )


def seek(harness: Harness, emu: EmulatorProc, data: Dataset, files: list[PresentedFile]) -> None:
    s = harness.settings
    at = s.long_duration / 2
    raw: dict[str, Any] = {
        "seek_s": at,
        "file_bytes": files[0].size,
        "amigofs_s": [],
        "amigofs_fetched": [],
        "amigofs_download_requests": [],
    }
    harness.raw["ffmpeg_seek"] = raw
    for run in range(s.runs):
        pf = files[run]
        rel = Path(pf.workspace_id, pf.call_sid, pf.name)
        with harness.amigofs(emu) as mnt:
            (mnt.path / rel.parent).stat()
            emu.reset_stats()
            raw["amigofs_s"].append(harness.ffmpeg(mnt.path / rel, at))
            fetched, requests = harness.downloaded(emu, pf.stored_path)
            raw["amigofs_fetched"].append(fetched)
            raw["amigofs_download_requests"].append(requests)
        harness.progress(
            f"run {run + 1}/{s.runs}: ffmpeg -ss {at:g} on {pf.size / 1e6:.1f} MB inbound.wav:"
            f" {raw['amigofs_s'][-1]:.3f}s, fetched {fetched / 1e6:.2f} MB in {requests} requests"
        )
    harness.figure(
        "amigofs.seek_fetched",
        "bytes",
        f"amigofs ffmpeg -ss {at:g} -t {s.ffmpeg_seconds:g}: fetched / size",
        median(raw["amigofs_fetched"]),
        files[0].size,
        "bytes",
    )


def peak_rss(harness: Harness, emu: EmulatorProc, files: list[PresentedFile]) -> None:
    s = harness.settings
    chosen = files[: s.rss_files]
    total = sum(pf.size for pf in chosen)
    raw: dict[str, Any] = {
        "bytes_read": total,
        "files": len(chosen),
        "concurrent": s.rss_concurrent,
        "idle_rss_bytes": [],
        "peak_rss_bytes": [],
        "tree_peak_rss_bytes": [],
        "tree_anon_rss_bytes": [],
        "processes": [],
    }
    harness.raw["peak_rss"] = raw
    sequential = len(chosen) - s.rss_concurrent
    for run in range(s.runs):
        with harness.amigofs(emu) as mnt:
            paths = [mnt.path / pf.workspace_id / pf.call_sid / pf.name for pf in chosen]
            for path in paths:
                path.parent.stat()
            raw["idle_rss_bytes"].append(_status_bytes(mnt.process.pid, "VmRSS"))
            for path in paths[:sequential]:
                harness.read(path)
            # The rest at once, each from its own reader process.
            with contextlib.ExitStack() as stack:
                readers = [
                    stack.enter_context(
                        subprocess.Popen(
                            [sys.executable, str(READER), str(path)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                        )
                    )
                    for path in paths[sequential:]
                ]
                try:
                    for reader in readers:
                        if reader.wait(COMMAND_DEADLINE) != 0:
                            raise RuntimeError("a concurrent read failed")
                finally:
                    for reader in readers:
                        if reader.poll() is None:
                            reader.kill()
            raw["peak_rss_bytes"].append(_status_bytes(mnt.process.pid, "VmHWM"))
            # amigofs may start helper processes (a fetch worker): count them too. The sum
            # of each one's peak bounds the peak of their sum from above.
            tree = _process_tree(mnt.process.pid)
            raw["processes"].append(tree)
            raw["tree_peak_rss_bytes"].append(sum(p["VmHWM"] for p in tree))
            raw["tree_anon_rss_bytes"].append(sum(p["RssAnon"] for p in tree))
        harness.progress(
            f"run {run + 1}/{s.runs}: read {total / 1e6:.0f} MB ({sequential} then"
            f" {s.rss_concurrent} at once): peak RSS {raw['peak_rss_bytes'][-1] / 2**20:.0f} MiB"
            f" (idle {raw['idle_rss_bytes'][-1] / 2**20:.0f} MiB; {len(tree)} process(es),"
            f" sum of peaks {raw['tree_peak_rss_bytes'][-1] / 2**20:.0f} MiB,"
            f" anonymous now {raw['tree_anon_rss_bytes'][-1] / 2**20:.0f} MiB)"
        )
    peak = median(raw["peak_rss_bytes"])
    harness.figure(
        "amigofs.peak_rss",
        "other",
        f"amigofs peak RSS after reading {total / 1e6:.0f} MB / bytes read",
        peak,
        total,
        "bytes",
    )
    if any(len(tree) > 1 for tree in raw["processes"]):
        harness.figure(
            "amigofs.tree_peak_rss",
            "other",
            f"amigofs and its helpers, sum of peak RSS after reading {total / 1e6:.0f} MB"
            " / bytes read",
            median(raw["tree_peak_rss_bytes"]),
            total,
            "bytes",
        )
    harness.figure(
        "amigofs.peak_rss_vs_idle",
        "other",
        "amigofs peak RSS / its RSS when idle after mounting",
        peak,
        median(raw["idle_rss_bytes"]),
        "bytes",
    )


def _status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) a process and its descendants have used so far, from
    /proc/PID/stat: for amigofs, the mount process and its fetch worker."""
    total = 0
    for pid in _descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def cpu_figure(harness: Harness, key: str, label: str, seconds: list[float], size: int) -> None:
    """CPU seconds per GB read (the median over the runs)."""
    harness.figure(
        key, "other", f"{label}: CPU-s / GB read (its processes)", median(seconds), size / 1e9, ""
    )


def _descendants(root: int) -> list[int]:
    """A process and all its descendants, the process first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        found.append(pid)
    return found


def _process_tree(root: int) -> list[dict[str, Any]]:
    """Memory figures (bytes) of a process and all its descendants."""
    found = []
    for pid in _descendants(root):
        try:
            info: dict[str, Any] = {"pid": pid}
            for field in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                info[field] = _status_bytes(pid, field)
            info["cmd"] = (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")[:200]
            )
        except (OSError, RuntimeError):
            continue
        found.append(info)
    return found
