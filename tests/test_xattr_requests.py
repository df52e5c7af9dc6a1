"""Extended attributes cost no request until a user.amigo.* value is read: on a listed
workspace, `ls -l` (and what coreutils >= 9.6 adds to it, a llistxattr of every entry),
ACL and security-label questions, and listing a call's attribute names ask the API
nothing; a value reads the call's metadata, as before."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted
from tests.test_call_index import ls_until_complete

CALLS = 300
TOOL_TIMEOUT = 60
NOT_OURS = ("security.selinux", "system.posix_acl_access", "system.posix_acl_default")


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=1, calls_per_workspace=CALLS, archived_calls=2) as emulator:
        yield emulator


@pytest.fixture
def listed(emulator: EmulatorProc) -> Iterator[tuple[Mount, Path]]:
    """A mount whose workspace is listed, as after a first `ls` of it; no request since."""
    workspace_id = emulator.data.workspaces[0].id
    with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id) as mnt:
        workspace = mnt.path / workspace_id
        assert len(ls_until_complete(workspace)) == CALLS
        emulator.reset_stats()
        yield mnt, workspace


def requests(emulator: EmulatorProc) -> dict[str, int]:
    counted: dict[str, int] = emulator.stats()["requests"]
    return {operation: n for operation, n in counted.items() if n}


def test_ls_l_and_listing_every_call_s_attribute_names_make_no_request(
    emulator: EmulatorProc, listed: tuple[Mount, Path]
) -> None:
    _, workspace = listed
    shown = subprocess.run(["ls", "-l", str(workspace)], capture_output=True, text=True,
                           timeout=TOOL_TIMEOUT, check=True)  # fmt: skip
    assert len(shown.stdout.splitlines()) == CALLS + 1  # and the "total" line
    # What coreutils >= 9.6 adds to `ls -l`: the names of every entry's attributes.
    for entry in os.scandir(workspace):
        names = os.listxattr(entry.path, follow_symlinks=False)
        assert "user.amigo.direction" in names, (entry.name, names)
    assert requests(emulator) == {}


def test_acl_and_security_questions_are_answered_at_once_not_supported(
    emulator: EmulatorProc, listed: tuple[Mount, Path]
) -> None:
    _, workspace = listed
    call = next(os.scandir(workspace)).path
    for name in NOT_OURS:
        with pytest.raises(OSError) as error:
            os.getxattr(call, name)
        assert error.value.errno == errno.EOPNOTSUPP, name
        asked = subprocess.run(["getfattr", "-n", name, call], capture_output=True, text=True,
                               timeout=TOOL_TIMEOUT)  # fmt: skip
        assert asked.returncode != 0 and "Operation not supported" in asked.stderr, asked
    # A user.* name that is not ours is supported and not set.
    with pytest.raises(OSError) as error:
        os.getxattr(call, "user.other")
    assert error.value.errno == errno.ENODATA
    assert requests(emulator) == {}


def test_ls_l_asks_the_mount_about_labels_and_acls_once_not_for_every_entry(
    listed: tuple[Mount, Path],
) -> None:
    """Each attribute syscall of `ls` is one FUSE request (the kernel caches none):
    answered ENODATA, coreutils asked three of every entry; answered EOPNOTSUPP, it
    remembers the device and asks once a run."""
    _, workspace = listed
    traced = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=getxattr,lgetxattr", "-e", "signal=none",
         "ls", "-l", str(workspace)],
        capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=True,
    )  # fmt: skip
    assert len(traced.stdout.splitlines()) == CALLS + 1
    asked = [line for line in traced.stderr.splitlines() if "getxattr(" in line]
    assert len(asked) <= 4, asked[:10]


def test_a_value_is_read_from_the_call_s_metadata_as_before(
    emulator: EmulatorProc, listed: tuple[Mount, Path]
) -> None:
    _, workspace = listed
    recording = next(r for r in emulator.data.recordings() if not r.archived)
    call = workspace / recording.call_sid
    dumped = subprocess.run(["getfattr", "--absolute-names", "-d", str(call)],
                            capture_output=True, text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
    # Every name listed has a value: nothing on stderr.
    assert dumped.returncode == 0 and dumped.stderr == "", dumped
    assert f'user.amigo.direction="{recording.metadata["direction"]}"' in dumped.stdout
    assert f'user.amigo.tts_provider="{recording.metadata["tts_provider"]}"' in dumped.stdout
    assert requests(emulator).get("get-recording-metadata") == 1
    # The names of a file of that call: still nothing asked.
    emulator.reset_stats()
    audio = call / "inbound.wav"
    assert os.listxattr(audio) == os.listxattr(call)
    rate = os.getxattr(audio, "user.amigo.sample_rate").decode()
    assert rate == str(recording.metadata["inbound_sample_rate"])
    assert os.listxattr(call / "metadata.json") == []
    assert requests(emulator) == {}


def test_an_archived_call_shows_every_name_with_a_value_and_its_restore_time(
    emulator: EmulatorProc, listed: tuple[Mount, Path]
) -> None:
    _, workspace = listed
    recording = next(r for r in emulator.data.recordings() if r.archived)
    call = str(workspace / recording.call_sid)
    dumped = subprocess.run(["getfattr", "--absolute-names", "-d", call],
                            capture_output=True, text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
    assert dumped.returncode == 0 and dumped.stderr == "", dumped
    assert f'user.amigo.direction="{recording.metadata["direction"]}"' in dumped.stdout
    assert 'user.amigo.format="unknown"' in dumped.stdout
    # Known archived now: its restore time is listed too.
    assert "user.amigo.restore_eta" in os.listxattr(call)
    assert os.getxattr(call, "user.amigo.restore_eta")
