"""What sniffing a file costs (issue 22): bytes fetched from the emulator over the bytes the
program read, for `file`, the tool file managers (Midnight Commander's F3) and scripts run to
tell what a file is. One workspace of 30 calls, a few of them long (half an hour; 20 minutes
with --quick), the rest 5 s to 2 min; every run on a fresh mount with a fresh cache (cold):

- `file -P bytes=65536` on 20 cold files (the inbound.wav and outbound.wav of the first ten
  calls, in name order): it reads 64 KiB at a file's start and 64 KiB at its end;
- plain `file` over the workspace (every call's inbound.wav and outbound.wav, call by call in
  name order, as `*/*.wav` lists them): it reads 7 MiB at a file's start and 7 MiB at its end,
  so the short calls' files whole and the long ones' in part. call.wav is left out: its bytes
  are the two stored files' samples converted, so what it reads is not a count of stored bytes.

What was read is counted, not computed from what `file` is known to read: `file` runs under
strace (read, pread64 and lseek on the mount's files, each descriptor's position followed), and
the bytes read are the union of the ranges each file returned. A union, not a sum: `file` reads
a short file twice (its start and its end are the same bytes), which a sum would count twice
and so halve the ratio. What was fetched is the emulator's own count of the stored bytes it
served, once no download is in flight. Both are medians over the runs.

`ffmpeg -ss` on a cold hour (fetched / size) is benchmarks/read_path.py's `amigofs.seek_fetched`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import COMMAND_DEADLINE, Harness
from benchmarks.report import median
from tests.emulator_proc import EmulatorProc
from tests.mounting import Mount
from tests.reliability import downloads_landed

CALLS = 30
LONG_CALLS = 6
SNIFF_FILES = 20
AUDIO = ("inbound.wav", "outbound.wav")

# One traced call (strace -f -y -s 0): "PID name(FD</path>, ...) = RESULT". Strings are cut to
# nothing by -s 0, so a path is the only text between < and >.
_SYSCALL = re.compile(r"^(\d+)\s+(\w+)\((-?\d+)<([^>]*)>(.*)\)\s+=\s+(-?\d+)")
_OPENED = re.compile(r"^(\d+)\s+openat\(.*\)\s+=\s+(\d+)<([^>]*)>")


def run(harness: Harness) -> None:
    s = harness.settings
    knobs = harness.knobs(
        calls_per_workspace=CALLS,
        long_calls=LONG_CALLS,
        long_duration=1200.0 if s.quick else 1800.0,
    )
    harness.raw["sniff"] = {"knobs": knobs}
    with harness.emulator("sniff", **knobs) as emu:
        harness.scenario(
            "file -P bytes=65536 on 20 cold files",
            lambda: measure(harness, emu, "file_p", ["file", "-P", "bytes=65536"], SNIFF_FILES),
        )
        harness.scenario(
            f"plain file over a {CALLS}-call workspace",
            lambda: measure(harness, emu, "file_plain", ["file"], None),
        )


def measure(
    harness: Harness, emu: EmulatorProc, key: str, command: list[str], files: int | None
) -> None:
    """Runs `command` over the workspace's audio files (the first `files` of them, or all) on
    a fresh mount per run: fetched bytes over read bytes."""
    if shutil.which("strace") is None:
        raise RuntimeError("strace is not installed (it counts what `file` reads)")
    raw: dict[str, Any] = {"command": command, "runs": []}
    harness.raw["sniff"][key] = raw
    for run in range(harness.settings.runs):
        with harness.amigofs(emu) as mnt:
            paths = audio_files(mnt)[:files]
            emu.reset_stats()
            read = read_by_file(traced(harness, [*command, *map(str, paths)]), mnt.path)
            downloads_landed(mnt, COMMAND_DEADLINE)
            served: dict[str, int] = emu.stats()["download_bytes"]
        entry = {
            "files": len(paths),
            "read_bytes": sum(read.values()),
            "fetched_bytes": sum(served.values()),
            # Where the excess is: the stored files fetched most beyond what was read of them.
            "most_over": most_over(read, served, mnt.path),
        }
        raw["runs"].append(entry)
        harness.progress(
            f"run {run + 1}/{harness.settings.runs}: {' '.join(command)} on {len(paths)} files:"
            f" read {entry['read_bytes'] / 1e6:.1f} MB, fetched {entry['fetched_bytes'] / 1e6:.1f}"
            f" MB ({entry['fetched_bytes'] / max(entry['read_bytes'], 1):.3f}x)"
        )
    runs = raw["runs"]
    harness.figure(
        f"amigofs.sniff.{key}",
        "bytes",
        f"amigofs {' '.join(command)} on {runs[0]['files']} cold files: fetched / read",
        median([r["fetched_bytes"] for r in runs]),
        median([r["read_bytes"] for r in runs]),
        "bytes",
    )


def audio_files(mnt: Mount) -> list[Path]:
    """Every call's inbound.wav and outbound.wav, call by call in name order, as the shell's
    glob `*/*.wav` gives them (call.wav left out); the listing is made here, as the shell's."""
    [workspace] = [name for name in os.listdir(mnt.path) if not name.startswith(("by-", "."))]
    calls = sorted(os.listdir(mnt.path / workspace))
    return [mnt.path / workspace / sid / name for sid in calls for name in AUDIO]


def traced(harness: Harness, argv: Sequence[str]) -> list[str]:
    """The lines strace writes of the command's reads (the command's output is dropped)."""
    trace = harness.work.new("strace") / "trace"
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-y",
            "-qq",
            "-s",
            "0",
            "-e",
            "trace=openat,read,pread64,lseek",
            "-o",
            str(trace),
            *argv,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=COMMAND_DEADLINE,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"strace {argv[0]} exited {done.returncode}: {done.stderr[-500:]!r}")
    return trace.read_text(errors="replace").splitlines()


def read_by_file(lines: Sequence[str], root: Path) -> dict[str, int]:
    """Bytes read of each file under `root`: the union of the ranges its reads returned.

    A read at a descriptor's position moves it; pread64 reads at its offset and moves
    nothing; lseek says the new position in its result; openat starts one at 0."""
    prefix = f"{root}/"
    position: dict[tuple[str, str], int] = {}
    ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for line in lines:
        opened = _OPENED.match(line)
        if opened is not None:
            position[(opened[1], opened[2])] = 0
            continue
        call = _SYSCALL.match(line)
        if call is None:
            continue
        pid, name, fd, path, args, result = call.groups()
        key, got = (pid, fd), int(result)
        if name == "lseek" and got >= 0:
            position[key] = got
        elif name in ("read", "pread64") and got > 0:
            start = int(args.rsplit(",", 1)[1]) if name == "pread64" else position.get(key, 0)
            if name == "read":
                position[key] = start + got
            if path.startswith(prefix):
                ranges[path].append((start, start + got))
    return {path: union_size(spans) for path, spans in ranges.items()}


def union_size(spans: list[tuple[int, int]]) -> int:
    """Bytes covered by the ranges, each byte once."""
    total, reach = 0, 0
    for start, end in sorted(spans):
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


def most_over(read: dict[str, int], served: dict[str, int], root: Path) -> list[dict[str, Any]]:
    """The five stored files fetched most beyond what was read of their presented files
    (a stored file's path ends in /CALL_SID/download/NAME; its presented file is
    WORKSPACE/CALL_SID/inbound.wav or outbound.wav)."""
    read_of: dict[tuple[str, str], int] = {}
    for path, count in read.items():
        sid, name = Path(path).relative_to(root).parts[-2:]
        read_of[(sid, name.removesuffix(".wav"))] = count
    over = []
    for stored, count in served.items():
        parts = stored.split("/")
        sid, channel = parts[-3], parts[-1].split(".")[0]
        got = read_of.get((sid, channel), 0)
        over.append({"stored": stored, "fetched": count, "read": got, "over": count - got})
    return sorted(over, key=lambda row: -int(row["over"]))[:5]
