"""A workspace copied over an internet link with faults is byte-exact (issue 13).

The emulator has the internet link profile as it is (not scaled down): 50 ms before each
answer, 3 MB/s a response, 24 MB/s shared by every response, 32 requests in flight; HTTPS
with its self-signed certificate, which the mount trusts through SSL_CERT_FILE with
certificate checks on; and one request in ten faulted (500, 503, 429 with Retry-After,
bodies dropped or stalled midway, ranges ignored). Through the real command, each test on a
fresh mount with an empty cache, `rsync -a` and `tar` of a workspace of eight short calls
must hold every file's exact bytes, compared by sha256 with the emulator's own (call.wav with
the reference of tests/test_call_wav.py). Each mount has a deadline and is unmounted on the
way out (tests/mounting.py); each command has a timeout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs.emulator.config import LINK_PROFILES
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted
from tests.reliability import PRESENTED, presented_bytes
from tests.test_call_wav import Source, reference

TOOL_TIMEOUT = 120
CALLS = 8


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(
        **LINK_PROFILES["internet"],  # type: ignore[arg-type]
        tls=True,
        fault_rate=0.1,
        stall_seconds=1.5,
        retry_after=1,
        seed=13,
        workspaces=1,
        calls_per_workspace=CALLS,
        max_duration=20.0,
        null_sid_calls=0,
        no_recording_calls=0,
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def expected(emulator: EmulatorProc) -> dict[str, str]:
    """sha256 of every file of the workspace, by its path below the workspace."""
    source = Source(emulator, "plain")
    found = {}
    for recording in emulator.data.recordings():
        files = {name: presented_bytes(emulator, recording, name) for name in PRESENTED}
        files["call.wav"] = reference(source, recording)
        for name, content in files.items():
            found[f"{recording.call_sid}/{name}"] = hashlib.sha256(content).hexdigest()
    assert len(found) == 4 * CALLS
    return found


@pytest.fixture
def mnt(emulator: EmulatorProc) -> Iterator[Mount]:
    assert emulator.certificate is not None
    trust = {"SSL_CERT_FILE": emulator.certificate}
    with mounted(emulator.url, emulator.api_key, "--timeout", "15", env=trust) as mount:
        emulator.reset_stats()
        yield mount


def hashes_below(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file()
    }


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)


def assert_faults_were_met(emulator: EmulatorProc) -> None:
    """The copy went through faults, not around them."""
    faults = emulator.stats()["faults"]
    assert sum(faults.values()) > 0, faults


def test_rsync_over_the_link_with_faults_is_byte_exact(
    emulator: EmulatorProc, expected: dict[str, str], mnt: Mount, tmp_path: Path
) -> None:
    workspace = mnt.path / emulator.data.workspaces[0].id
    copy = tmp_path / "copy"
    done = run_tool("rsync", "-a", f"{workspace}/", f"{copy}/")
    assert done.returncode == 0, done.stderr + mnt.log()[-2000:]
    assert hashes_below(copy) == expected
    assert_faults_were_met(emulator)


def test_tar_over_the_link_with_faults_is_byte_exact(
    emulator: EmulatorProc, expected: dict[str, str], mnt: Mount, tmp_path: Path
) -> None:
    workspace = mnt.path / emulator.data.workspaces[0].id
    archive = tmp_path / "workspace.tar"
    # Into a file, not /dev/null: GNU tar skips reading the files for /dev/null.
    done = run_tool("tar", "-cf", str(archive), "-C", str(workspace), ".")
    assert done.returncode == 0, done.stderr + mnt.log()[-2000:]
    got = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile():
                content = tar.extractfile(member)
                assert content is not None
                got[member.name.removeprefix("./")] = hashlib.sha256(content.read()).hexdigest()
    assert got == expected
    assert_faults_were_met(emulator)


def test_a_workspace_keeps_its_times_while_it_is_listed(emulator: EmulatorProc, mnt: Mount) -> None:
    workspace = mnt.path / emulator.data.workspaces[0].id
    before = workspace.stat()
    assert len(os.listdir(workspace)) == CALLS
    after = workspace.stat()
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
