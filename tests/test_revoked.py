"""A key that loses access to a workspace loses it in the mount too: EACCES at and below the
workspace, never an empty listing (a `rsync --delete` from it would empty the backup), and the
cached bytes come back without a download once access does. (The emulator's revoke and grant on
their own: tests/unit/test_emulator_revoke.py.)"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted, wait_until, workspace_names
from tests.reliability import LISTED, PRESENTED, errno_of, presented_bytes

TOOL_TIMEOUT = 60.0
DEADLINE = 20.0


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every file under `root`, by relative path, with its SHA-256."""
    return {
        str(path.relative_to(root)): sha256(path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def recorded_sids(emulator: EmulatorProc, workspace_id: str) -> list[str]:
    calls = emulator.data.calls(workspace_id)
    return sorted(c.call_sid for c in calls if c.call_sid is not None and c.recording is not None)


def test_a_revoked_workspace_is_eacces_never_empty_and_comes_back_without_a_download(
    tmp_path: Path,
) -> None:
    with running_emulator(workspaces=1, calls_per_workspace=4, max_duration=20.0) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        recording = next(r for r in emulator.data.recordings() if r.workspace_id == workspace_id)
        expected = recorded_sids(emulator, workspace_id)
        backup = tmp_path / "backup"
        with mounted(emulator.url, emulator.api_key, "--listing-ttl", "1") as mnt:
            workspace = mnt.path / workspace_id
            call_dir = workspace / recording.call_sid
            assert sorted(os.listdir(workspace)) == expected
            truth = {name: presented_bytes(emulator, recording, name) for name in PRESENTED}
            for name in PRESENTED:
                assert sha256((call_dir / name).read_bytes()) == sha256(truth[name])
            first = run("rsync", "-a", f"{workspace}/", str(backup))
            assert first.returncode == 0, first.stderr
            saved = tree(backup)
            assert len(saved) == len(LISTED) * len(expected)
            emulator.reset_stats()

            emulator.control(revoke=[workspace_id])

            def refused() -> bool:
                # Until the mount learns of it, the cached listing; never anything less.
                try:
                    listed = sorted(os.listdir(workspace))
                except PermissionError:
                    return True
                assert listed == expected
                return False

            wait_until(refused, DEADLINE, "the workspace to be refused with EACCES")
            asked = emulator.stats()["requests"].get("list-calls", 0)
            for _ in range(20):
                assert errno_of(lambda: os.listdir(workspace)) == errno.EACCES
            # Asked again at most once a listing TTL, not once an access.
            assert emulator.stats()["requests"].get("list-calls", 0) - asked <= 2
            # Still there, refused: not gone.
            assert workspace_names(mnt.path) == [workspace_id]
            ls = run("ls", "-l", str(workspace))
            assert ls.returncode != 0 and "Permission denied" in ls.stderr, ls
            again = run("rsync", "-a", "--delete", f"{workspace}/", str(backup))
            assert again.returncode != 0, again.stdout
            assert tree(backup) == saved, "rsync --delete removed files from the backup"
            for name in PRESENTED:
                path = call_dir / name
                assert errno_of(lambda p=path: p.read_bytes()) == errno.EACCES, name
            assert errno_of(lambda: os.listdir(call_dir)) == errno.EACCES
            # Not even what the kernel had cached (call directories for a day).
            assert errno_of(lambda: os.stat(call_dir)) == errno.EACCES
            assert errno_of(lambda: os.stat(call_dir / "inbound.wav")) == errno.EACCES
            log = mnt.log()
            assert any("revoked" in line and workspace_id in line for line in log.splitlines()), log

            emulator.control(grant=[workspace_id])

            def granted() -> bool:
                try:
                    return sorted(os.listdir(workspace)) == expected
                except PermissionError:
                    return False

            wait_until(granted, DEADLINE, "the workspace to be listed again")
            for name in PRESENTED:
                assert sha256((call_dir / name).read_bytes()) == sha256(truth[name]), name
            assert emulator.stats()["audio_bytes"] == 0, "cached audio was fetched again"
            assert mnt.process.poll() is None
