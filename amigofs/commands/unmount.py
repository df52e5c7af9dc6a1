"""`amigofs unmount MOUNTPOINT`: fusermount3 -u, then wait until the daemon has exited.

Once it returns, the mount is gone and so is the process that served it (its cache
lock released, so the same cache directory can be mounted again at once). The
daemon's pid is found through its unmount guard (`amigofs.daemon.unmount_guard PID TARGET`
in the process table), without touching the mount, which may be dead or hung.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from amigofs.commands import exits
from amigofs.commands.arguments import UsageError, add_mountpoint_argument
from amigofs.daemon.mount_table import FUSE_TYPE, mount_type

EXIT_SECONDS = 30.0
# After a lazy unmount the daemon serves on until the last open file is closed.
LAZY_EXIT_SECONDS = 5.0
GUARD_MODULE = "amigofs.daemon.unmount_guard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_mountpoint_argument(parser)
    parser.add_argument(
        "-z",
        "--lazy",
        action="store_true",
        help="detach the mount even while files in it are open (the daemon exits once "
        "the last is closed)",
    )


def daemon_pids(target: str) -> list[int]:
    """The pids of the amigofs daemons serving `target`, as their guards name them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        guard = argv[1:3] == [b"-m", GUARD_MODULE.encode()]
        if guard and argv[4:5] == [os.fsencode(target)] and argv[3].isdigit():
            found.append(int(argv[3]))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited: what is left waits only for its parent to reap it.
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def _wait_for_exit(pids: list[int], seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() >= end:
            return alive
        time.sleep(0.05)


def run(args: argparse.Namespace) -> int:
    mountpoint = Path(os.path.normpath(args.mountpoint.absolute()))
    target = os.path.realpath(mountpoint)
    kind = mount_type(target)
    if kind is None:
        raise UsageError(f"{mountpoint} is not mounted")
    if kind != FUSE_TYPE:
        raise UsageError(f"{mountpoint} is not an amigofs mount (it is {kind}); use umount")
    pids = daemon_pids(target)
    command = ["fusermount3", "-u", *(["-z"] if args.lazy else []), target]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UsageError("fusermount3 is not installed (package fuse3)") from None
    if result.returncode != 0:
        said = result.stderr.strip()
        if "busy" in said.lower():
            print(
                f"amigofs: {mountpoint} is busy: a program has a file or directory open in it "
                f"(`fuser -vm {mountpoint}` shows which); close it, or detach the mount "
                f"at once with: amigofs unmount --lazy {mountpoint}",
                file=sys.stderr,
            )
        else:
            print(f"amigofs: cannot unmount {mountpoint}: {said}", file=sys.stderr)
        return exits.FAILED
    left = _wait_for_exit(pids, LAZY_EXIT_SECONDS if args.lazy else EXIT_SECONDS)
    if left and args.lazy:
        print(
            f"amigofs: {mountpoint} is detached; the daemon (pid {left[0]}) exits once the "
            "last file open in it is closed",
            file=sys.stderr,
        )
    elif left:
        print(
            f"amigofs: {mountpoint} is unmounted, but the daemon (pid {left[0]}) has not "
            f"exited within {EXIT_SECONDS:.0f} s; see its log (CACHE_DIR/mount.log)",
            file=sys.stderr,
        )
        return exits.FAILED
    return exits.OK
