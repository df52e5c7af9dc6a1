"""Fetching what programs read (issue 22): a sniff of a file's start and end, a peek
at a small file and one large read then a seek fetch the ranges the kernel asks for,
not whole blocks, whole small files or a window ahead; counted in the emulator's
own bytes and ranges.

What the kernel asks is a little more than a program reads: its first readahead is
twice a small first read (128 KiB for 64 KiB), a read is made of whole pages, and one
large read gets the kernel's own readahead window (1 MiB) past it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from amigofs.emulator.data import Recording
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted
from tests.reliability import (
    downloads_landed,
    fetched_bytes,
    presented_bytes,
    request_log,
    stored_name,
    stored_size,
)

KiB, MiB = 1 << 10, 1 << 20
PAGE = 4096
DEADLINE = 60.0
AUDIO = ("inbound.wav", "outbound.wav")
SNIFF = 64 * KiB  # what `file -P bytes=65536` reads at a file's start and at its end
LARGE = 7 * MiB  # what plain `file` reads at a file's start and at its end
KERNEL_READAHEAD = 1 * MiB  # the mount's default


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    # Ten-minute calls (4.8 MB inbound, 19.2 MB outbound) and calls of about a minute
    # (files of about 1 MB).
    with running_emulator(
        workspaces=1,
        calls_per_workspace=8,
        long_calls=4,
        long_duration=600.0,
        min_duration=60.0,
        max_duration=70.0,
    ) as emu:
        yield emu


def _path_of(recording: Recording, presented: str) -> str:
    name = stored_name(recording, presented)
    return f"/v1/{recording.workspace_id}/recordings/{recording.call_sid}/download/{name}"


def _ranges(emulator: EmulatorProc, recording: Recording, presented: str) -> list[range]:
    """The ranges of the stored file the emulator was asked for, in stored offsets."""
    path, size = _path_of(recording, presented), stored_size(recording, presented)
    out = []
    for entry in request_log(emulator):
        if entry.get("path") != path:
            continue
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", entry.get("range") or "")
        if match is None:
            out.append(range(0, size))
            continue
        last = int(match[2]) if match[2] else size - 1
        out.append(range(int(match[1]), last + 1))
    return out


def _calls(emulator: EmulatorProc, long: bool) -> list[Recording]:
    """The ten-minute calls, or the short ones, in name order."""
    return sorted(
        (
            r
            for r in emulator.data.recordings()
            if (stored_size(r, "outbound.wav") > 4 * MiB) == long
        ),
        key=lambda r: r.call_sid,
    )


def test_a_sniff_of_start_and_end_fetches_what_the_kernel_asks_and_no_other_call(
    emulator: EmulatorProc,
) -> None:
    calls = _calls(emulator, long=True)
    with mounted(emulator.url, emulator.api_key) as mnt:
        workspace = mnt.path / calls[0].workspace_id
        assert len(os.listdir(workspace)) == len(list(emulator.data.recordings()))
        emulator.reset_stats()
        read = 0
        # As `file -P bytes=65536` over the calls, in listing order: a walk, were it
        # whole reads; a sniff starts none.
        for recording in calls:
            for name in AUDIO:
                expected = presented_bytes(emulator, recording, name)
                size = len(expected)
                fd = os.open(workspace / recording.call_sid / name, os.O_RDONLY)
                try:
                    assert os.pread(fd, SNIFF, 0) == expected[:SNIFF]
                    assert os.pread(fd, SNIFF, size - SNIFF) == expected[size - SNIFF :]
                finally:
                    os.close(fd)
                read += 2 * SNIFF
        downloads_landed(mnt)
        fetched = 0
        for recording in calls:
            for name in AUDIO:
                header = len(presented_bytes(emulator, recording, name)) - stored_size(
                    recording, name
                )
                size = stored_size(recording, name)
                # The kernel's first readahead at the start, the end's pages.
                start = range(0, 2 * SNIFF - header)
                end_from = (size + header - SNIFF) // PAGE * PAGE - header
                for asked in _ranges(emulator, recording, name):
                    assert (asked.start >= start.start and asked.stop <= start.stop) or (
                        asked.start >= end_from and asked.stop <= size
                    ), (recording.call_sid, name, asked)
                fetched += fetched_bytes(emulator, recording, name)
        others = [r for r in emulator.data.recordings() if r not in calls]
        assert [fetched_bytes(emulator, r, n) for r in others for n in AUDIO] == [0] * 2 * len(
            others
        )
    # At most 1.5 times what was read, but for the pages at each end (what the kernel
    # asks at the end is whole pages: up to one more).
    assert fetched <= 1.5 * read + len(calls) * 2 * PAGE, (fetched, read)


def test_a_small_files_first_4_kib_fetches_at_most_128_kib(emulator: EmulatorProc) -> None:
    short = _calls(emulator, long=False)
    with mounted(emulator.url, emulator.api_key) as mnt:
        emulator.reset_stats()
        looked = 0
        for recording in short:
            for name in AUDIO:
                if not 512 * KiB <= stored_size(recording, name) <= 2 * MiB:
                    continue
                path = mnt.path / recording.workspace_id / recording.call_sid / name
                fd = os.open(path, os.O_RDONLY)
                try:
                    assert (
                        os.pread(fd, 4096, 0) == presented_bytes(emulator, recording, name)[:4096]
                    )
                finally:
                    os.close(fd)
                looked += 1
        assert looked >= 4
        downloads_landed(mnt)
        for recording in short:
            for name in AUDIO:
                assert fetched_bytes(emulator, recording, name) <= 128 * KiB, (
                    recording.call_sid,
                    name,
                )


def test_one_large_read_then_a_seek_to_the_end_opens_no_window(emulator: EmulatorProc) -> None:
    recording = _calls(emulator, long=True)[-1]
    name = "outbound.wav"
    expected = presented_bytes(emulator, recording, name)
    size = len(expected)
    header = size - stored_size(recording, name)
    assert size > 2 * LARGE + 2 * KERNEL_READAHEAD
    with mounted(emulator.url, emulator.api_key) as mnt:
        path = mnt.path / recording.workspace_id / recording.call_sid / name
        path.stat()
        emulator.reset_stats()
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(fd, LARGE, 0) == expected[:LARGE]
            assert os.pread(fd, LARGE, size - LARGE) == expected[size - LARGE :]
        finally:
            os.close(fd)
        downloads_landed(mnt)
        # The read, the kernel's window past it (its last request may reach a block
        # further), and the end: nothing between.
        reach = LARGE + KERNEL_READAHEAD + 256 * KiB
        end_from = (size - LARGE) // PAGE * PAGE - header - 256 * KiB
        for asked in _ranges(emulator, recording, name):
            assert asked.stop <= reach or asked.start >= end_from, asked
        assert fetched_bytes(emulator, recording, name) <= 2 * LARGE + KERNEL_READAHEAD + 512 * KiB
