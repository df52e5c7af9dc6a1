"""Measure amigofs against baselines measured in the same run, on loopback.

    python -m benchmarks.run [--quick] [--runs 5] [--peers/--no-peers] [--out benchmarks/results/]

Every figure is a ratio of two medians over the runs, both measured here, a moment apart:
amigofs against a memory-backed pyfuse3 filesystem serving the same bytes (benchmarks/memfs.py,
the ceiling of a Python FUSE read loop), against curl straight from the emulator, and peers
(rclone mount, httpdirfs) over nginx serving the same bytes. Results go to OUT/bench-*.json
(every raw timing and ratio, the machine, the commit) and OUT/bench-*.png.

Must run as root (FUSE mounts, dropping the page cache) from the repository's root.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import amigofs
from amigofs.emulator.data import Dataset
from benchmarks import procs
from benchmarks.memfs import PresentedFile, config_from_knobs, presented_file, recordings
from benchmarks.report import (
    Figure,
    code_version,
    machine,
    median,
    ratio,
    table,
    targets,
    targets_table,
    write_chart,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
READER = Path(__file__).resolve().parent / "reader.py"
COMMAND_DEADLINE = 900.0  # a read or a command that takes longer has hung
SPOT_BYTES = 64 * 1024


@dataclass(slots=True, frozen=True)
class Settings:
    runs: int
    quick: bool
    peers: bool
    drop_caches: bool
    long_duration: float  # seconds of the "hour-long" calls
    throttled_duration: float  # seconds of the call read from the throttled emulator
    tree_calls: int  # calls of the listing workspace
    rss_files: int  # distinct outbound files read for the peak RSS
    rss_concurrent: int  # of those, how many at once
    bandwidth: int = 20_000_000
    latency: float = 0.02
    ffmpeg_seconds: float = 10.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        quick = bool(args.quick)
        runs = args.runs if args.runs is not None else (2 if quick else 5)
        return cls(
            runs=runs,
            quick=quick,
            peers=args.peers,
            drop_caches=args.drop_caches,
            long_duration=1200.0 if quick else 3600.0,
            throttled_duration=300.0 if quick else 600.0,
            tree_calls=200 if quick else 1000,
            rss_files=5,
            rss_concurrent=3,
        )


class Aborted(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so every mount and process is cleaned up."""


class Harness:
    def __init__(self, settings: Settings, work: procs.Workdir) -> None:
        self.settings = settings
        self.work = work
        self.api_key = secrets.token_hex(16)
        self.raw: dict[str, Any] = {}
        self.figures: list[Figure] = []
        self.errors: dict[str, str] = {}
        self.began = time.monotonic()
        # curl reads the bearer header from a file, so the key is not in any argv.
        self.header_file = work.path / "auth-header"
        fd = os.open(self.header_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as header:
            header.write(f"Authorization: Bearer {self.api_key}\n")
        self.memfs_read_s: float | None = None  # the ceiling, for the peers

    # --- helpers ---------------------------------------------------------------------------------

    def progress(self, message: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {message}", flush=True)

    def figure(
        self,
        key: str,
        group: str,
        label: str,
        numerator: float | None,
        denominator: float | None,
        unit: str,
    ) -> None:
        self.figures.append(
            Figure(key, group, label, ratio(numerator, denominator), numerator, denominator, unit)
        )

    def scenario(self, name: str, body: Callable[[], None]) -> None:
        """Runs one scenario; a failure is recorded and the next scenario still runs."""
        self.progress(f"== {name}")
        try:
            body()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.errors[name] = message
            self.progress(f"!! {name} failed: {message}")

    def knobs(self, **extra: Any) -> dict[str, Any]:
        return {"workspaces": 1, "null_sid_calls": 0, "no_recording_calls": 0, **extra}

    @contextlib.contextmanager
    def emulator(self, name: str, **knobs: Any) -> Iterator[procs.Emulator]:
        with procs.emulator(self.api_key, self.work.path / f"emulator-{name}.log", **knobs) as emu:
            self.progress(f"emulator {name} at {emu.url}")
            yield emu

    def amigofs(
        self, emu: procs.Emulator, cache: Path | None = None
    ) -> contextlib.AbstractContextManager[procs.Mounted]:
        mountpoint = self.work.new("mnt")
        cache = cache or self.work.new("cache")
        return procs.amigofs_mount(emu, mountpoint, cache, self.work.path / "amigofs.log")

    def memfs(
        self, knobs: dict[str, Any], preload: Sequence[str] = ()
    ) -> contextlib.AbstractContextManager[procs.Mounted]:
        return procs.memfs_mount(knobs, self.work.new("mnt"), self.work.path / "memfs.log", preload)

    def read(self, *paths: Path) -> list[tuple[float, int]]:
        """Times open-to-EOF of each file, in a child process with a deadline."""
        done = subprocess.run(
            [sys.executable, str(READER), *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=COMMAND_DEADLINE,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RuntimeError(f"reading {paths[0]} failed: {last}")
        result = json.loads(done.stdout)
        return list(zip(result["seconds"], result["bytes"], strict=True))

    def read_one(self, path: Path, expected_size: int) -> float:
        [(seconds, size)] = self.read(path)
        if size != expected_size:
            raise RuntimeError(f"read {size} bytes of {path}, expected {expected_size}")
        return seconds

    def curl(self, url: str, auth: bool = True) -> tuple[float, int]:
        """(seconds, bytes) of one curl stream, as curl measures it (start-up excluded)."""
        argv = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total} %{size_download}"]
        if auth:
            argv += ["-H", f"@{self.header_file}"]
        done = subprocess.run(
            [*argv, url], capture_output=True, text=True, timeout=COMMAND_DEADLINE, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"curl {url} failed: {done.stderr.strip()}")
        seconds, size = done.stdout.split()
        return float(seconds), int(size)

    def timed(self, argv: Sequence[str]) -> float:
        """Wall time of a command (start-up included, the same for every filesystem)."""
        start = time.perf_counter()
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=COMMAND_DEADLINE,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return elapsed

    def ffmpeg(self, path: Path, seek: float) -> float:
        return self.timed(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-ss",
                f"{seek:g}",
                "-i",
                str(path),
                "-t",
                f"{self.settings.ffmpeg_seconds:g}",
                "-f",
                "null",
                "-",
            ]
        )

    def drop_caches(self) -> None:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")

    @staticmethod
    def verify(path: Path, expected: PresentedFile, data: Dataset) -> None:
        """Spot-checks that the file serves the expected bytes (start, middle, end), so that no
        figure compares different bytes."""
        size = expected.size
        if path.stat().st_size != size:
            raise RuntimeError(f"{path}: size {path.stat().st_size}, expected {size}")
        fd = os.open(path, os.O_RDONLY)
        try:
            for start in (0, size // 2, max(size - SPOT_BYTES, 0)):
                got = os.pread(fd, SPOT_BYTES, start)
                if got != expected.read(data, start, start + SPOT_BYTES):
                    raise RuntimeError(f"{path}: bytes at {start} differ from the emulator's")
        finally:
            os.close(fd)

    @staticmethod
    def downloaded(emu: procs.Emulator, stored_path: str) -> tuple[int, int]:
        """(bytes of that stored file served, total download requests) since the last reset."""
        stats = emu.stats()
        requests: int = stats["requests"].get("download-recording-file", 0)
        return int(stats["download_bytes"].get(stored_path, 0)), requests

    # --- 1, 3, 4, 5: the hour-long calls -------------------------------------------------------

    def long_calls(self) -> None:
        s = self.settings
        calls = max(s.runs, s.rss_files, 2)
        knobs = self.knobs(
            calls_per_workspace=calls, long_calls=calls, long_duration=s.long_duration
        )
        data = Dataset(config_from_knobs(knobs))
        recs = list(recordings(data))
        outbound = [presented_file(data, rec, "outbound.wav") for rec in recs]
        inbound = [presented_file(data, rec, "inbound.wav") for rec in recs]
        self.raw["settings_long_calls"] = {
            "knobs": knobs,
            "outbound_bytes": outbound[0].size,
            "inbound_bytes": inbound[0].size,
        }
        with self.emulator("long", **knobs) as emu:
            self.scenario("cold read and re-read", lambda: self.cold_read(emu, data, outbound))
            self.scenario("ffmpeg seek", lambda: self.seek(emu, data, inbound))
            self.scenario("peak RSS", lambda: self.peak_rss(emu, outbound))

    def ceiling(self, knobs: dict[str, Any], files: list[PresentedFile]) -> float | None:
        """The memfs read time of these files (median over the runs), when the cold-read
        scenario did not measure it; one mount per run, so each file is read once per mount."""
        seconds = []
        for run in range(self.settings.runs):
            pf = files[run % len(files)]
            with self.memfs(knobs, preload=[pf.name]) as mem:
                path = mem.path / pf.workspace_id / pf.call_sid / pf.name
                path.parent.stat()
                seconds.append(self.read_one(path, pf.size))
            self.progress(f"run {run + 1}/{self.settings.runs}: memfs {seconds[-1]:.3f}s")
        return median(seconds)

    def cold_read(self, emu: procs.Emulator, data: Dataset, files: list[PresentedFile]) -> None:
        s = self.settings
        knobs = emu.knobs
        raw: dict[str, list[Any]] = {
            key: []
            for key in (
                "memfs_s",
                "curl_s",
                "amigofs_cold_s",
                "amigofs_cold_fetched",
                "amigofs_reread_s",
                "amigofs_reread_fetched",
                "amigofs_reread_dropped_s",
                "amigofs_reread_dropped_fetched",
            )
        }
        size = files[0].size
        self.raw["cold_read"] = {"file_bytes": size, **raw}
        with self.memfs(knobs, preload=["outbound.wav"]) as mem:
            for run in range(s.runs):
                pf = files[run]
                rel = Path(pf.workspace_id, pf.call_sid, pf.name)
                # The ceiling: each memfs file is read once per mount, so never from the page cache.
                (mem.path / rel.parent).stat()
                raw["memfs_s"].append(self.read_one(mem.path / rel, pf.size))
                if run == 0:
                    self.verify(mem.path / rel, pf, data)
                seconds, got = self.curl(emu.url + pf.stored_path)
                if got != pf.stored_size:
                    raise RuntimeError(f"curl got {got} bytes, expected {pf.stored_size}")
                raw["curl_s"].append(seconds)

                cache = self.work.new("cache")
                with self.amigofs(emu, cache) as mnt:
                    (mnt.path / rel.parent).stat()  # lookups and the call's small requests
                    emu.reset_stats()
                    raw["amigofs_cold_s"].append(self.read_one(mnt.path / rel, pf.size))
                    raw["amigofs_cold_fetched"].append(self.downloaded(emu, pf.stored_path)[0])
                    self.verify(mnt.path / rel, pf, data)
                # A new mount over the same cache directory: the kernel's pages are gone with
                # the old mount; what is left is whatever amigofs kept on disk.
                variants = [("amigofs_reread", False)]
                if s.drop_caches:
                    variants.append(("amigofs_reread_dropped", True))
                for key, drop in variants:
                    if drop:
                        self.drop_caches()
                    with self.amigofs(emu, cache) as mnt:
                        (mnt.path / rel.parent).stat()
                        emu.reset_stats()
                        raw[f"{key}_s"].append(self.read_one(mnt.path / rel, pf.size))
                        raw[f"{key}_fetched"].append(self.downloaded(emu, pf.stored_path)[0])
                self.progress(
                    f"run {run + 1}/{s.runs}: {size / 1e6:.0f} MB memfs {raw['memfs_s'][-1]:.3f}s"
                    f" curl {raw['curl_s'][-1]:.3f}s amigofs cold {raw['amigofs_cold_s'][-1]:.3f}s"
                    f" re-read {raw['amigofs_reread_s'][-1]:.3f}s"
                    f" (fetched {raw['amigofs_reread_fetched'][-1] / 1e6:.1f} MB)"
                )
        mem_s = median(raw["memfs_s"])
        self.memfs_read_s = mem_s
        cold_s = median(raw["amigofs_cold_s"])
        curl_s = median(raw["curl_s"])
        mb = f"{size / 1e6:.0f} MB"
        self.figure("amigofs.cold", "read", f"amigofs cold read {mb} / memfs", cold_s, mem_s, "s")
        self.figure("curl.emulator", "read", f"curl from emulator {mb} / memfs", curl_s, mem_s, "s")
        self.figure(
            "amigofs.cold_vs_curl",
            "other",
            "amigofs cold read / curl from emulator",
            cold_s,
            curl_s,
            "s",
        )
        self.figure(
            "amigofs.reread",
            "read",
            "amigofs re-read after remount / memfs",
            median(raw["amigofs_reread_s"]),
            mem_s,
            "s",
        )
        if s.drop_caches:
            self.figure(
                "amigofs.reread_dropped",
                "read",
                "amigofs re-read after remount + drop_caches / memfs",
                median(raw["amigofs_reread_dropped_s"]),
                mem_s,
                "s",
            )
        self.figure(
            "amigofs.cold_fetched",
            "bytes",
            "amigofs cold read: fetched / size",
            median(raw["amigofs_cold_fetched"]),
            size,
            "bytes",
        )
        self.figure(
            "amigofs.reread_fetched",
            "bytes",
            "amigofs re-read after remount: fetched / size",
            median(raw["amigofs_reread_fetched"]),
            size,
            "bytes",
        )

    def seek(self, emu: procs.Emulator, data: Dataset, files: list[PresentedFile]) -> None:
        s = self.settings
        at = s.long_duration / 2
        raw: dict[str, Any] = {
            "seek_s": at,
            "file_bytes": files[0].size,
            "amigofs_s": [],
            "amigofs_fetched": [],
            "amigofs_download_requests": [],
        }
        self.raw["ffmpeg_seek"] = raw
        for run in range(s.runs):
            pf = files[run]
            rel = Path(pf.workspace_id, pf.call_sid, pf.name)
            with self.amigofs(emu) as mnt:
                (mnt.path / rel.parent).stat()
                emu.reset_stats()
                raw["amigofs_s"].append(self.ffmpeg(mnt.path / rel, at))
                fetched, requests = self.downloaded(emu, pf.stored_path)
                raw["amigofs_fetched"].append(fetched)
                raw["amigofs_download_requests"].append(requests)
            self.progress(
                f"run {run + 1}/{s.runs}: ffmpeg -ss {at:g} on {pf.size / 1e6:.1f} MB inbound.wav:"
                f" {raw['amigofs_s'][-1]:.3f}s, fetched {fetched / 1e6:.2f} MB in {requests} requests"
            )
        self.figure(
            "amigofs.seek_fetched",
            "bytes",
            f"amigofs ffmpeg -ss {at:g} -t {s.ffmpeg_seconds:g}: fetched / size",
            median(raw["amigofs_fetched"]),
            files[0].size,
            "bytes",
        )

    def peak_rss(self, emu: procs.Emulator, files: list[PresentedFile]) -> None:
        s = self.settings
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
        self.raw["peak_rss"] = raw
        sequential = len(chosen) - s.rss_concurrent
        for run in range(s.runs):
            with self.amigofs(emu) as mnt:
                paths = [mnt.path / pf.workspace_id / pf.call_sid / pf.name for pf in chosen]
                for path in paths:
                    path.parent.stat()
                raw["idle_rss_bytes"].append(_status_bytes(mnt.process.pid, "VmRSS"))
                for path in paths[:sequential]:
                    self.read(path)
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
            self.progress(
                f"run {run + 1}/{s.runs}: read {total / 1e6:.0f} MB ({sequential} then"
                f" {s.rss_concurrent} at once): peak RSS {raw['peak_rss_bytes'][-1] / 2**20:.0f} MiB"
                f" (idle {raw['idle_rss_bytes'][-1] / 2**20:.0f} MiB; {len(tree)} process(es),"
                f" sum of peaks {raw['tree_peak_rss_bytes'][-1] / 2**20:.0f} MiB,"
                f" anonymous now {raw['tree_anon_rss_bytes'][-1] / 2**20:.0f} MiB)"
            )
        peak = median(raw["peak_rss_bytes"])
        self.figure(
            "amigofs.peak_rss",
            "other",
            f"amigofs peak RSS after reading {total / 1e6:.0f} MB / bytes read",
            peak,
            total,
            "bytes",
        )
        if any(len(tree) > 1 for tree in raw["processes"]):
            self.figure(
                "amigofs.tree_peak_rss",
                "other",
                f"amigofs and its helpers, sum of peak RSS after reading {total / 1e6:.0f} MB"
                " / bytes read",
                median(raw["tree_peak_rss_bytes"]),
                total,
                "bytes",
            )
        self.figure(
            "amigofs.peak_rss_vs_idle",
            "other",
            "amigofs peak RSS / its RSS when idle after mounting",
            peak,
            median(raw["idle_rss_bytes"]),
            "bytes",
        )

    # --- 2: throttled --------------------------------------------------------------------------

    def throttled(self) -> None:
        s = self.settings
        knobs = self.knobs(calls_per_workspace=1, long_calls=1, long_duration=s.throttled_duration)
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
        self.raw["throttled"] = raw
        with self.emulator("throttled", **knobs, bandwidth=s.bandwidth, latency=s.latency) as emu:
            for run in range(s.runs):
                seconds, got = self.curl(emu.url + pf.stored_path)
                if got != pf.stored_size:
                    raise RuntimeError(f"curl got {got} bytes, expected {pf.stored_size}")
                raw["curl_s"].append(seconds)
                with self.amigofs(emu) as mnt:
                    (mnt.path / rel.parent).stat()
                    emu.reset_stats()
                    raw["amigofs_s"].append(self.read_one(mnt.path / rel, pf.size))
                    raw["amigofs_download_requests"].append(self.downloaded(emu, pf.stored_path)[1])
                self.progress(
                    f"run {run + 1}/{s.runs}: {pf.size / 1e6:.1f} MB at {s.bandwidth / 1e6:g} MB/s"
                    f" per stream + {s.latency * 1000:g} ms: curl {seconds:.3f}s,"
                    f" amigofs {raw['amigofs_s'][-1]:.3f}s"
                    f" ({raw['amigofs_download_requests'][-1]} requests)"
                )
        self.figure(
            "amigofs.throttled_vs_curl",
            "other",
            f"throttled ({s.bandwidth / 1e6:g} MB/s/stream, {s.latency * 1000:g} ms):"
            " amigofs cold read / one curl stream",
            median(raw["amigofs_s"]),
            median(raw["curl_s"]),
            "s",
        )

    # --- 6: listings ---------------------------------------------------------------------------

    def tree(self) -> None:
        s = self.settings
        knobs = self.knobs(calls_per_workspace=s.tree_calls, long_calls=0)
        data = Dataset(config_from_knobs(knobs))
        ws = data.workspaces[0].id
        commands: dict[str, Callable[[Path], list[str]]] = {
            "ls -l": lambda root: ["ls", "-l", str(root / ws)],
            "find -type f": lambda root: ["find", str(root / ws), "-type", "f"],
            "rsync -a --dry-run": lambda root: [
                "rsync",
                "-a",
                "--dry-run",
                f"{root / ws}/",
                f"{self.work.new('rsync-dest')}/",
            ],
        }
        raw: dict[str, Any] = {"calls": s.tree_calls}
        self.raw["tree"] = raw
        with self.emulator("tree", **knobs) as emu:
            for name, argv in commands.items():
                entry: dict[str, list[Any]] = {"memfs_s": [], "amigofs_s": [], "requests": []}
                raw[name] = entry
                for run in range(s.runs):
                    # A fresh mount each time: the kernel keeps entries and attributes otherwise.
                    with self.memfs(knobs) as mem:
                        entry["memfs_s"].append(self.timed(argv(mem.path)))
                    with self.amigofs(emu) as mnt:
                        emu.reset_stats()
                        entry["amigofs_s"].append(self.timed(argv(mnt.path)))
                        entry["requests"].append(emu.stats()["requests"])
                    self.progress(
                        f"run {run + 1}/{s.runs}: {name} over {s.tree_calls} calls: memfs"
                        f" {entry['memfs_s'][-1]:.3f}s amigofs {entry['amigofs_s'][-1]:.3f}s"
                        f" {sum(entry['requests'][-1].values())} requests"
                    )
                requests = median([sum(r.values()) for r in entry["requests"]])
                self.figure(
                    f"amigofs.tree.{name}",
                    "other",
                    f"{name} over {s.tree_calls} calls: amigofs / memfs time",
                    median(entry["amigofs_s"]),
                    median(entry["memfs_s"]),
                    "s",
                )
                self.figure(
                    f"amigofs.tree_requests.{name}",
                    "other",
                    f"{name} over {s.tree_calls} calls: emulator requests / call",
                    requests,
                    s.tree_calls,
                    "count",
                )

    # --- 7: peers ------------------------------------------------------------------------------

    def peers(self) -> None:
        s = self.settings
        knobs = self.knobs(calls_per_workspace=2, long_calls=2, long_duration=s.long_duration)
        data = Dataset(config_from_knobs(knobs))
        files = [
            (presented_file(data, rec, "outbound.wav"), presented_file(data, rec, "inbound.wav"))
            for rec in recordings(data)
        ]
        www = self.work.new("www")
        for pair in files:
            for pf in pair:
                target = www / pf.workspace_id / pf.call_sid / pf.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(pf.build(data))
                target.chmod(0o644)
        for directory in www.rglob("*"):
            if directory.is_dir():
                directory.chmod(0o755)
        size, inbound_size = files[0][0].size, files[0][1].size
        at = s.long_duration / 2
        raw: dict[str, Any] = {
            "file_bytes": size,
            "inbound_bytes": inbound_size,
            "seek_s": at,
            "memfs_s": self.memfs_read_s,
            "peers": {},
        }
        self.raw["peers"] = raw
        rclone_conf = self.work.path / "rclone.conf"
        rclone_conf.touch()
        peers = _peer_commands(rclone_conf)
        if self.memfs_read_s is None:
            self.memfs_read_s = self.ceiling(knobs, [pair[0] for pair in files])
            raw["memfs_s"] = self.memfs_read_s
        with procs.nginx(www, self.work.new("nginx")) as server:
            self.progress(f"nginx at {server.url} serving {len(files) * 2} files")
            curl_s = []
            for run in range(s.runs):
                pf = files[run % len(files)][0]
                rel = Path(pf.workspace_id, pf.call_sid, pf.name)
                seconds, got = self.curl(f"{server.url}/{rel}", auth=False)
                if got != size:
                    raise RuntimeError(f"curl from nginx got {got} bytes, expected {size}")
                curl_s.append(seconds)
            raw["curl_nginx_s"] = curl_s
            self.figure(
                "curl.nginx",
                "read",
                "curl from nginx / memfs",
                median(curl_s),
                self.memfs_read_s,
                "s",
            )
            for name, argv in peers.items():
                self.scenario(
                    f"peer {name}",
                    lambda name=name, argv=argv: self.peer(  # type: ignore[misc]
                        name, argv, server, data, files
                    ),
                )

    def peer(
        self,
        name: str,
        argv: Callable[[str, Path, Path], list[str]],
        server: procs.Nginx,
        data: Dataset,
        files: list[tuple[PresentedFile, PresentedFile]],
    ) -> None:
        s = self.settings
        raw: dict[str, list[Any]] = {
            key: []
            for key in (
                "cold_s",
                "cold_fetched",
                "warm_s",
                "warm_fetched",
                "seek_s",
                "seek_fetched",
            )
        }
        self.raw["peers"]["peers"][name] = raw
        binary = argv("http://x", Path("m"), Path("c"))[0]
        if not _which(binary):
            raise RuntimeError(f"{binary} is not installed (apt-get install {binary})")
        at = s.long_duration / 2
        log_path = self.work.path / f"{name}.log"

        @contextlib.contextmanager
        def mounted(cache: Path) -> Iterator[procs.Mounted]:
            mountpoint = self.work.new("mnt")
            with procs.fuse_mount(
                name, argv(server.url, mountpoint, cache), mountpoint, log_path
            ) as mnt:
                yield mnt
            server.wait_idle()

        for run in range(s.runs):
            out, inb = files[run % len(files)]
            rel = Path(out.workspace_id, out.call_sid, out.name)
            cache = self.work.new("cache")
            for key in ("cold", "warm"):
                offset = server.log_offset()
                with mounted(cache) as mnt:
                    (mnt.path / rel.parent).stat()
                    raw[f"{key}_s"].append(self.read_one(mnt.path / rel, out.size))
                    if key == "cold":
                        self.verify(mnt.path / rel, out, data)
                raw[f"{key}_fetched"].append(server.bytes_sent(offset, f"/{rel}")[0])
            inrel = Path(inb.workspace_id, inb.call_sid, inb.name)
            offset = server.log_offset()
            with mounted(self.work.new("cache")) as mnt:
                (mnt.path / inrel.parent).stat()
                raw["seek_s"].append(self.ffmpeg(mnt.path / inrel, at))
            raw["seek_fetched"].append(server.bytes_sent(offset, f"/{inrel}")[0])
            self.progress(
                f"run {run + 1}/{s.runs}: {name}: cold {raw['cold_s'][-1]:.3f}s"
                f" warm {raw['warm_s'][-1]:.3f}s (fetched {raw['warm_fetched'][-1] / 1e6:.1f} MB)"
                f" ffmpeg seek fetched {raw['seek_fetched'][-1] / 1e6:.2f} MB"
            )
        out_size, in_size = files[0][0].size, files[0][1].size
        for key, group, label, base, unit in (
            ("cold", "read", "cold read / memfs", self.memfs_read_s, "s"),
            ("warm", "read", "re-read after remount / memfs", self.memfs_read_s, "s"),
            ("cold_fetched", "bytes", "cold read: fetched / size", out_size, "bytes"),
            ("warm_fetched", "bytes", "re-read after remount: fetched / size", out_size, "bytes"),
            (
                "seek_fetched",
                "bytes",
                f"ffmpeg -ss {at:g} -t {s.ffmpeg_seconds:g}: fetched / size",
                in_size,
                "bytes",
            ),
        ):
            column = key if key.endswith("_fetched") else f"{key}_s"
            self.figure(f"{name}.{key}", group, f"{name} {label}", median(raw[column]), base, unit)


def _peer_commands(rclone_conf: Path) -> dict[str, Callable[[str, Path, Path], list[str]]]:
    """Each peer's command line, given the server URL, mount point and cache directory."""
    peers = {f"rclone-{mode}": _rclone(mode, rclone_conf) for mode in ("full", "off")}
    # --no-range-check: httpdirfs 1.2.5's check wrongly fails against nginx (httpdirfs #188).
    peers["httpdirfs-cache"] = lambda url, mnt, cache: [
        "httpdirfs", "-f", "--no-range-check", "--cache", "--cache-location", str(cache),
        url + "/", str(mnt),
    ]  # fmt: skip
    # httpdirfs without --cache is left out: here it reads ~1 MB/s (128 KiB requests, one at
    # a time, ~0.1 s each), which would make a full run last an hour.
    return peers


def _rclone(mode: str, conf: Path) -> Callable[[str, Path, Path], list[str]]:
    def argv(url: str, mountpoint: Path, cache: Path) -> list[str]:
        return [
            "rclone",
            "mount",
            ":http:",
            str(mountpoint),
            "--http-url",
            url + "/",
            "--read-only",
            "--vfs-cache-mode",
            mode,
            "--cache-dir",
            str(cache),
            "--config",
            str(conf),
            "--dir-cache-time",
            "1h",
        ]

    return argv


def _which(binary: str) -> bool:
    import shutil

    return shutil.which(binary) is not None


def _status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _process_tree(root: int) -> list[dict[str, Any]]:
    """Memory figures (bytes) of a process and all its descendants."""
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


def _abort(signum: int, frame: FrameType | None) -> None:
    raise Aborted(signal.Signals(signum).name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark amigofs against baselines measured in the same run (as root).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 runs, 20-minute calls, a 200-call listing: about a minute",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per measurement; figures are medians (default 5, quick 2)",
    )
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure rclone mount and httpdirfs over nginx (default on)",
    )
    parser.add_argument(
        "--drop-caches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also re-read after dropping the page cache (default on)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        choices=["long", "throttled", "tree", "peers"],
        help="run only these scenario groups (repeatable)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results",
        help="where the JSON and PNG go (default benchmarks/results/)",
    )
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.from_args(args)
    if os.geteuid() != 0:
        print("benchmarks: run as root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _abort)
    # Even when started with SIGINT ignored (a background job of a script), Ctrl-C cleans up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format="[benchmarks] %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = dt.datetime.now(dt.UTC)
    document: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "code": {**code_version(REPO), "amigofs_module": str(Path(amigofs.__file__).parent)},
        "settings": asdict(settings),
    }
    only = set(args.only or ["long", "throttled", "tree", "peers"])
    work = procs.Workdir()
    harness = Harness(settings, work)
    harness.progress(f"scratch directory {work.path}; {settings.runs} run(s) per figure")
    try:
        if "long" in only:
            harness.scenario("hour-long calls", harness.long_calls)
        if "throttled" in only:
            harness.scenario("throttled read", harness.throttled)
        if "tree" in only:
            harness.scenario("listings", harness.tree)
        if settings.peers and "peers" in only:
            harness.scenario("peers", harness.peers)
    except KeyboardInterrupt as exc:
        harness.progress(
            f"interrupted ({str(exc) or 'Ctrl-C'}); everything was unmounted and stopped"
        )
        return 130
    finally:
        work.cleanup()
    document["machine"]["loadavg_end"] = [
        float(x) for x in Path("/proc/loadavg").read_text().split()[:3]
    ]
    document["duration_s"] = round(time.monotonic() - harness.began, 1)
    document["raw"] = harness.raw
    document["errors"] = harness.errors
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench-" + started.strftime("%Y%m%d-%H%M%S") + ("-quick" if settings.quick else "")
    json_path = args.out / f"{stem}.json"
    write_json(json_path, document, harness.figures)
    chart_problem = write_chart(args.out / f"{stem}.png", document, harness.figures)
    print()
    print(table(harness.figures))
    print()
    print(targets_table(targets(harness.figures)))
    for name, message in harness.errors.items():
        print(f"failed: {name}: {message}")
    print(f"\nresults: {json_path}")
    if chart_problem:
        print(f"no chart: {chart_problem}")
    else:
        print(f"chart:   {args.out / (stem + '.png')}")
    return 1 if harness.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
