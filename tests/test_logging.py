"""Where a mount's log goes and what it holds, as an operator reads it.

A daemon writes CACHE_DIR/mount.log (or --log-file FILE), every line dated (ISO 8601 with
the zone), its fetch worker's lines too; -v and -q move the level a step each; a second
mount refused on the same cache directory says why on the terminal and leaves the first
mount's log as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import MOUNT_DEADLINE, force_unmount, mounted, public_tempdir
from tests.test_child_processes import mountpoint

DATED = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d amigofs\[(?P<pid>\d+)\] "
    r"(?P<level>[A-Z]+) [\w.]+: .*"
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(
        workspaces=1, calls_per_workspace=2, min_duration=1.0, max_duration=2.0
    ) as emu:
        yield emu


def amigofs(
    emulator: EmulatorProc, mnt: Path, cache_dir: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMIGO_", "AMIGOFS_"))}
    return subprocess.run(
        [sys.executable, "-m", "amigofs", "mount", str(mnt), "--base-url", emulator.url,
         "--cache-dir", str(cache_dir), *extra],
        env={**env, "AMIGO_API_KEY": emulator.api_key}, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=MOUNT_DEADLINE * 2,
    )  # fmt: skip


@contextlib.contextmanager
def daemon(emulator: EmulatorProc, cache_dir: Path, *extra: str) -> Iterator[Path]:
    """A daemon mount at a fresh mount point; afterwards unmounted and every process of it
    gone, its last lines (unmounted) written."""
    with mountpoint() as mnt:
        result = amigofs(emulator, mnt, cache_dir, *extra)
        assert result.returncode == 0, result.stderr
        yield mnt


def read_a_recording(mnt: Path) -> None:
    [workspace] = os.listdir(mnt / "by-name")
    for call in os.listdir(mnt / "by-name" / workspace)[:1]:
        (mnt / "by-name" / workspace / call / "inbound.wav").read_bytes()


def test_a_daemons_log_is_dated_and_holds_its_fetch_workers_lines(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    with daemon(emulator, tmp_path / "cache", "-v") as mnt:
        read_a_recording(mnt)
    lines = (tmp_path / "cache" / "mount.log").read_text().splitlines()
    undated = [line for line in lines if not DATED.fullmatch(line)]
    assert lines and not undated, undated
    assert any(" INFO amigofs.daemon.mount: mounted " in line for line in lines)
    assert any(" INFO amigofs.daemon.mount: unmounted " in line for line in lines)
    # The daemon's and its fetch worker's (which downloaded the audio), in one file.
    pids = {match["pid"] for line in lines if (match := DATED.fullmatch(line))}
    assert len(pids) >= 2, pids


@pytest.mark.parametrize("given", ["--log-file", "-o"])
def test_log_file_puts_the_log_where_it_says(
    emulator: EmulatorProc, tmp_path: Path, given: str
) -> None:
    log_file = tmp_path / "amigofs.log"
    flag = [given, str(log_file) if given == "--log-file" else f"log_file={log_file}"]
    with daemon(emulator, tmp_path / "cache", *flag):
        pass
    lines = (tmp_path / "amigofs.log").read_text().splitlines()
    assert any(" INFO amigofs.daemon.mount: mounted " in line for line in lines), lines
    assert all(DATED.fullmatch(line) for line in lines), lines
    assert not (tmp_path / "cache" / "mount.log").exists()


@pytest.mark.parametrize(
    ("flags", "shown", "not_shown"),
    [((), "INFO", "DEBUG"), (("-v",), "DEBUG", None), (("-q",), None, "INFO")],
    ids=["default", "-v", "-q"],
)
def test_v_and_q_change_what_is_logged(
    emulator: EmulatorProc, flags: tuple[str, ...], shown: str | None, not_shown: str | None
) -> None:
    with mounted(emulator.url, emulator.api_key, *flags) as mnt:
        read_a_recording(mnt.path)
    levels = {match["level"] for line in mnt.log().splitlines() if (match := DATED.fullmatch(line))}
    if shown is not None:
        assert shown in levels, mnt.log()
    if not_shown is not None:
        assert not_shown not in levels, mnt.log()


def test_a_refused_second_mount_leaves_the_first_mounts_log_as_it_was(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    with daemon(emulator, cache_dir):
        before = (cache_dir / "mount.log").read_bytes()
        second = public_tempdir("amigofs-logging-second-")
        try:
            result = amigofs(emulator, second, cache_dir)
        finally:
            force_unmount(second)
            second.rmdir()
        assert result.returncode == 2, result
        assert "in use" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
        assert (cache_dir / "mount.log").read_bytes() == before
