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
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amigofs.commands.arguments import UsageError
from amigofs.config import is_workspace_id
from amigofs.daemon.control import NotAMount, format_bytes, read_stats
from amigofs.daemon.mount_table import amigofs_root
from amigofs.fs.namespace import CONTROL_NAME
from amigofs.fs.records import CALL

CHUNK = 1 << 20
# Files of a call made from its other files' blocks (call.wav: both channels): reading
# them warms nothing the others do not, so a walk leaves them out (named, they are read).
DERIVED = frozenset({CALL})
PLAIN_INTERVAL = 5.0  # a line this often without a terminal, as rsync --info=progress2
BAR_INTERVAL = 0.2
# No ETA before this much time and data: the first reads' rate says nothing of the rest.
ETA_AFTER_SECONDS = 2.0
ETA_AFTER_BYTES = 1 << 20


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
        help="files read at once (default: %(default)s)",
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


class Ticker:
    """Calls `show` every `interval` seconds from a thread of its own, so that a line
    comes while nothing else happens (a scan waiting on a listing, a slow read)."""

    def __init__(self, show: Callable[[], None], interval: float) -> None:
        self._show, self._interval = show, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefetch-progress", daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._show()


class Scan:
    """What the scan of the paths has found so far, shown while it runs: a workspace
    of 10^5 calls takes a while to list."""

    def __init__(self, *, quiet: bool) -> None:
        self.files = self.bytes = 0
        self._tty = sys.stderr.isatty()
        self._quiet = quiet
        self._started = time.monotonic()

    def add(self, target: Target) -> None:
        self.files += 1
        self.bytes += target.size

    def line(self) -> str:
        return (
            f"scanning: {_count(self.files, 'file')}, {format_bytes(self.bytes)} so far "
            f"({time.monotonic() - self._started:.0f} s)"
        )

    def show(self) -> None:
        if self._quiet:
            return
        if self._tty:
            sys.stderr.write(f"\r{self.line()}\033[K")
            sys.stderr.flush()
        else:
            print(f"prefetch: {self.line()}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._tty and not self._quiet:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _eta(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    if hours >= 24:
        return f"{hours // 24}d{hours % 24:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


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
        if depth == 2 and entry.name in DERIVED:
            continue
        if depth == 0 and not is_workspace_id(entry.name):
            continue  # not a workspace: another view of the same calls
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
        # A rate from the first second or the first bytes says nothing of the rest.
        settled = elapsed >= ETA_AFTER_SECONDS and self.done_bytes >= ETA_AFTER_BYTES
        eta = _eta(left / rate) if settled and rate > 0 and left > 0 else "-"
        percent = 100.0 * self.done_bytes / self.total_bytes if self.total_bytes else 100.0
        return (
            f"{format_bytes(self.done_bytes)} of {format_bytes(self.total_bytes)} "
            f"({percent:.0f}%), {self.done_files}/{_count(self.total_files, 'file')}, "
            f"{format_bytes(rate)}/s, ETA {eta}"
        )

    def show(self, *, final: bool = False, tick: bool = False) -> None:
        """A bar redrawn as reads land on a terminal; otherwise a line each time the
        ticker says (every PLAIN_INTERVAL seconds), and one at the end."""
        if self._quiet and not final:
            return
        if not self._tty and not (tick or final):
            return
        now = time.monotonic()
        with self._lock:
            if self._tty and not final and now - self._shown < BAR_INTERVAL:
                return
            self._shown = now
        if self._tty:
            width = 30
            filled = width * self.done_bytes // max(self.total_bytes, 1)
            bar = "#" * filled + "-" * (width - filled)
            sys.stderr.write(f"\r[{bar}] {self.line()}\033[K" + ("\n" if final else ""))
            sys.stderr.flush()
        else:
            print(f"prefetch: {self.line()}", file=sys.stderr, flush=True)

    def tick(self) -> None:
        self.show(tick=True)

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
    scan = Scan(quiet=args.quiet)
    targets: list[Target] = []
    try:
        with Ticker(scan.show, BAR_INTERVAL if sys.stderr.isatty() else PLAIN_INTERVAL):
            for root, paths in roots.items():
                for target in collect(root, paths, args.since, args.until, skipped):
                    scan.add(target)
                    targets.append(target)
    except OSError as exc:
        raise UsageError(f"cannot list {exc.filename}: {exc.strerror}") from None
    finally:
        scan.done()
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
    ticker = Ticker(progress.tick, BAR_INTERVAL if sys.stderr.isatty() else PLAIN_INTERVAL)
    try:
        with ticker:
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
    fetched: int | None = 0
    for root, stats in before.items():
        after = _stats(root)
        if stats is None or after is None or fetched is None:
            fetched = None  # another user's mount: its stats are not ours to read
        else:
            fetched += after["bytes_fetched"] - stats["bytes_fetched"]
    print(
        f"amigofs prefetch: {_count(progress.done_files, 'file')}, "
        f"{format_bytes(progress.done_bytes)} read, {_where_from(progress.done_bytes, fetched)}"
        + (f"; {len(progress.failed)} failed" if progress.failed else ""),
        file=sys.stderr,
    )
    return 1 if progress.failed else 0


def _where_from(read: int, fetched: int | None) -> str:
    """Where what was read came from. What is read is a little more than what is
    fetched even when nothing was cached (WAV headers are made here, not fetched)."""
    if fetched is None:
        return "from the mount (its stats are not readable to you)"
    if fetched == 0:
        return "all of it from the disk cache (nothing fetched from the API)"
    cached = read - fetched
    if cached <= max(64 << 10, read // 100):
        return f"{format_bytes(fetched)} fetched from the API (none of it was cached)"
    return f"{format_bytes(fetched)} fetched from the API, the rest from the disk cache"


def _stats(root: Path) -> dict[str, Any] | None:
    try:
        return read_stats(root)
    except NotAMount:
        return None  # another user's mount (root may read it, others may not)
