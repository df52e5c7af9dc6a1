"""`amigofs prefetch`: warm a mount's disk cache by reading files through it.

Reading through the mount is what makes the numbers add up: the mount's own
fetch worker downloads each block once into its disk cache, and a block already
there costs no request. So a prefetch that is interrupted and run again fetches
only what is missing, and `amigofs stats` counts everything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amigofs.control import NotAMount, format_bytes, read_stats
from amigofs.fs.namespace import CONTROL_NAME
from amigofs.mount_table import amigofs_root

CHUNK = 1 << 20
PLAIN_INTERVAL = 5.0
BAR_INTERVAL = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="a call directory, a workspace directory, a mount's root, or files in a mount",
    )
    parser.add_argument(
        "--since",
        type=_date,
        metavar="YYYY-MM-DD",
        help="only calls that started on or after this day (UTC)",
    )
    parser.add_argument(
        "--until",
        type=_date,
        metavar="YYYY-MM-DD",
        help="only calls that started on or before this day (UTC)",
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=_jobs,
        default=4,
        metavar="N",
        help="files read at once (default: 4)",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress, only errors and the summary"
    )


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _jobs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64: {text!r}")
    return int(text)


@dataclass(slots=True, frozen=True)
class Target:
    path: Path
    size: int


def collect(
    root: Path,
    paths: list[Path],
    since: dt.date | None,
    until: dt.date | None,
    skipped: list[str],
) -> Iterator[Target]:
    """The files under each path; call directories outside [since, until] are skipped
    by their time (the call's start), before anything in them is looked at."""
    seen: set[Path] = set()
    for path in paths:
        for found in _walk(root, Path(os.path.realpath(path)), since, until, skipped):
            if found not in seen:
                seen.add(found)
                yield Target(found, found.stat().st_size)


def _walk(
    root: Path, path: Path, since: dt.date | None, until: dt.date | None, skipped: list[str]
) -> Iterator[Path]:
    depth = len(path.relative_to(root).parts)  # 1 workspace, 2 call, 3 file
    if depth >= 3 or not path.is_dir():
        if path.name != CONTROL_NAME:
            yield path
        return
    if depth == 2:
        day = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date()
        if (since is not None and day < since) or (until is not None and day > until):
            return
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        # An archived call (EAGAIN) or one the API refuses: the others still count.
        skipped.append(f"{path}: {exc.strerror}")
        print(f"amigofs prefetch: skipping {path}: {exc.strerror}", file=sys.stderr)
        return
    for entry in entries:
        yield from _walk(root, Path(entry.path), since, until, skipped)


class Progress:
    """Bytes read so far, shown as a bar on a terminal and as lines otherwise."""

    def __init__(self, total_bytes: int, total_files: int, *, quiet: bool) -> None:
        self.total_bytes, self.total_files = total_bytes, total_files
        self.done_bytes = self.done_files = 0
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._shown = 0.0
        self._tty = sys.stderr.isatty()
        self._quiet = quiet

    def add(self, count: int) -> None:
        with self._lock:
            self.done_bytes += count
        self.show()

    def file_done(self) -> None:
        with self._lock:
            self.done_files += 1
        self.show()

    def fail(self, message: str) -> None:
        with self._lock:
            self.failed.append(message)
        self._print(f"amigofs prefetch: {message}")

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self.done_bytes / elapsed
        left = self.total_bytes - self.done_bytes
        eta = f"{left / rate:.0f} s" if rate > 0 and left > 0 else "-"
        percent = 100.0 * self.done_bytes / self.total_bytes if self.total_bytes else 100.0
        return (
            f"{format_bytes(self.done_bytes)} of {format_bytes(self.total_bytes)} "
            f"({percent:.0f}%), {self.done_files}/{self.total_files} files, "
            f"{format_bytes(rate)}/s, ETA {eta}"
        )

    def show(self, *, final: bool = False) -> None:
        if self._quiet and not final:
            return
        now = time.monotonic()
        interval = BAR_INTERVAL if self._tty else PLAIN_INTERVAL
        with self._lock:
            if not final and now - self._shown < interval:
                return
            self._shown = now
        if self._tty:
            width = 30
            filled = width * self.done_bytes // max(self.total_bytes, 1)
            bar = "#" * filled + "-" * (width - filled)
            sys.stderr.write(f"\r[{bar}] {self.line()}\033[K" + ("\n" if final else ""))
            sys.stderr.flush()
        elif not final:
            print(f"prefetch: {self.line()}", file=sys.stderr, flush=True)

    def _print(self, text: str) -> None:
        if self._tty:
            text = "\r\033[K" + text
        print(text, file=sys.stderr, flush=True)


def _read(target: Target, progress: Progress, stop: threading.Event) -> None:
    try:
        fd = os.open(target.path, os.O_RDONLY)
    except OSError as exc:
        progress.fail(f"{target.path}: {exc.strerror}")
        return
    try:
        while not stop.is_set():
            data = os.read(fd, CHUNK)
            if not data:
                break
            progress.add(len(data))
        # The disk cache is what was wanted, not the page cache of this machine.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        progress.fail(f"{target.path}: {exc.strerror}")
        return
    finally:
        os.close(fd)
    progress.file_done()


def run(args: argparse.Namespace) -> int:
    from amigofs.cli import UsageError

    roots: dict[Path, list[Path]] = {}
    for path in args.paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
        root = amigofs_root(path)
        if root is None:
            raise UsageError(f"{path} is not in an amigofs mount")
        roots.setdefault(root, []).append(path)
    if args.since and args.until and args.since > args.until:
        raise UsageError("--since is after --until")
    before = {root: _stats(root) for root in roots}
    skipped: list[str] = []
    try:
        targets = [
            target
            for root, paths in roots.items()
            for target in collect(root, paths, args.since, args.until, skipped)
        ]
    except OSError as exc:
        raise UsageError(f"cannot list {exc.filename}: {exc.strerror}") from None
    total = sum(t.size for t in targets)
    for root, stats in before.items():
        if stats is not None and total > stats["cache"]["max_bytes"]:
            print(
                f"amigofs prefetch: warning: {format_bytes(total)} is more than the disk cache of "
                f"{root} ({format_bytes(stats['cache']['max_bytes'])}): the first files read "
                "will be evicted again",
                file=sys.stderr,
            )
    progress = Progress(total, len(targets), quiet=args.quiet)
    progress.failed.extend(skipped)
    stop = threading.Event()
    executor = ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="prefetch")
    futures: list[Future[None]] = []
    try:
        futures = [executor.submit(_read, t, progress, stop) for t in targets]
        pending = set(futures)
        while pending:
            # A short wait, so that Ctrl-C is seen at once.
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
    except KeyboardInterrupt:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
        progress.show(final=True)
        print(
            "amigofs prefetch: interrupted; run it again to fetch what is still missing",
            file=sys.stderr,
        )
        return 130
    finally:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
    progress.show(final=True)
    fetched = 0
    for root, stats in before.items():
        after = _stats(root)
        if stats is not None and after is not None:
            fetched += after["bytes_fetched"] - stats["bytes_fetched"]
    print(
        f"amigofs prefetch: {progress.done_files} files, {format_bytes(progress.done_bytes)} "
        f"read, {format_bytes(fetched)} fetched from the API, the rest was cached"
        + (f"; {len(progress.failed)} failed" if progress.failed else ""),
        file=sys.stderr,
    )
    return 1 if progress.failed else 0


def _stats(root: Path) -> dict[str, Any] | None:
    try:
        return read_stats(root)
    except NotAMount:
        return None  # another user's mount (root may read it, others may not)
