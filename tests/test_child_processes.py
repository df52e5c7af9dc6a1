"""No amigofs process imports code from the directory it was started in.

A user runs `amigofs mount` from wherever they are: /tmp, a clone of this repository, a
folder named `amigofs`. Modules planted there (`tomllib.py`, `trio.py`, an `amigofs/`
package), each leaving a marker file when imported, must never run, whichever way the
mount starts: daemonised, --foreground, through the fstab helper, or in the demo, and in
the processes those start (the fetch worker, the unmount guard, the demo's emulator).
amigofs is started as a user starts it: by its installed commands.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amigofs.daemon.mount_table import is_mounted
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    MOUNT_DEADLINE,
    STOP_DEADLINE,
    empty_mountpoint,
    force_unmount,
    stop_process,
    wait_until,
)

PLANTED = ("tomllib", "trio", "amigofs")
BIN = Path(sys.executable).parent


def command(name: str) -> str:
    """An installed command of this environment (the venv's bin, else the PATH's)."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found is not None, f"{name} is not installed"
    return found


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(
        workspaces=1, calls_per_workspace=2, min_duration=1.0, max_duration=2.0
    ) as emu:
        yield emu


@pytest.fixture
def planted() -> Iterator[tuple[Path, Path]]:
    """(a working directory holding the planted modules, the directory of their markers)."""
    root = Path(tempfile.mkdtemp(prefix="amigofs-planted-"))
    cwd, markers = root / "cwd", root / "markers"
    (cwd / "amigofs").mkdir(parents=True)
    markers.mkdir()
    for name in PLANTED:
        source = cwd / "amigofs" / "__init__.py" if name == "amigofs" else cwd / f"{name}.py"
        source.write_text(
            f"import os\nopen(os.path.join({str(markers)!r}, {name!r} + '-' + str(os.getpid())), 'w').close()\n"
        )
    try:
        yield cwd, markers
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mountpoint() -> Iterator[Path]:
    # Left with every process of the mount gone: all their imports done.
    with empty_mountpoint("amigofs-planted-mnt-") as path:
        yield path


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def environment(emulator: EmulatorProc) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMIGO_", "AMIGOFS_"))}
    env["AMIGO_API_KEY"] = emulator.api_key
    return env


def assert_nothing_imported(markers: Path) -> None:
    assert sorted(os.listdir(markers)) == []


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=MOUNT_DEADLINE * 2,
    )  # fmt: skip


def daemon_argv(mnt: Path, url: str, cache_dir: Path) -> list[str]:
    return [command("amigofs"), "mount", str(mnt), "--base-url", url, "--cache-dir", str(cache_dir)]


def fstab_argv(mnt: Path, url: str, cache_dir: Path) -> list[str]:
    """As mount(8) runs the helper for an fstab entry."""
    options = f"base_url={url},cache_dir={cache_dir}"
    return [command("mount.fuse.amigofs"), "none", str(mnt), "-o", options]


@pytest.mark.parametrize("argv", [daemon_argv, fstab_argv], ids=["daemon", "fstab-helper"])
def test_a_daemon_and_its_children_import_nothing_from_the_working_directory(
    emulator: EmulatorProc,
    planted: tuple[Path, Path],
    tmp_path: Path,
    argv: Callable[[Path, str, Path], list[str]],
) -> None:
    cwd, markers = planted
    with mountpoint() as mnt:
        result = run(argv(mnt, emulator.url, tmp_path / "cache"), cwd, environment(emulator))
        assert result.returncode == 0, result.stderr
        assert os.listdir(mnt)  # served, with a fetch worker and an unmount guard started
    assert_nothing_imported(markers)


def test_a_foreground_mount_imports_nothing_from_the_working_directory(
    emulator: EmulatorProc, planted: tuple[Path, Path], tmp_path: Path
) -> None:
    cwd, markers = planted
    with mountpoint() as mnt:
        process = subprocess.Popen(
            [command("amigofs"), "mount", str(mnt), "--base-url", emulator.url,
             "--cache-dir", str(tmp_path / "cache"), "--foreground"],
            cwd=cwd, env=environment(emulator), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: is_mounted(mnt) or process.poll() is not None, MOUNT_DEADLINE, "the mount"
            )
            assert process.poll() is None, process.communicate()[1]
            assert os.listdir(mnt)
            # The key came from the environment: the mount's children get it over their
            # socket (the fetch worker) or not at all (the guard), never inherited.
            children = [pid for pid in all_pids() if parent_of(pid) == process.pid]
            assert children, "no fetch worker or guard found"
            for pid in children:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                assert emulator.api_key.encode() not in environ, pid
        finally:
            force_unmount(mnt)
            stop_process(process)
    assert_nothing_imported(markers)


def test_the_demo_imports_nothing_from_the_working_directory(
    planted: tuple[Path, Path],
) -> None:
    cwd, markers = planted
    with mountpoint() as mnt:
        demo = subprocess.Popen(
            [command("amigofs"), "demo", str(mnt)], cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            assert demo.stdout is not None
            for line in demo.stdout:  # the guide is printed once the mount is up and listed
                if "Press Ctrl-C" in line:
                    break
            assert is_mounted(mnt), demo.communicate(timeout=STOP_DEADLINE)[1]
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    demo.communicate(timeout=STOP_DEADLINE * 2)
            stop_process(demo)
    assert_nothing_imported(markers)
