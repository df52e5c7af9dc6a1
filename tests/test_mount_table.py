"""Mount points that are not UTF-8: the kernel's mount tables are bytes, and amigofs reads
them while another mount on the machine (or its own) has such a name."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs.daemon.control import read_stats
from amigofs.daemon.mount_table import is_mounted, mount_type
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    MOUNT_DEADLINE,
    force_unmount,
    mount_command,
    mounted,
    public_tempdir,
    stop_process,
    tmpfs_at,
    wait_until,
    workspace_names,
)

TOOL_TIMEOUT = 60
AMIGOFS = (sys.executable, "-m", "amigofs")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)


def odd_directory(tag: bytes) -> Path:
    """A new directory under /tmp whose name is not UTF-8 (and has a space, which the
    tables escape), as a str the way Python gives such names (surrogateescape)."""
    stem = os.fsencode(tempfile.mkdtemp(prefix="amigofs-odd-", dir="/tmp"))
    path = stem + b"/" + tag + b" \xff\xfe"
    os.mkdir(path)
    return Path(os.fsdecode(path))


def remove_directory(path: Path) -> None:
    force_unmount(path)
    os.rmdir(path)
    os.rmdir(path.parent)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=1, calls_per_workspace=2, max_duration=5.0) as emu:
        yield emu


@pytest.fixture(scope="module")
def odd_tmpfs() -> Iterator[Path]:
    """A tmpfs mounted at a non-UTF-8 path, for the whole module; always unmounted."""
    path = odd_directory(b"tmpfs")
    try:
        with tmpfs_at(path, "1M"):
            yield path
    finally:
        remove_directory(path)


def test_the_table_names_a_non_utf8_mount_point_as_the_kernel_has_it(odd_tmpfs: Path) -> None:
    assert mount_type(os.fsdecode(os.path.realpath(os.fsencode(odd_tmpfs)))) == "tmpfs"
    assert is_mounted(odd_tmpfs)
    assert not is_mounted(odd_tmpfs.parent)


def test_a_mount_comes_up_serves_and_unmounts_beside_a_non_utf8_mount_point(
    emulator: EmulatorProc, odd_tmpfs: Path
) -> None:
    workspace = emulator.data.workspaces[0].id
    with mounted(emulator.url, emulator.api_key) as mnt:
        assert workspace_names(mnt.path) == [workspace]
        stats = run(*AMIGOFS, "stats", str(mnt.path))
        assert stats.returncode == 0, stats.stderr
        assert f"amigofs at {mnt.path}" in stats.stdout
        prefetch = run(*AMIGOFS, "prefetch", "--quiet", str(mnt.path / workspace))
        assert prefetch.returncode == 0, prefetch.stderr
        files = 3 * len(list(emulator.data.recordings()))  # two recordings, the metadata
        assert f"prefetch: {files} files" in prefetch.stderr, prefetch.stderr
        assert "failed" not in prefetch.stderr
        assert mnt.unmount() == 0, mnt.log()
    assert "Traceback" not in mnt.log()


def test_mount_fuse_amigofs_detaches_beside_a_non_utf8_mount_point(
    emulator: EmulatorProc, odd_tmpfs: Path, tmp_path: Path
) -> None:
    mountpoint = public_tempdir("amigofs-fstab-")
    env = {**os.environ, "AMIGO_API_KEY": emulator.api_key}
    options = f"base_url={emulator.url},cache_dir={tmp_path / 'cache'},_netdev"
    try:
        helper = subprocess.run(
            [sys.executable, "-m", "amigofs.commands.fstab", "none", str(mountpoint), "-o", options],
            capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env,
        )  # fmt: skip
        assert helper.returncode == 0, helper.stderr
        assert workspace_names(mountpoint) == [emulator.data.workspaces[0].id]
        daemon = read_stats(mountpoint)["pid"]
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True, timeout=TOOL_TIMEOUT)
        wait_until(lambda: _gone(daemon), MOUNT_DEADLINE, "the daemon to exit")
        assert "Traceback" not in (tmp_path / "cache" / "mount.log").read_text(errors="replace")
    finally:
        force_unmount(mountpoint)
        mountpoint.rmdir()


def test_a_mount_at_a_non_utf8_mount_point_serves_and_unmounts_cleanly(
    emulator: EmulatorProc, odd_tmpfs: Path, tmp_path: Path
) -> None:
    mountpoint = odd_directory(b"mnt")
    recording = next(emulator.data.recordings())
    env = {**os.environ, "AMIGO_API_KEY": emulator.api_key}
    log_path = tmp_path / "mount.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            mount_command(emulator.url, mountpoint, tmp_path / "cache"),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_until(lambda: is_mounted(mountpoint) or process.poll() is not None,
                   MOUNT_DEADLINE, "the mount at a non-UTF-8 path")  # fmt: skip
        assert process.poll() is None, log_path.read_text(errors="replace")
        guard = unmount_guard_of(process.pid)
        call_dir = mountpoint / recording.workspace_id / recording.call_sid
        assert (call_dir / "metadata.json").read_bytes() == recording.metadata_bytes
        ls = subprocess.run(
            ["ls", os.fsencode(call_dir)], capture_output=True, timeout=TOOL_TIMEOUT
        )
        assert ls.stdout.split() == [b"call.wav", b"inbound.wav", b"metadata.json", b"outbound.wav"]
        # As under a locale such as en_US.UTF-8, where Python's stdout is strict.
        strict = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
        stats = subprocess.run([*AMIGOFS, "stats", os.fsencode(mountpoint)],
                               capture_output=True, timeout=TOOL_TIMEOUT, env=strict)  # fmt: skip
        assert stats.returncode == 0, stats.stderr
        assert b"amigofs at " + os.fsencode(mountpoint) in stats.stdout
        subprocess.run(["fusermount3", "-u", os.fsencode(mountpoint)], check=True,
                       timeout=TOOL_TIMEOUT)  # fmt: skip
        assert process.wait(TOOL_TIMEOUT) == 0
        assert not is_mounted(mountpoint)
        wait_until(lambda: _gone(guard), MOUNT_DEADLINE, "the unmount guard to exit")
        log = log_path.read_text(errors="replace")
        assert "Traceback" not in log and "Error" not in log, log
    finally:
        force_unmount(mountpoint)
        stop_process(process)
        remove_directory(mountpoint)


def unmount_guard_of(pid: int) -> int:
    """The unmount guard the mount process `pid` started, found by its command line
    (read as bytes: it names the non-UTF-8 mount point)."""
    wanted = [b"-m", b"amigofs.daemon.unmount_guard", str(pid).encode()]
    found: list[int] = []

    def started() -> bool:
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[1:4] == wanted:
                found.append(int(entry.name))
        return bool(found)

    wait_until(started, MOUNT_DEADLINE, "the unmount guard to start")
    return found[0]


def _gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie has: only its parent's wait is left)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
