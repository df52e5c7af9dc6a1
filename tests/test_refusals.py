"""What `amigofs mount` refuses before anything is mounted, and the exit status it says
it with: the same status for the same failure in every command, so that a script or
systemd can tell a mistake to fix (2) from a server that cannot be reached now (3).

- a mount point that holds files (they would be hidden) unless --allow-non-empty
  (`-o nonempty`, as fuse and rclone name it);
- a server that answers nothing when the cache holds nothing of that server and key
  (a typo'd --base-url with a used cache directory): exit 3, not a mount whose every
  `ls` fails with EIO;
- Ctrl-C in the first fraction of a second: one line and 130, no traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs.commands import exits
from amigofs.daemon.mount_table import is_mounted
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import STOP_DEADLINE, force_unmount, mounted, wait_until
from tests.test_first_contact import (
    amigofs,
    assert_one_line,
    free_port,
    mountpoint,
    scratch,
    with_key,
    workspaces_in,
)

MODES = pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemon"])


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(
        workspaces=1, calls_per_workspace=2, min_duration=2.0, max_duration=3.0
    ) as emu:
        yield emu


def _mount_argv(url: str, mnt: Path, cache: Path, foreground: bool, *extra: str) -> list[str]:
    argv = ["mount", str(mnt), "--base-url", url, "--cache-dir", str(cache), *extra]
    return [*argv, "--foreground"] if foreground else argv


def _unmount(mnt: Path) -> None:
    force_unmount(mnt)
    wait_until(lambda: not is_mounted(mnt), STOP_DEADLINE, "the mount to go")


# --- a mount point that holds files ----------------------------------------------------


@MODES
def test_a_mount_point_that_holds_files_is_refused(
    emulator: EmulatorProc, foreground: bool
) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        (mnt / "notes.txt").write_text("mine\n")
        emulator.reset_stats()
        result = amigofs(*_mount_argv(emulator.url, mnt, tmp / "cache", foreground),
                         env=with_key(emulator.api_key))  # fmt: skip
        try:
            assert_one_line(result, f"mount point {mnt} is not empty", exits.USAGE)
            assert "--allow-non-empty" in result.stderr
            assert not is_mounted(mnt)
            assert (mnt / "notes.txt").read_text() == "mine\n"
            # Refused before the server was asked anything.
            assert sum(emulator.stats()["requests"].values()) == 0, emulator.stats()
        finally:
            _unmount(mnt)
            (mnt / "notes.txt").unlink()


@pytest.mark.parametrize("allow", [["--allow-non-empty"], ["-o", "nonempty"]], ids=["flag", "o"])
def test_allow_non_empty_mounts_over_the_files(emulator: EmulatorProc, allow: list[str]) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        (mnt / "notes.txt").write_text("mine\n")
        try:
            result = amigofs(*_mount_argv(emulator.url, mnt, tmp / "cache", False, *allow),
                             env=with_key(emulator.api_key))  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert is_mounted(mnt)
            assert workspaces_in(mnt) == [emulator.data.workspaces[0].id]
            assert not (mnt / "notes.txt").exists()  # hidden while mounted, as asked
        finally:
            _unmount(mnt)
        assert (mnt / "notes.txt").read_text() == "mine\n"
        (mnt / "notes.txt").unlink()


# --- a server that answers nothing, and a cache that holds nothing of it ---------------


@MODES
def test_a_mistyped_base_url_with_a_used_cache_dir_is_refused(foreground: bool) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        cache = tmp / "cache"
        with running_emulator(workspaces=1, calls_per_workspace=2) as emu:
            with mounted(emu.url, emu.api_key, "--cache-dir", str(cache)) as first:
                assert workspaces_in(first.path) == [emu.data.workspaces[0].id]
            typo = f"http://127.0.0.1:{free_port()}"  # the port mistyped: nothing listens
            result = amigofs(*_mount_argv(typo, mnt, cache, foreground),
                             env=with_key(emu.api_key))  # fmt: skip
        try:
            assert_one_line(result, f"cannot mount: {typo} gave no usable answer",
                            exits.UNREACHABLE)  # fmt: skip
            assert "holds nothing of this server" in result.stderr
            assert not is_mounted(mnt)
        finally:
            _unmount(mnt)


# --- the same failure, the same status, in every command --------------------------------


def test_a_server_that_is_down_is_the_same_status_for_mount_and_workspaces() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with scratch() as tmp, mountpoint() as mnt:
        try:
            mount = amigofs(*_mount_argv(url, mnt, tmp / "c", False), env=with_key("k"))
            listing = amigofs("workspaces", "--base-url", url, env=with_key("k"))
        finally:
            _unmount(mnt)
    assert_one_line(mount, "gave no usable answer", exits.UNREACHABLE)
    assert_one_line(listing, "gave no usable answer", exits.UNREACHABLE)


def test_a_wrong_key_is_the_same_status_for_mount_and_workspaces(emulator: EmulatorProc) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        try:
            mount = amigofs(*_mount_argv(emulator.url, mnt, tmp / "c", False),
                            env=with_key("not-the-key"))  # fmt: skip
            listing = amigofs("workspaces", "--base-url", emulator.url, env=with_key("not-it"))
        finally:
            _unmount(mnt)
    assert_one_line(mount, "HTTP 401", exits.USAGE)
    assert_one_line(listing, "HTTP 401", exits.USAGE)


# --- Ctrl-C before anything is done --------------------------------------------------------


@pytest.mark.parametrize("delay", [0.05, 0.1, 0.2, 0.3])
def test_an_early_ctrl_c_is_one_line_and_130(emulator: EmulatorProc, delay: float) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        process = subprocess.Popen(
            [sys.executable, "-m", "amigofs",
             *_mount_argv(emulator.url, mnt, tmp / "cache", False)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=with_key(emulator.api_key), text=True,
        )  # fmt: skip
        try:
            # The timing of the Ctrl-C is the point here, not a wait for something.
            try:
                process.wait(delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            _unmount(mnt)
        if "init_import_site" in err:
            pytest.skip(f"the Ctrl-C at {delay} s came during Python's own start-up (site)")
        if process.returncode == 0:
            pytest.skip(f"mounted before the Ctrl-C at {delay} s: nothing to interrupt")
        assert "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 1, err
        assert process.returncode == exits.INTERRUPTED, (process.returncode, err)
        assert out == ""
        assert not is_mounted(mnt)
