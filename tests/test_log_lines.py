"""What a mount's log says when something fails, read from the stderr of `amigofs mount
--foreground`: the path below the mount of what failed (never an inode or handle number),
a server that refuses connections named with its reason in one line, and the fetch
worker's lines in the mount's own format."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator

import pytest

from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted, wait_until
from tests.reliability import errno_of

LOG_DEADLINE = 20.0
# setup_logging's format: ISO 8601 TIME amigofs[PID] LEVEL logger: message
LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "
    r"amigofs\[(?P<pid>\d+)\] (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)"
)
# The adapter's names for FUSE requests, as its log lines began before they named paths.
HANDLERS = "lookup|getattr|opendir|readdir|readlink|open|read|getxattr|listxattr"


@pytest.fixture
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(
        workspaces=1, calls_per_workspace=3, min_duration=1.0, max_duration=2.0
    ) as emu:
        yield emu


def errors_naming(mount: Mount, text: str) -> list[str]:
    """The ERROR lines of the mount's log that hold `text`, once there is one."""

    def found() -> list[str]:
        return [line for line in mount.log().splitlines() if "ERROR" in line and text in line]

    wait_until(found, LOG_DEADLINE, f"a log line naming {text}")
    return found()


def assert_no_numbers_for_names(log: str) -> None:
    numbered = re.findall(rf"(?:{HANDLERS}) (?:inode |handle )?\d+\b.*", log)
    assert not numbered, numbered


def test_a_failed_read_names_the_files_path_not_its_inode(emulator: EmulatorProc) -> None:
    workspace = emulator.data.workspaces[0].id
    with mounted(emulator.url, emulator.api_key, "--timeout", "3") as mnt:
        calls = sorted(os.listdir(mnt.path / workspace))
        audio = f"{workspace}/{calls[0]}/inbound.wav"
        inode = os.stat(mnt.path / audio).st_ino
        with open(mnt.path / audio, "rb") as file:
            # Open (its call's records fetched), then the server fails the download.
            emulator.control(fault_rate=1.0, fault_kinds=["503"])
            assert errno_of(lambda: file.read(4096)) == errno.EIO
            [line, *_] = errors_naming(mnt, f"read {audio} at 0+")
        # A directory whose records cannot be had: named by its path too.
        listed = f"{workspace}/{calls[1]}"
        assert errno_of(lambda: os.listdir(mnt.path / listed)) == errno.EIO
        [dir_line, *_] = errors_naming(mnt, listed)
        emulator.control(fault_rate=0.0)
        log = mnt.log()

    assert line.endswith(": HTTP 503: service unavailable"), line
    assert str(inode) not in line, (inode, line)
    assert "HTTP 503" in dir_line, dir_line
    assert_no_numbers_for_names(log)


def test_a_server_that_refuses_connections_is_named_with_its_reason_in_one_line(
    emulator: EmulatorProc,
) -> None:
    workspace = emulator.data.workspaces[0].id
    refused = f"cannot connect to {emulator.url}: Connection refused"
    with mounted(emulator.url, emulator.api_key, "--timeout", "3", "--debug") as mnt:
        calls = sorted(os.listdir(mnt.path / workspace))
        (mnt.path / workspace / calls[0] / "inbound.wav").read_bytes()  # the worker at work
        audio = f"{workspace}/{calls[1]}/outbound.wav"
        with open(mnt.path / audio, "rb") as file:
            emulator.stop()
            # The fetch worker's download, then a request of the mount's own.
            assert errno_of(lambda: file.read(4096)) == errno.EIO
            [download, *_] = errors_naming(mnt, f"read {audio} at 0+")
        looked_up = f"{workspace}/{calls[2]}/metadata.json"
        assert errno_of(lambda: os.stat(mnt.path / looked_up)) == errno.EIO
        [lookup, *_] = errors_naming(mnt, f"lookup {looked_up}: ")
        log = mnt.log()
        mount_pid = mnt.process.pid

    assert download.endswith(refused) and "download-recording-file" in download, download
    assert lookup.endswith(refused), lookup
    assert "ConnectError" not in log and "all attempts to connect" not in log, log
    assert "Traceback" not in log, log
    assert_no_numbers_for_names(log)
    # Every line in the one format, the fetch worker's (another pid) as the mount's.
    lines = [LINE.fullmatch(line) for line in log.splitlines() if line.strip()]
    assert all(lines), [line for line in log.splitlines() if not LINE.fullmatch(line)]
    pids = {int(match["pid"]) for match in lines if match}
    assert mount_pid in pids and len(pids) > 1, pids
    worker = [m for m in lines if m and int(m["pid"]) != mount_pid]
    assert any(m["logger"] == "amigofs.api.client" for m in worker), worker
