"""Measure amigofs against baselines measured in the same run, on loopback.

    python -m benchmarks.run [--quick] [--runs 5] [--peers/--no-peers] [--loaded] [--out benchmarks/results/]

Every figure is a ratio of two medians over the runs, both measured here, a moment apart:
amigofs against a memory-backed pyfuse3 filesystem serving the same bytes (benchmarks/memfs.py,
the ceiling of a Python FUSE read loop), against curl straight from the emulator, and peers
(rclone mount, httpdirfs) over nginx serving the same bytes. Results go to OUT/bench-*.json
(every raw timing and ratio, the machine, the commit) and OUT/bench-*.png.

The scenarios, one module each, every one a `run(harness)` (benchmarks/harness.py holds what
they share): benchmarks/read_path.py (cold read, re-read, ffmpeg seek and peak RSS on hour-long
calls), benchmarks/throttled.py (a read from a throttled emulator against one curl stream),
benchmarks/tree.py (ls, find and rsync over a workspace), benchmarks/peers.py (rclone mount
and httpdirfs over nginx), benchmarks/link.py (rsync, tar, sha256sum, first bytes, peeks and a
seek over the emulator's internet link profile with TLS, against a curl script and the link's
limit), benchmarks/http2.py (the client's small and ranged requests over HTTP/2 and over
pooled HTTP/1.1 on that link), benchmarks/sniff.py (`file -P bytes=65536` on 20 cold files
and plain `file` over a workspace: fetched over read). This module picks them from the flags,
runs them and writes the results. `--loaded` keeps one core busy (a Python busy loop) for the
whole run: a machine doing other work, where a filesystem's processes get less than the two
cores of a quiet one.

Must run as root (FUSE mounts, dropping the page cache) from the repository's root.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import amigofs
from benchmarks import http2, link, peers, procs, read_path, sniff, throttled, tree
from benchmarks.harness import REPO, Aborted, Harness, Settings
from benchmarks.report import (
    code_version,
    machine,
    table,
    targets,
    targets_table,
    write_chart,
    write_json,
)

# The groups `--only` picks, in the order they run: (name in the progress and errors, run).
SCENARIOS: dict[str, tuple[str, Callable[[Harness], None]]] = {
    "long": ("hour-long calls", read_path.run),
    "throttled": ("throttled read", throttled.run),
    "tree": ("listings", tree.run),
    "peers": ("peers", peers.run),
    "link": ("internet link", link.run),
    "http2": ("HTTP/2 against HTTP/1.1", http2.run),
    "sniff": ("sniffing with file", sniff.run),
}


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
        help="2 runs, 20-minute calls, a 200-call listing, 20 calls over the link: a few minutes",
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
        "--loaded",
        action="store_true",
        help="keep one core busy with a busy loop for the whole run (a loaded machine)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        choices=list(SCENARIOS),
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


@contextlib.contextmanager
def busy_core(on: bool) -> Iterator[None]:
    """A process spinning on one core while the benchmarks run, if `on`."""
    if not on:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


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
        "settings": {**asdict(settings), "loaded": bool(args.loaded)},
    }
    only = set(args.only or SCENARIOS)
    work = procs.Workdir()
    harness = Harness(settings, work)
    harness.progress(f"scratch directory {work.path}; {settings.runs} run(s) per figure")
    if args.loaded:
        harness.progress("loaded: a busy loop keeps one core busy throughout")
    try:
        with busy_core(args.loaded):
            for group, (name, run) in SCENARIOS.items():
                if group in only and (group != "peers" or settings.peers):
                    harness.scenario(name, functools.partial(run, harness))
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
