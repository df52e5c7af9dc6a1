"""Plain `file` over a workspace (issue 22): what it fetches is what it reads, counted in
the emulator's own bytes and ranges.

`file` reads a file's first 7 MiB and its last 7 MiB (its `bytes` parameter, which
`file --help` shows): the short calls' files whole, one after the other in name order,
which is what a walk of whole reads looks like; the long calls' files only at their ends.
Walk prefetch fetched the long calls ahead of such a walk whole, many times what `file`
then read of them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from amigofs.emulator.data import Recording
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted
from tests.reliability import (
    downloads_landed,
    fetched_bytes,
    request_log,
    stored_name,
    stored_size,
)

KiB, MiB = 1 << 10, 1 << 20
DEADLINE = 60.0
AUDIO = ("inbound.wav", "outbound.wav")
KERNEL_READAHEAD = 1 * MiB  # the mount's default: the kernel asks this much past a read
BLOCK = 256 * KiB  # a fetch past a read may reach the end of its block
FILE = shutil.which("file")

pytestmark = pytest.mark.skipif(FILE is None, reason="file(1) is not installed")


def _file_reads() -> int:
    """How much `file` reads at a file's start, and at its end (its `bytes` parameter)."""
    assert FILE is not None
    shown = subprocess.run([FILE, "--help"], capture_output=True, text=True, check=False)
    match = re.search(r"^\s*bytes\s+(\d+)\s", shown.stdout, re.MULTILINE)
    assert match is not None, shown.stdout
    return int(match[1])


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    # Ten calls: in name order five short ones (5 s to 2 min: files of 1 to 4 MB), a
    # half-hour call (14.4 MB inbound, 57.6 MB outbound), three short ones and another
    # half-hour call.
    with running_emulator(
        workspaces=1, calls_per_workspace=10, long_calls=2, long_duration=1800.0
    ) as emu:
        yield emu


def _fetched_between(
    emulator: EmulatorProc, recording: Recording, name: str, start: int, stop: int
) -> list[tuple[int, int]]:
    """The ranges of the call's stored file the emulator was asked for that reach into
    [start, stop) (stored offsets)."""
    suffix = f"/{recording.call_sid}/download/{stored_name(recording, name)}"
    asked = []
    for entry in request_log(emulator):
        if not str(entry.get("path")).endswith(suffix):
            continue
        first, _, last = str(entry.get("range") or "bytes=0-").removeprefix("bytes=").partition("-")
        end = int(last) + 1 if last else stored_size(recording, name)
        if int(first) < stop and end > start:
            asked.append((int(first), end))
    return asked


def test_plain_file_over_a_workspace_fetches_what_it_reads_and_no_middle_of_a_long_call(
    emulator: EmulatorProc,
) -> None:
    reads = _file_reads()
    recordings = sorted(emulator.data.recordings(), key=lambda r: r.call_sid)
    long = [r for r in recordings if stored_size(r, "outbound.wav") > 2 * reads + 2 * MiB]
    # Two short calls at least before a long one: a walk of whole reads when `file` gets there.
    first_long = recordings.index(long[0])
    assert len(long) == 2 and first_long >= 2, [r.call_sid for r in long]
    with mounted(emulator.url, emulator.api_key) as mnt:
        workspace = mnt.path / recordings[0].workspace_id
        assert sorted(os.listdir(workspace)) == [r.call_sid for r in recordings]
        # As `file */inbound.wav */outbound.wav` would, but call by call (`*/*.wav`).
        paths = [workspace / r.call_sid / name for r in recordings for name in AUDIO]
        sizes = [path.stat().st_size for path in paths]
        emulator.reset_stats()
        done = subprocess.run(
            [FILE or "file", *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == len(paths)
        downloads_landed(mnt)
    # What `file` read of each file: its start and its end, once each byte.
    read = sum(min(size, 2 * reads) for size in sizes)
    fetched = sum(fetched_bytes(emulator, r, name) for r in recordings for name in AUDIO)
    assert fetched <= 1.2 * read, (fetched, read)
    for recording in long:
        size = stored_size(recording, "outbound.wav")
        # The start `file` read, the kernel's window past it and the block that reaches
        # into; the end it read: nothing between (no walk fetched the call whole).
        middle = (reads + KERNEL_READAHEAD + BLOCK, size - reads - BLOCK)
        assert _fetched_between(emulator, recording, "outbound.wav", *middle) == [], (
            recording.call_sid
        )
