"""What every scenario shares: the settings, the scratch mounts and processes, the timed reads
and commands, and the figures collected for the report.

A scenario (benchmarks/read_path.py, throttled.py, tree.py, peers.py) is a function
`run(harness)`: it starts what it needs through the harness, so every mount and process is
cleaned up on any exit, and records its raw timings in `harness.raw` and its ratios with
`harness.figure`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amigofs.emulator.data import Dataset
from benchmarks import procs
from benchmarks.memfs import PresentedFile
from benchmarks.report import Figure, ratio
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount

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
    link_calls: int = 100  # calls of the workspace walked over the internet link profile
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
            link_calls=20 if quick else 100,
        )


def series(*keys: str) -> dict[str, list[Any]]:
    """A scenario's raw measurements: an empty list for each, which gets one value a run."""
    return {key: [] for key in keys}


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
        # The ceiling, for the peers: set by the cold-read scenario when it runs.
        self.memfs_read_s: float | None = None

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
    def emulator(
        self, name: str, profile: str | None = None, **knobs: Any
    ) -> Iterator[EmulatorProc]:
        """An emulator with these knobs over the `--link-profile` named, if any."""
        log_path = self.work.path / f"emulator-{name}.log"
        with running_emulator(self.api_key, profile=profile, log_path=log_path, **knobs) as emu:
            self.progress(f"emulator {name} at {emu.url}" + (f" ({profile})" if profile else ""))
            yield emu

    def amigofs(
        self, emu: EmulatorProc, cache: Path | None = None
    ) -> contextlib.AbstractContextManager[Mount]:
        mountpoint = self.work.new("mnt")
        cache = cache or self.work.new("cache")
        return procs.amigofs_mount(emu, mountpoint, cache, self.work.path / "amigofs.log")

    def memfs(
        self, knobs: dict[str, Any], preload: Sequence[str] = ()
    ) -> contextlib.AbstractContextManager[Mount]:
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
        return self.timed_output(argv, keep=False)[0]

    def timed_output(
        self, argv: Sequence[str], keep: bool = True, env: dict[str, str] | None = None
    ) -> tuple[float, bytes]:
        """Wall time of a command, as `timed`, and its stdout (when `keep`)."""
        start = time.perf_counter()
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if keep else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=COMMAND_DEADLINE,
            check=False,
            env=None if env is None else {**os.environ, **env},
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {message}")
        return elapsed, done.stdout or b""

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
    def downloaded(emu: EmulatorProc, stored_path: str) -> tuple[int, int]:
        """(bytes of that stored file served, total download requests) since the last reset."""
        stats = emu.stats()
        requests: int = stats["requests"].get("download-recording-file", 0)
        return int(stats["download_bytes"].get(stored_path, 0)), requests
