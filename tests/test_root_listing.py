"""The root listing kept on disk belongs to the server and key that listed it.

A remount shows the root at once from the copy an earlier mount kept; that copy
must not be shown by a mount of another server or key, nor stand in for every
workspace after a mount that was asked for one (--workspace).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.emulator_proc import running_emulator
from tests.mounting import mounted, workspace_names


def _ids(emu) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(ws.id for ws in emu.data.workspaces)


def test_another_server_never_sees_the_first_ones_workspaces(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with (
        running_emulator(seed=1, workspaces=2, calls_per_workspace=1) as first,
        mounted(first.url, first.api_key, "--cache-dir", str(cache)) as mnt,
    ):
        assert sorted(workspace_names(mnt.path)) == _ids(first)
    with running_emulator(seed=2, workspaces=3, calls_per_workspace=1) as second:
        assert set(_ids(second)).isdisjoint(_ids(first))
        with mounted(second.url, second.api_key, "--cache-dir", str(cache)) as mnt:
            # The very first look: what a copy from the other server would answer.
            assert sorted(workspace_names(mnt.path)) == _ids(second)


def test_a_mount_of_one_workspace_leaves_no_short_root_for_the_next(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with running_emulator(workspaces=3, calls_per_workspace=1) as emu:
        everything = _ids(emu)
        with mounted(emu.url, emu.api_key, "--cache-dir", str(cache)) as mnt:
            assert sorted(workspace_names(mnt.path)) == everything
        only = everything[1]
        with mounted(emu.url, emu.api_key, "--cache-dir", str(cache), "--workspace", only) as mnt:
            assert workspace_names(mnt.path) == [only]
        with mounted(emu.url, emu.api_key, "--cache-dir", str(cache)) as mnt:
            # The first look: what the copy kept by the mount of one would answer.
            assert sorted(workspace_names(mnt.path)) == everything


def test_the_kept_root_listing_holds_no_key(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with running_emulator(api_key="a-secret-key-of-the-user") as emu:
        with mounted(emu.url, emu.api_key, "--cache-dir", str(cache)) as mnt:
            workspace_names(mnt.path)
        for directory, _, files in os.walk(cache):
            for name in files:
                assert b"a-secret-key-of-the-user" not in Path(directory, name).read_bytes()
