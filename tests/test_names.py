"""Names that cost nothing to make up, folder times that stay, and `.`/`..` (issues 19 and 20),
through real mounts of the emulator."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted, public_tempdir

TOOL_TIMEOUT = 120
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
# Made-up days: before any call the emulator makes (which are of the last months).
FIRST_MADE_UP = dt.date(2001, 1, 1)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=1, calls_per_workspace=30, max_duration=10.0) as emu:
        yield emu


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def drop_dentries() -> None:
    """Makes the kernel forget the names it holds, where this machine lets a test (a
    container's /proc/sys is often read-only: then the names stay, and must cost nothing)."""
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("2\n")


def made_up_days(count: int, first: dt.date = FIRST_MADE_UP) -> list[str]:
    return [(first + dt.timedelta(days=n)).isoformat() for n in range(count)]


def test_100000_made_up_day_names_cost_no_memory(emulator: EmulatorProc) -> None:
    workspace_id = emulator.data.workspaces[0].id
    with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id) as mnt:
        days = mnt.path / "by-date" / workspace_id
        # Days a file time can show (1677-2262: nanoseconds in 64 bits), none with a call.
        names = made_up_days(101_000, dt.date(1700, 1, 1))
        # Warmed up: the code paths and the allocator's pools met once.
        for name in names[:1000]:
            os.stat(days / name)
        before = rss_bytes(mnt.process.pid)
        for name in names[1000:]:
            os.stat(days / name)
        drop_dentries()
        grown = rss_bytes(mnt.process.pid) - before
        assert grown < 10 << 20, f"{grown >> 20} MB more for 100,000 made-up day names"
        # Still the days they name.
        assert (
            os.stat(days / names[-1]).st_mtime
            == dt.datetime.fromisoformat(names[-1]).replace(tzinfo=dt.UTC).timestamp()
        )


_AS_OTHER_USER = """
import errno, json, os, sys
root, names = sys.argv[1], sys.argv[2:]
found = {}
for name in names:
    path = os.path.join(root, name)
    try:
        os.stat(path)
        os.listdir(path)
        found[name] = 0
    except OSError as exc:
        found[name] = exc.errno
print(json.dumps(found))
"""


def as_other_user(root: Path, names: list[str]) -> dict[str, int]:
    """name -> errno (0: found and listed) of each name under `root`, as user 65534."""
    done = subprocess.run(
        [*AS_NOBODY, sys.executable, "-I", "-c", _AS_OTHER_USER, str(root), *names],
        capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found: dict[str, int] = json.loads(done.stdout)
    return found


def list_requests(emulator: EmulatorProc) -> int:
    return int(emulator.stats()["requests"].get("list-calls", 0))


def test_other_users_made_up_day_names_cost_no_request(emulator: EmulatorProc) -> None:
    workspace_id = emulator.data.workspaces[0].id
    real = {c.started_at.astimezone(dt.UTC).date().isoformat()
            for c in emulator.data.calls(workspace_id) if c.recording is not None}  # fmt: skip
    # Days the index could hold, and some it could not (before 1677).
    names = made_up_days(200) + made_up_days(3, dt.date(1000, 1, 1))
    with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id,
                 "--allow-other") as mnt:  # fmt: skip
        emulator.reset_stats()
        days = mnt.path / "by-date" / workspace_id
        found = as_other_user(days, [*names, *sorted(real)])
        # A day the listing lacks is ENOENT for them; one it has, theirs to see.
        assert {found[name] for name in names} == {2}, mnt.log_tail()
        assert {found[name] for name in real} == {0}
        # The workspace's span of calls (30 calls: a page), and each real day's own page
        # as it is listed: not a request a made-up name.
        assert list_requests(emulator) <= 1 + len(real)
        # The owner still enters any day (an empty one, here).
        assert os.listdir(days / names[0]) == []


def folder_times(mnt: Mount, workspace_id: str, day: str) -> dict[str, float]:
    folders = ["", "by-date", f"by-date/{workspace_id}", "by-name", f"by-date/{workspace_id}/{day}"]
    return {folder or "/": os.stat(mnt.path / folder).st_mtime for folder in folders}


def test_folder_times_are_the_newest_calls_and_stay_across_remounts(
    emulator: EmulatorProc,
) -> None:
    workspace_id = emulator.data.workspaces[0].id
    newest = max(c.started_at for c in emulator.data.calls(workspace_id)).timestamp()
    day = max(c.started_at for c in emulator.data.calls(workspace_id)).astimezone(dt.UTC).date()
    midnight = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
    folders = ["/", "by-date", f"by-date/{workspace_id}", "by-name"]
    cache = public_tempdir("amigofs-cache-")
    try:
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as first:
            # Nothing known at the first look: a fixed time, not the mount's start; and
            # it stays while mounted, listings or not (tar reads the tree between two
            # looks at each folder and fails if a folder's time moved).
            before = folder_times(first, workspace_id, day.isoformat())
            # (to /dev/null, GNU tar reads no file's bytes: it walks and stats the tree)
            tar = subprocess.run(["tar", "-cf", "/dev/null", "-C", str(first.path), "."],
                                 capture_output=True, text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
            assert tar.returncode == 0, tar.stderr
            os.listdir(first.path)
            os.listdir(first.path / workspace_id)
            assert folder_times(first, workspace_id, day.isoformat()) == before
            assert before == {
                **dict.fromkeys(folders, 0.0),
                f"by-date/{workspace_id}/{day}": midnight,
            }
        # Listed once: the newest call's start from the first look, on every mount.
        expected = {**dict.fromkeys(folders, newest), f"by-date/{workspace_id}/{day}": midnight}
        for _ in range(2):
            with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as again:
                assert folder_times(again, workspace_id, day.isoformat()) == expected
                os.listdir(again.path / workspace_id)
                assert folder_times(again, workspace_id, day.isoformat()) == expected
    finally:
        subprocess.run(["rm", "-rf", str(cache)], check=True, timeout=TOOL_TIMEOUT)


def test_ls_a_shows_dot_and_dot_dot_with_their_inodes(emulator: EmulatorProc) -> None:
    workspace_id = emulator.data.workspaces[0].id
    call = emulator.data.calls(workspace_id)[0]
    assert call.recording is not None
    day = call.started_at.astimezone(dt.UTC).date().isoformat()
    with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id) as mnt:
        for folder, parent in [
            ("", ""),
            (workspace_id, ""),
            (f"{workspace_id}/{call.recording.call_sid}", workspace_id),
            ("by-date", ""),
            (f"by-date/{workspace_id}", "by-date"),
            (f"by-date/{workspace_id}/{day}", f"by-date/{workspace_id}"),
            ("by-name", ""),
        ]:
            path = mnt.path / folder
            shown = subprocess.run(["ls", "-aif", str(path)], capture_output=True, text=True,
                                   timeout=TOOL_TIMEOUT)  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            lines = [line.split() for line in shown.stdout.splitlines()]
            assert [name for _, name in lines[:2]] == [".", ".."], (folder, lines[:3])
            assert int(lines[0][0]) == os.stat(path).st_ino, folder
            if folder:
                assert int(lines[1][0]) == os.stat(mnt.path / parent).st_ino, folder
            # Every other entry once, as the listing has it.
            rest = sorted(name for _, name in lines[2:])
            assert rest == sorted(os.listdir(path)), folder
        # find walks the tree as before: each call's files, no `.` among them.
        found = subprocess.run(["find", str(mnt.path / workspace_id), "-name", "metadata.json"],
                               capture_output=True, text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
        assert found.returncode == 0, found.stderr
        assert len(found.stdout.split()) == len(os.listdir(mnt.path / workspace_id))
