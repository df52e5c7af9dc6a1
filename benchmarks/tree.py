"""Listings of one workspace of 1000 calls (200 with --quick).

`ls -l`, `find -type f` and `rsync -a --dry-run` on a fresh amigofs mount, timed against the
same command on memfs, and the emulator requests each made, per call listed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from amigofs.emulator.data import Dataset
from benchmarks.harness import Harness
from benchmarks.memfs import config_from_knobs
from benchmarks.report import median


def run(harness: Harness) -> None:
    s = harness.settings
    knobs = harness.knobs(calls_per_workspace=s.tree_calls, long_calls=0)
    data = Dataset(config_from_knobs(knobs))
    ws = data.workspaces[0].id
    commands: dict[str, Callable[[Path], list[str]]] = {
        "ls -l": lambda root: ["ls", "-l", str(root / ws)],
        "find -type f": lambda root: ["find", str(root / ws), "-type", "f"],
        "rsync -a --dry-run": lambda root: [
            "rsync",
            "-a",
            "--dry-run",
            f"{root / ws}/",
            f"{harness.work.new('rsync-dest')}/",
        ],
    }
    raw: dict[str, Any] = {"calls": s.tree_calls}
    harness.raw["tree"] = raw
    with harness.emulator("tree", **knobs) as emu:
        for name, argv in commands.items():
            entry: dict[str, list[Any]] = {"memfs_s": [], "amigofs_s": [], "requests": []}
            raw[name] = entry
            for run in range(s.runs):
                # A fresh mount each time: the kernel keeps entries and attributes otherwise.
                with harness.memfs(knobs) as mem:
                    entry["memfs_s"].append(harness.timed(argv(mem.path)))
                with harness.amigofs(emu) as mnt:
                    emu.reset_stats()
                    entry["amigofs_s"].append(harness.timed(argv(mnt.path)))
                    entry["requests"].append(emu.stats()["requests"])
                harness.progress(
                    f"run {run + 1}/{s.runs}: {name} over {s.tree_calls} calls: memfs"
                    f" {entry['memfs_s'][-1]:.3f}s amigofs {entry['amigofs_s'][-1]:.3f}s"
                    f" {sum(entry['requests'][-1].values())} requests"
                )
            requests = median([sum(r.values()) for r in entry["requests"]])
            harness.figure(
                f"amigofs.tree.{name}",
                "other",
                f"{name} over {s.tree_calls} calls: amigofs / memfs time",
                median(entry["amigofs_s"]),
                median(entry["memfs_s"]),
                "s",
            )
            harness.figure(
                f"amigofs.tree_requests.{name}",
                "other",
                f"{name} over {s.tree_calls} calls: emulator requests / call",
                requests,
                s.tree_calls,
                "count",
            )
