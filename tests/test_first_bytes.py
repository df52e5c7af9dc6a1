"""First bytes in one round trip where the links are known (issue 22): a walk that reads
the calls it visits (`head` or `file` over a workspace's files, in listing order) has the
records loaded ahead of it carry their download links, so the first read of a call loaded
ahead costs its download alone; counted in the emulator's request log."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted, wait_until
from tests.reliability import downloads_landed, presented_bytes, request_log

HEAD = 64 * 1024
DEADLINE = 30.0


def _of_call(log: list[dict[str, Any]], call_sid: str) -> Counter[str]:
    return Counter(str(e["op"]) for e in log if f"/{call_sid}/" in str(e.get("path", "")))


def _loaded(emu: EmulatorProc, call_sid: str) -> bool:
    return _of_call(request_log(emu), call_sid)["get-recording-metadata"] > 0


def test_the_first_64_kib_of_a_call_loaded_ahead_of_a_reading_walk_is_one_download() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=8) as emu,
        mounted(emu.url, emu.api_key) as mnt,
    ):
        recordings = {r.call_sid: r for r in emu.data.recordings()}
        workspace_id = next(iter(recordings.values())).workspace_id
        workspace = mnt.path / workspace_id
        listed = os.listdir(workspace)  # listing order: the walk's
        assert sorted(listed) == sorted(recordings)

        def head(call_sid: str) -> None:
            fd = os.open(workspace / call_sid / "inbound.wav", os.O_RDONLY)
            try:
                got = os.pread(fd, HEAD, 0)
            finally:
                os.close(fd)
            assert got == presented_bytes(emu, recordings[call_sid], "inbound.wav")[:HEAD]

        # Three calls read in listing order: a walk whose reader reads what it visits.
        for call_sid in listed[:3]:
            head(call_sid)
        target = listed[3]
        wait_until(lambda: _loaded(emu, target), DEADLINE, f"{target} to be loaded ahead")
        downloads_landed(mnt)
        before = len(request_log(emu))
        head(target)
        after = request_log(emu)[before:]
        # Its links came with its metadata, ahead: no links request after the open, and
        # the first bytes are one download.
        assert _of_call(after, target) == {"download-recording-file": 1}, after
