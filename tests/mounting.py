"""Mount amigofs for real, through its command, in a subprocess.

    with mounted(emulator) as mnt:
        os.listdir(mnt.path)

The mount is ready when it shows in /proc/mounts (waited for with a deadline, no
sleeps as synchronisation); on the way out it is always unmounted and the
process always ends, whatever happened in the block.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amigofs.daemon.mount_table import is_mounted, mount_type

MOUNT_DEADLINE = 30.0
STOP_DEADLINE = 15.0


@dataclass
class Mount:
    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    cache_dir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def unmount(self) -> int:
        """fusermount3 -u, then wait for the process; returns its exit status."""
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], check=True, timeout=STOP_DEADLINE)
        return self.process.wait(STOP_DEADLINE)


@contextlib.contextmanager
def tmpfs_at(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at the directory `path` (any bytes) for the block;
    always unmounted afterwards, however many times something else mounted it."""
    where = os.fsencode(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "amigofs-test", where],
                   check=True, timeout=STOP_DEADLINE)  # fmt: skip
    try:
        yield path
    finally:
        while mount_type(os.fsdecode(os.path.realpath(where))) == "tmpfs":
            subprocess.run(["umount", "-l", where], check=True, timeout=STOP_DEADLINE)


def workspace_names(root: Path) -> list[str]:
    """What the mount's root lists, less the views (by-date/, by-name/): its workspaces."""
    return [name for name in os.listdir(root) if name not in ("by-date", "by-name")]


def wait_until(condition, deadline: float, what: str, interval: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    """Polls `condition` until true; fails the test once `deadline` seconds pass."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(interval)


def unmount_guards(mountpoint: Path) -> list[int]:
    """The pids of amigofs.daemon.unmount_guard processes watching `mountpoint`."""
    wanted = ["-m", "amigofs.daemon.unmount_guard"]
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = os.fsdecode((entry / "cmdline").read_bytes()).split("\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if argv[1:3] == wanted and argv[4:5] == [str(mountpoint.resolve())]:
            found.append(int(entry.name))
    return found


def kernel_readahead_kb(mountpoint: Path) -> int:
    """The kernel's readahead window for the mount at `mountpoint`, in KiB."""
    device = subprocess.run(
        ["mountpoint", "-d", str(mountpoint)], capture_output=True, text=True, check=True
    ).stdout.strip()
    return int(Path(f"/sys/class/bdi/{device}/read_ahead_kb").read_text())


def public_tempdir(prefix: str) -> Path:
    """A directory every user can traverse (pytest's tmp_path is 0700, which would
    make a test about other users' access pass for the wrong reason)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def mount_command(url: str, mountpoint: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "amigofs", "mount", str(mountpoint),
        "--base-url", url, "--cache-dir", str(cache_dir), "--foreground", *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def mounted(
    url: str, api_key: str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Mount]:
    mountpoint = public_tempdir("amigofs-mnt-")
    scratch = Path(tempfile.mkdtemp(prefix="amigofs-test-"))
    log_path = scratch / "mount.log"
    cache_dir = scratch / "cache"
    run_env = {**os.environ, "AMIGO_API_KEY": api_key, **(env or {})}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            mount_command(url, mountpoint, cache_dir, *extra),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=run_env,
        )
    mount = Mount(mountpoint, process, log_path, cache_dir)
    try:
        wait_until(
            lambda: is_mounted(mountpoint) or process.poll() is not None,
            MOUNT_DEADLINE,
            "the mount to appear in /proc/mounts",
        )
        if process.poll() is not None:
            raise RuntimeError(f"amigofs mount exited with {process.returncode}:\n{mount.log()}")
        yield mount
    finally:
        _teardown(mount)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def _teardown(mount: Mount) -> None:
    force_unmount(mount.path)
    stop_process(mount.process)


def force_unmount(mountpoint: Path) -> None:
    """Removes whatever is mounted at `mountpoint` (lazily: works while in use)."""
    if is_mounted(mountpoint):
        subprocess.run(
            ["fusermount3", "-u", "-z", str(mountpoint)],
            capture_output=True,
            check=False,
            timeout=STOP_DEADLINE,
        )


def stop_process(process: subprocess.Popen[Any]) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_DEADLINE)
    return process.returncode
