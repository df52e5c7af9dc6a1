"""Reading the kernel's mount table, without touching the mounts themselves.

Kept free of pyfuse3 and trio so that the small unmount guard can use it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FUSE_TYPE = "fuse.amigofs"  # how amigofs mounts show in the table


def mounts() -> Iterator[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, in mount order."""
    for fields in _table("/proc/self/mounts"):
        if len(fields) > 2:
            yield _unescape(fields[1]), os.fsdecode(fields[2])


def is_mounted(mountpoint: Path | str) -> bool:
    return mounted_at(os.path.realpath(mountpoint))


def wait_until_mounted(
    mountpoint: Path | str, process: subprocess.Popen[Any], deadline: float
) -> int | None:
    """Waits for a mount process to mount `mountpoint`: None once it has, its exit
    status if it exits first; TimeoutError after `deadline` seconds."""
    give_up = time.monotonic() + deadline
    while (code := process.poll()) is None:
        if is_mounted(mountpoint):
            return None
        if time.monotonic() > give_up:
            raise TimeoutError(f"no mount at {mountpoint} within {deadline:.0f} s")
        time.sleep(0.05)
    return code


def mounted_at(target: str) -> bool:
    """Whether a resolved path is a mount point. Never stats the path: the mount
    process itself asking would wait on its own, not yet serving, event loop."""
    return mount_type(target) is not None


def mount_type(target: str) -> str | None:
    """The filesystem type of the topmost mount at a resolved path (such as
    `fuse.amigofs`), or None if nothing is mounted there."""
    found = None
    for point, fstype in mounts():
        if point == target:
            found = fstype  # later lines are mounted on top of earlier ones
    return found


def amigofs_root(path: Path) -> Path | None:
    """The root of the amigofs mount holding `path`, or None."""
    target = os.path.realpath(path)
    best: str | None = None
    for point, fstype in mounts():
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if fstype == FUSE_TYPE and inside and (best is None or len(point) > len(best)):
            best = point
    return Path(best) if best is not None else None


@dataclass(slots=True, frozen=True)
class MountEntry:
    """One mount as /proc/self/mountinfo has it."""

    mount_id: int  # unique among the mounts there are now
    device: str  # major:minor, the name of its backing device info under /sys/class/bdi
    fstype: str


def mount_entry(target: str) -> MountEntry | None:
    """The topmost mount at a resolved path, or None if nothing is mounted there."""
    found = None
    for fields in _table("/proc/self/mountinfo"):
        if len(fields) > 4 and _unescape(fields[4]) == target:
            # Optional fields end at "-", then come the type, the source, the options.
            rest = fields[fields.index(b"-", 5) + 1 :] if b"-" in fields[5:] else []
            fstype = os.fsdecode(rest[0]) if rest else ""
            found = MountEntry(int(fields[0]), os.fsdecode(fields[2]), fstype)
    return found


def mount_device(target: str) -> str | None:
    """The device number (`major:minor`) of the topmost mount at a resolved path: the
    name of its backing device info under /sys/class/bdi."""
    entry = mount_entry(target)
    return entry.device if entry is not None else None


def _table(name: str) -> Iterator[list[bytes]]:
    """The fields of each line of a mount table. Read as bytes: a mount point is
    whatever bytes its creator chose, and one that is not UTF-8 anywhere on the
    machine must not stop us reading the rest."""
    with open(name, "rb") as table:
        for line in table:
            yield line.split()


_ESCAPE = re.compile(rb"\\([0-3][0-7]{2})")


def _unescape(field: bytes) -> str:
    """A path as the kernel wrote it (space, tab, newline and backslash as octal
    escapes such as \\040), decoded the way Python names such paths
    (os.fsdecode), so it compares equal to os.path.realpath of the same path."""
    return os.fsdecode(_ESCAPE.sub(lambda code: bytes([int(code[1], 8)]), field))
