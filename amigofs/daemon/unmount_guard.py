"""Removes the mount of a mount process that was killed, where auto_unmount missed it.

libfuse's auto_unmount leaves a fusermount3 process waiting for the mount process's
socket to close; it then unmounts only if opening the mount point fails with ENOTCONN.
The socket and /dev/fuse are released one after the other while the killed process
exits, and on a busy machine fusermount3 can look in between: its open waits on the
dying connection, fails with ECONNABORTED instead, and the mount is left behind as
"Transport endpoint is not connected" (one kill in four with both cores busy, here).

This process waits for the mount process to have exited completely (a pidfd turns
readable only after the process has released all its files, so the connection is
aborted by then) and applies the same test. It imports no more than the standard
library and the mount table reader, and sleeps in select() for the life of the mount.

    python -m amigofs.daemon.unmount_guard MOUNT_PID MOUNTPOINT
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys

from amigofs.daemon.mount_table import FUSE_TYPE, mount_type

UNMOUNT_SECONDS = 30.0


def wait_for_exit(pid: int) -> None:
    """Returns once process `pid`, our parent, has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    # The pid may have been reused by another process before pidfd_open if our
    # parent had already gone; then we have been reparented.
    if os.getppid() != pid:
        os.close(pidfd)
        return
    select.select([pidfd], [], [])
    os.close(pidfd)


def is_dead_mount(mountpoint: str, *, only_ours: bool = True) -> bool:
    """Whether a FUSE mount (with `only_ours`, an amigofs one) is at `mountpoint` with
    no process serving it: what users see as "Transport endpoint is not connected"."""
    fstype = mount_type(mountpoint)
    if fstype is None or (only_ours and fstype != FUSE_TYPE):
        return False
    try:
        # Opening asks the (aborted) connection; a stat could be answered from cache.
        fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    os.close(fd)
    return False


def main() -> None:
    pid, mountpoint = int(sys.argv[1]), sys.argv[2]
    wait_for_exit(pid)
    if is_dead_mount(mountpoint):
        print(f"amigofs: the mount process died; unmounting {mountpoint}", file=sys.stderr)
        subprocess.run(
            ["fusermount3", "-u", "-z", "-q", mountpoint],
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=UNMOUNT_SECONDS,
        )


if __name__ == "__main__":
    main()
