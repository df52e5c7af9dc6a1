"""`amigofs demo`: the emulator and a mount of it, started and stopped together."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amigofs.commands.arguments import UsageError, add_mountpoint_argument, check_mountpoint
from amigofs.config import is_workspace_id
from amigofs.daemon.mount_table import FUSE_TYPE, MountEntry, mount_entry, wait_until_mounted
from amigofs.emulator.process import await_listening
from amigofs.logs import child_environment

START_DEADLINE = 30.0


class DemoError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_mountpoint_argument(parser, "where to mount (default: a new temporary directory)")
    parser.add_argument(
        "--calls", type=int, default=6, help="calls per workspace (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic data")
    parser.add_argument(
        "--live",
        action="store_true",
        help="a service as the real one behaves: a new call every second, pages shorter "
        "than asked, a call with impossible fields, and recordings that can be replaced",
    )


# What --live asks of the emulator: the live service of issue 19, to try amigofs against.
LIVE_KNOBS = ("--new-calls-per-second", "1", "--page-rows", "40", "--bad-rows", "1")


def run(args: argparse.Namespace) -> int:
    made_dir = args.mountpoint is None
    if made_dir:
        mountpoint = Path(tempfile.mkdtemp(prefix="amigofs-demo-"))
    else:
        # Refused before anything starts: what is there is the user's, not ours to touch.
        mountpoint = args.mountpoint.absolute()
        check_mountpoint(mountpoint)
        _check_empty(mountpoint)
    target = os.path.realpath(mountpoint)
    env = child_environment(AMIGO_API_KEY="demo-" + secrets.token_urlsafe(16))
    cache_dir = Path(tempfile.mkdtemp(prefix="amigofs-demo-cache-"))
    processes: list[subprocess.Popen[str]] = []
    ours: MountEntry | None = None
    stop = _stop_on_signals()
    try:
        emulator = subprocess.Popen(
            [sys.executable, "-m", "amigofs", "emulator", "--host", "127.0.0.1", "--port", "0",
             "--workspaces", "2", "--calls", str(args.calls), "--seed", str(args.seed),
             *(LIVE_KNOBS if args.live else ())],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
            process_group=0,
        )  # fmt: skip
        processes.append(emulator)
        url = _emulator_url(emulator)
        # Warnings and errors only: the guide below is what the user reads.
        mount = subprocess.Popen(
            [sys.executable, "-m", "amigofs", "mount", str(mountpoint), "--base-url", url,
             "--cache-dir", str(cache_dir), "--foreground", "--log-level", "warning"],
            env=env, stdin=subprocess.DEVNULL, text=True, process_group=0,
        )  # fmt: skip
        processes.insert(0, mount)
        ours = _wait_mounted(mountpoint, target, mount)
        _print_guide(mountpoint, url, live=args.live)
        while not stop and mount.poll() is None and emulator.poll() is None:
            time.sleep(0.2)
        return 0
    except DemoError as exc:
        if stop:
            # Ctrl-C while it was starting: the terminal sent it to the emulator and
            # the mount too, which is why they stopped; a stop, not a failure.
            return 0
        raise UsageError(str(exc)) from None
    finally:
        for process in processes:  # the mount first, so it unmounts while the server is up
            _stop(process)
        _unmount_if_ours(target, ours)
        shutil.rmtree(cache_dir, ignore_errors=True)
        if made_dir:
            with contextlib.suppress(OSError):  # still mounted, if the unmount failed
                mountpoint.rmdir()
        print("amigofs demo: unmounted and stopped", file=sys.stderr)


def _check_empty(mountpoint: Path) -> None:
    try:
        with os.scandir(mountpoint) as entries:
            empty = next(entries, None) is None
    except OSError as exc:
        raise UsageError(f"mount point {mountpoint}: {exc.strerror}") from None
    if not empty:
        # Mounting would hide its files for as long as the demo runs.
        raise UsageError(
            f"mount point {mountpoint} is not empty; the demo mounts only on an empty directory"
        )


def _unmount_if_ours(target: str, ours: MountEntry | None) -> None:
    """The mount process unmounts when stopped (and its guard if it was killed); this
    is for a mount left behind all the same, and only if it is still the one that
    process made: never something mounted there since, or before."""
    if ours is not None and mount_entry(target) == ours:
        subprocess.run(["fusermount3", "-u", "-z", target], check=False)


def _stop_on_signals() -> list[int]:
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)

    # The emulator and the mount are in process groups of their own, so that the
    # terminal's Ctrl-C (or hangup) reaches only us: a child hit while still starting
    # Python would print a KeyboardInterrupt traceback. We stop them, in order.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)
    return received


def _emulator_url(emulator: subprocess.Popen[str]) -> str:
    try:
        return await_listening(emulator, START_DEADLINE)
    except (TimeoutError, RuntimeError) as exc:
        raise DemoError(f"the emulator did not start: {exc}") from None


def _wait_mounted(mountpoint: Path, target: str, mount: subprocess.Popen[str]) -> MountEntry:
    try:
        exited = wait_until_mounted(mountpoint, mount, START_DEADLINE)
    except TimeoutError:
        raise DemoError(f"the mount did not come up within {START_DEADLINE:.0f} s") from None
    if exited is not None:
        raise DemoError("the mount failed to start (see its message above)")
    entry = mount_entry(target)
    if entry is None or entry.fstype != FUSE_TYPE:
        raise DemoError(f"something else was mounted at {mountpoint} meanwhile")
    return entry


def _print_guide(mountpoint: Path, url: str, *, live: bool = False) -> None:
    # The root may list other entries beside the workspaces (views of them).
    workspaces = sorted(n for n in os.listdir(mountpoint) if is_workspace_id(n))
    workspace = next(iter(workspaces), "WORKSPACE")
    calls = sorted(os.listdir(mountpoint / workspace)) if workspace != "WORKSPACE" else []
    call = calls[0] if calls else "CALL"
    here = mountpoint / workspace / call
    by_date = mountpoint / "by-date" / workspace
    days = sorted(os.listdir(by_date)) if workspace != "WORKSPACE" else []
    day = by_date / (days[-1] if days else "YYYY-MM-DD")
    print(
        f"""
amigofs demo: the emulated Platform API at {url} is mounted at {mountpoint}

Try, in another terminal:
  ls -l {mountpoint}/{workspace}
  ls -l {here}
  ffprobe -hide_banner {here}/call.wav        (both sides, caller left, agent right)
  sox {here}/inbound.wav -n stat
  cat {here}/metadata.json
  ls -l {day}                                 (the calls of a day)
  ls -l {mountpoint}/by-name
  rsync -a --stats --exclude call.wav {mountpoint}/{workspace}/ /tmp/amigo-backup/

Press Ctrl-C here to unmount and stop.
""",
        flush=True,
    )
    if live:
        print(
            f"""A live service: a call arrives every second (`kill -HUP` the mount, or wait a
minute, and `ls` shows them), pages hold fewer rows than asked, and one call has fields
amigofs cannot show (see the mount's warnings). Replace a recording under a reader:
  curl -s -X POST {url}/__control -d '{{"replace": ["{call}"]}}'
then `cat {here}/inbound.wav` reads the new version whole; a read in progress gets EIO.
""",
            flush=True,
        )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
