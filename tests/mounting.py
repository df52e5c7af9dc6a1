"""The one harness that starts processes and mounts, for the tests and the benchmarks.

    with mounted(emulator.url, emulator.api_key) as mnt:
        os.listdir(mnt.path)

`fuse_mount` runs any FUSE daemon in the foreground (amigofs here and in the benchmarks, memfs
there); `mounted` is amigofs in fresh scratch directories. A mount is ready when it shows in
/proc/mounts, waited for with a deadline (no sleeps as synchronisation); on the way out it is
always unmounted and its process always ends, whatever happened in the block. Processes start
in their own session, so a Ctrl-C at the terminal reaches only the runner, which then cleans up
in order. benchmarks/procs.py builds its nginx and scratch directories on these pieces.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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
    cache_dir: Path | None = None
    name: str = "amigofs"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log()[-limit:]
        except OSError:
            return ""

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


def wait_until(
    condition: Callable[[], object], deadline: float, what: str, interval: float = 0.02
) -> None:
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


@contextlib.contextmanager
def empty_mountpoint(prefix: str) -> Iterator[Path]:
    """A mount point for a test that mounts by other means than `mounted` (the daemon
    mode, the fstab helper, the demo): left unmounted, with every process of the mount
    gone (its unmount guard exits last), and removed, pass or fail."""
    path = public_tempdir(prefix)
    try:
        yield path
    finally:
        force_unmount(path)
        wait_until(lambda: not is_mounted(path), STOP_DEADLINE, "the mount to go")
        wait_until(lambda: not unmount_guards(path), STOP_DEADLINE, "the unmount guard to exit")
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def fuse_mount(
    name: str,
    argv: Sequence[str],
    mountpoint: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    *,
    cache_dir: Path | None = None,
    deadline: float = MOUNT_DEADLINE,
    patience: float = 0.0,
) -> Iterator[Mount]:
    """Runs the FUSE daemon `argv` in the foreground, its output appended to `log_path`; ready
    once `mountpoint` shows in /proc/mounts. On the way out the mount is removed; `patience` is
    how long the daemon may then take to exit by itself (to write its cache on the way out, as
    the benchmarks' remounts need) before it is stopped."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    mount = Mount(mountpoint, process, log_path, cache_dir, name)
    try:
        wait_until(
            lambda: is_mounted(mountpoint) or process.poll() is not None,
            deadline,
            f"{name} to mount at {mountpoint} (in /proc/mounts)",
        )
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}:\n{mount.log()}")
        yield mount
    finally:
        teardown(mount, patience)


def mount_command(url: str, mountpoint: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "amigofs", "mount", str(mountpoint),
        "--base-url", url, "--cache-dir", str(cache_dir), "--foreground", *extra,
    ]  # fmt: skip


def amigofs_mount(
    url: str,
    api_key: str,
    mountpoint: Path,
    cache_dir: Path,
    log_path: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    certificate: str | None = None,
    deadline: float = MOUNT_DEADLINE,
    patience: float = 0.0,
) -> contextlib.AbstractContextManager[Mount]:
    """`amigofs mount --foreground` of the server at `url`; with `certificate`, the server's
    self-signed one is the mount's trust store (SSL_CERT_FILE: certificate checks stay on)."""
    trust = {"SSL_CERT_FILE": certificate} if certificate is not None else {}
    return fuse_mount(
        "amigofs",
        mount_command(url, mountpoint, cache_dir, *extra),
        mountpoint,
        log_path,
        {"AMIGO_API_KEY": api_key, **trust, **(env or {})},
        cache_dir=cache_dir,
        deadline=deadline,
        patience=patience,
    )


@contextlib.contextmanager
def mounted(
    url: str, api_key: str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Mount]:
    """amigofs mounted at a fresh directory, with a fresh cache directory."""
    mountpoint = public_tempdir("amigofs-mnt-")
    scratch = Path(tempfile.mkdtemp(prefix="amigofs-test-"))
    try:
        with amigofs_mount(
            url, api_key, mountpoint, scratch / "cache", scratch / "mount.log", *extra, env=env
        ) as mount:
            yield mount
    finally:
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def teardown(mount: Mount, patience: float = 0.0) -> None:
    """Unmounts (lazily: works while in use), lets the daemon exit by itself for up to
    `patience` seconds, then stops it; whatever it left mounted, dead, is removed too."""
    if is_mounted(mount.path):
        force_unmount(mount.path)
        with contextlib.suppress(subprocess.TimeoutExpired):
            mount.process.wait(patience)
    stop_process(mount.process)
    force_unmount(mount.path)


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
