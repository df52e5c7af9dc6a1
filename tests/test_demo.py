"""`amigofs demo`: it mounts on an empty directory (or one of its own), unmounts what it
mounted when stopped, and never touches a mount or files that were there before it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs.daemon.mount_table import is_mounted, mount_type
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    MOUNT_DEADLINE,
    force_unmount,
    mounted,
    public_tempdir,
    stop_process,
    tmpfs_at,
    wait_until,
    workspace_names,
)

DEMO_DEADLINE = 60.0
DEMO = (sys.executable, "-m", "amigofs", "demo")


def run_demo(mountpoint: Path) -> subprocess.CompletedProcess[str]:
    """Runs the demo to its end; one that does not end in time is stopped as Ctrl-C
    would, so that it stops its own emulator and mount too (a kill would orphan them)."""
    demo = subprocess.Popen([*DEMO, str(mountpoint)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        stdout, stderr = demo.communicate(timeout=DEMO_DEADLINE)
    except subprocess.TimeoutExpired:
        stop_process(demo)
        stdout, stderr = demo.communicate()
    return subprocess.CompletedProcess(demo.args, demo.returncode, stdout, stderr)


def assert_refused(result: subprocess.CompletedProcess[str], why: str) -> None:
    assert result.returncode == 2, result
    assert result.stderr.startswith("amigofs: ") and why in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


@pytest.fixture
def tmpfs_with_a_file() -> Iterator[Path]:
    """A tmpfs holding a user's file, mounted for the test and always unmounted."""
    path = Path(tempfile.mkdtemp(prefix="amigofs-demo-tmpfs-"))
    try:
        with tmpfs_at(path, "1M"):
            (path / "notes.txt").write_bytes(b"the user's own notes\n")
            yield path
    finally:
        path.rmdir()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=1, calls_per_workspace=2, max_duration=5.0) as emu:
        yield emu


def test_demo_refuses_a_tmpfs_in_use_and_leaves_it_and_its_file(tmpfs_with_a_file: Path) -> None:
    result = run_demo(tmpfs_with_a_file)
    assert_refused(result, f"mount point {tmpfs_with_a_file} is already mounted (busy)")
    assert mount_type(os.path.realpath(tmpfs_with_a_file)) == "tmpfs"
    assert (tmpfs_with_a_file / "notes.txt").read_bytes() == b"the user's own notes\n"


def test_demo_refuses_a_live_amigofs_mount_which_goes_on_serving(emulator: EmulatorProc) -> None:
    with mounted(emulator.url, emulator.api_key) as mnt:
        result = run_demo(mnt.path)
        assert_refused(result, f"mount point {mnt.path} is already mounted (busy)")
        assert mnt.process.poll() is None
        assert workspace_names(mnt.path) == [emulator.data.workspaces[0].id]
        assert mnt.unmount() == 0


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_bytes(b"keep me\n")
    try:
        result = run_demo(tmp_path)
    finally:
        force_unmount(tmp_path)
    assert_refused(result, f"mount point {tmp_path} is not empty")
    assert not is_mounted(tmp_path)
    assert os.listdir(tmp_path) == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_bytes() == b"keep me\n"


def test_demo_mounts_an_empty_directory_and_unmounts_on_ctrl_c(tmp_path: Path) -> None:
    mountpoint = public_tempdir("amigofs-demo-mnt-")
    guide = tmp_path / "stdout"
    with open(guide, "wb") as out, open(tmp_path / "stderr", "wb") as err:
        demo = subprocess.Popen([*DEMO, str(mountpoint)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)  # fmt: skip
    try:
        wait_until(lambda: "Press Ctrl-C" in guide.read_text() or demo.poll() is not None,
                   DEMO_DEADLINE, "the demo's guide")  # fmt: skip
        assert demo.poll() is None, (tmp_path / "stderr").read_text()
        assert is_mounted(mountpoint)
        assert len(workspace_names(mountpoint)) == 2  # the demo's two workspaces
        url = next(w for w in guide.read_text().split() if w.startswith("http://127.0.0.1:"))
        demo.send_signal(signal.SIGINT)
        assert demo.wait(DEMO_DEADLINE) == 0
        assert not is_mounted(mountpoint)
        assert workspace_names(mountpoint) == []
        stderr = (tmp_path / "stderr").read_text()
        assert stderr.strip().splitlines()[-1] == "amigofs demo: unmounted and stopped", stderr
        host, port = url.removeprefix("http://").split(":")
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection((host, int(port)), timeout=MOUNT_DEADLINE),
        ):
            pass  # the emulator stopped with it
    finally:
        force_unmount(mountpoint)
        stop_process(demo)
        mountpoint.rmdir()


def test_demo_live_serves_a_busy_imperfect_service_and_a_replaced_recording_reads_whole(
    tmp_path: Path,
) -> None:
    mountpoint = public_tempdir("amigofs-demo-mnt-")
    guide = tmp_path / "stdout"
    with open(guide, "wb") as out, open(tmp_path / "stderr", "wb") as err:
        demo = subprocess.Popen([*DEMO, "--live", str(mountpoint)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)  # fmt: skip
    try:
        wait_until(lambda: "__control" in guide.read_text() or demo.poll() is not None,
                   DEMO_DEADLINE, "the demo's guide")  # fmt: skip
        assert demo.poll() is None, (tmp_path / "stderr").read_text()
        text = guide.read_text()
        url = next(w for w in text.split() if w.startswith("http://127.0.0.1:"))
        # The emulator runs as the real service behaves (issue 19's knobs).
        with urllib.request.urlopen(f"{url}/__control", timeout=MOUNT_DEADLINE) as answer:
            knobs = json.load(answer)
        assert knobs["new_calls_per_second"] == 1 and knobs["page_rows"] == 40
        # What the guide says to try: replace a recording, then read it whole.
        command = next(line.strip() for line in text.splitlines() if "__control" in line)
        assert subprocess.run(command, shell=True, timeout=MOUNT_DEADLINE).returncode == 0
        cat = Path(next(w for w in text.split() if w.endswith("/inbound.wav")))
        data = cat.read_bytes()
        # One version, whole: a WAV of the size shown, read the same way twice.
        assert data[:4] == b"RIFF" and len(data) == cat.stat().st_size
        assert int.from_bytes(data[4:8], "little") == len(data) - 8
        assert cat.read_bytes() == data
        demo.send_signal(signal.SIGINT)
        assert demo.wait(DEMO_DEADLINE) == 0
    finally:
        force_unmount(mountpoint)
        stop_process(demo)
        mountpoint.rmdir()
