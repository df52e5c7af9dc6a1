"""What programs see when the API fails: the errno table of the README, through a real mount."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from amigofs.daemon.mount_table import is_mounted
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    Mount,
    force_unmount,
    mount_command,
    mounted,
    public_tempdir,
    wait_until,
)
from tests.reliability import errno_of


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(
        workspaces=2, calls_per_workspace=8, archived_calls=2, not_configured_workspaces=1
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def mount(emulator: EmulatorProc) -> Iterator[Mount]:
    with mounted(emulator.url, emulator.api_key) as mnt:
        yield mnt


def test_archived_recording_is_eagain_with_restore_time_logged_then_readable(
    emulator: EmulatorProc, mount: Mount
) -> None:
    archived = [r for r in emulator.data.recordings() if r.archived]
    assert archived
    recording = archived[0]
    call_dir = mount.path / recording.workspace_id / recording.call_sid
    # The call is listed (the listing does not know it is archived) ...
    assert recording.call_sid in os.listdir(mount.path / recording.workspace_id)
    # ... but its files cannot be had until it is restored: EAGAIN, try again later.
    assert errno_of(lambda: os.listdir(call_dir)) == errno.EAGAIN
    assert errno_of(lambda: os.open(call_dir / "inbound.wav", os.O_RDONLY)) == errno.EAGAIN
    wait_until(
        lambda: "archived" in mount.log() and "restore expected at" in mount.log(),
        5,
        "the log line",
    )
    emulator.control(restore=[recording.call_sid])
    data = (call_dir / "metadata.json").read_bytes()
    assert data == recording.metadata_bytes


def test_not_configured_workspace_is_enodata(emulator: EmulatorProc, mount: Mount) -> None:
    workspace = next(ws for ws in emulator.data.workspaces if not ws.recording_configured)
    calls = os.listdir(mount.path / workspace.id)
    assert calls
    assert errno_of(lambda: os.listdir(mount.path / workspace.id / calls[0])) == errno.ENODATA
    assert "not configured" in mount.log()


def test_unknown_sid_is_enoent(emulator: EmulatorProc, mount: Mount) -> None:
    workspace_id = emulator.data.workspaces[0].id
    missing = "CA" + "0" * 32
    assert errno_of(lambda: os.stat(mount.path / workspace_id / missing)) == errno.ENOENT
    # Asked again within the negative TTL: the same answer, without a request.
    emulator.reset_stats()
    assert errno_of(lambda: os.stat(mount.path / workspace_id / missing)) == errno.ENOENT
    assert sum(emulator.stats()["requests"].values()) == 0


def test_a_wrong_key_is_refused_when_mounting_in_one_line(emulator: EmulatorProc) -> None:
    # Checked before the mount says yes (a key that loses access later: test_revoked).
    point = public_tempdir("amigofs-mnt-")
    try:
        result = subprocess.run(
            mount_command(emulator.url, point, point.parent / f"{point.name}-cache"),
            env={**os.environ, "AMIGO_API_KEY": "not-the-key"},
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert not is_mounted(point)
    finally:
        force_unmount(point)
        point.rmdir()
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1 and "401" in result.stderr, result.stderr
    assert "not-the-key" not in result.stderr + result.stdout


def test_server_gone_is_eio_within_the_deadline_and_the_mount_stays() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=3) as emulator:
        recording = next(emulator.data.recordings())
        with mounted(emulator.url, emulator.api_key, "--timeout", "3") as mnt:
            call_dir = mnt.path / recording.workspace_id / recording.call_sid
            listing = sorted(os.listdir(call_dir))
            emulator.stop()
            started = time.monotonic()
            with open(call_dir / "outbound.wav", "rb") as audio:
                assert errno_of(lambda: audio.read(4096)) == errno.EIO
            # A bound, not a benchmark: the deadline is 3 s, a hang would be minutes.
            assert time.monotonic() - started < 10
            # What was listed before stays listable; the mount is still up.
            assert sorted(os.listdir(call_dir)) == listing
            assert mnt.process.poll() is None
