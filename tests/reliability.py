"""Helpers shared by the reliability suites (test_faults, test_hostile, test_secrets,
test_load): ground truth of what a mount must present, and reading until EOF or an error."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amigofs.daemon.control import read_stats
from amigofs.emulator.data import METADATA_FILENAME, Recording
from amigofs.fs.wav import audio_layout
from tests.emulator_proc import EmulatorProc
from tests.mounting import Mount, wait_until

PRESENTED = ("inbound.wav", "outbound.wav", METADATA_FILENAME)
# What a call directory with both channels lists: those, and the stereo view of both.
LISTED = (*PRESENTED, "call.wav")


def errno_of(call: Callable[[], object]) -> int:
    with pytest.raises(OSError) as failure:
        call()
    assert failure.value.errno is not None
    return failure.value.errno


def stored_name(recording: Recording, presented: str) -> str:
    return {
        "inbound.wav": recording.inbound_filename,
        "outbound.wav": recording.outbound_filename,
        METADATA_FILENAME: METADATA_FILENAME,
    }[presented]


def stored_bytes(emulator: EmulatorProc, recording: Recording, presented: str) -> bytes:
    """The stored file exactly as the emulator holds it (whatever the metadata says)."""
    return emulator.data.read_range(
        recording.workspace_id, recording.call_sid, stored_name(recording, presented), 0, 1 << 62
    )


def stored_size(recording: Recording, presented: str) -> int:
    """The stored audio file's size, as the recording's metadata says."""
    return int(str(recording.metadata[f"{presented.removesuffix('.wav')}_size_bytes"]))


def fetched_bytes(emulator: EmulatorProc, recording: Recording, presented: str) -> int:
    """Bytes the emulator has sent of the call's stored file."""
    suffix = f"/{recording.call_sid}/download/{stored_name(recording, presented)}"
    served: dict[str, int] = emulator.stats()["download_bytes"]
    return sum(count for path, count in served.items() if path.endswith(suffix))


def downloads_landed(mnt: Mount, deadline: float = 60.0) -> None:
    """Waits until the mount has no download in flight (nothing more is coming)."""
    wait_until(lambda: read_stats(mnt.path)["bytes_in_flight"] == 0, deadline, "downloads to land")


def presented_bytes(emulator: EmulatorProc, recording: Recording, presented: str) -> bytes:
    """What the mount must serve for a file: a stored WAV or metadata.json as stored; a raw
    stored file behind the RIFF header computed from the metadata (README "What the files are")."""
    stored = stored_bytes(emulator, recording, presented)
    if presented == METADATA_FILENAME or recording.storage == "wav":
        return stored
    channel = presented.removesuffix(".wav")
    metadata = recording.metadata
    layout = audio_layout(
        stored_name(recording, presented),
        str(metadata[f"{channel}_format"]),
        int(str(metadata[f"{channel}_sample_rate"])),
        int(str(metadata[f"{channel}_size_bytes"])),
    )
    return layout.header + stored


def read_until_error(path: Path, chunk: int = 64 * 1024) -> tuple[bytes, int | None]:
    """Reads a file with read(2) until EOF or an error: (bytes read, errno or None at EOF)."""
    got = bytearray()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            try:
                data = os.read(fd, chunk)
            except OSError as exc:
                return bytes(got), exc.errno
            if not data:
                return bytes(got), None
            got += data
    finally:
        os.close(fd)


class ThreadResult:
    """Runs a function in a thread; join() gives its result or raises its exception."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._result = function()
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, deadline: float) -> Any:
        self._thread.join(deadline)
        if self._thread.is_alive():
            raise TimeoutError(f"the thread did not finish within {deadline} s")
        if self._error is not None:
            raise self._error
        return self._result


def proc_status_mib(pid: int, field: str) -> float:
    """A size field of /proc/PID/status in MiB (VmRSS: now; VmHWM: the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def request_log(emulator: EmulatorProc) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = emulator.stats()["log"]
    return log
