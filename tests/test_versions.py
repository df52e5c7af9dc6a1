"""One version per read: a recording replaced in place on the server (same size, other
bytes, a new ETag and Last-Modified) is never served as a splice of two versions
(issue #19). Each `cat` that exits 0 returns one version whole; a handle that has read
bytes of the old version gets EIO for the rest; an open after the change reads the new
version whole, during a mount and after a remount on the same cache.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

from amigofs.emulator.calls import Recording
from amigofs.emulator.faults import replaced_bytes
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted, public_tempdir
from tests.reliability import presented_bytes, stored_bytes

MIB = 1 << 20


def version_of(emulator: EmulatorProc, recording: Recording, name: str, version: int) -> bytes:
    """What the mount must serve of `name` when the stored file is at `version`."""
    stored = stored_bytes(emulator, recording, name)
    presented = presented_bytes(emulator, recording, name)
    header = presented[: len(presented) - len(stored)]
    return header + replaced_bytes(stored, 0, version)


LONG_CALLS: dict[str, Any] = {
    "workspaces": 1,
    "calls_per_workspace": 3,
    "min_duration": 200.0,
    "max_duration": 200.0,
}


def replaced_after_first_get(emulator: EmulatorProc) -> tuple[Recording, str]:
    """A recording the emulator replaces right after the first ranged GET of it."""
    recording = next(iter(emulator.data.sound()))
    emulator.control(replace_after_get=[recording.call_sid])
    return recording, recording.call_sid


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cat(path: Path) -> tuple[int, bytes]:
    done = subprocess.run(["cat", str(path)], capture_output=True, timeout=120)
    return done.returncode, done.stdout


def test_a_recording_replaced_after_its_first_ranged_get_is_never_served_as_a_splice() -> None:
    with running_emulator(**LONG_CALLS) as emulator:
        recording, sid = replaced_after_first_get(emulator)
        versions = [version_of(emulator, recording, "outbound.wav", v) for v in (0, 1)]
        assert len(versions[0]) > 6 * MIB and versions[0] != versions[1]
        with mounted(emulator.url, emulator.api_key, "--timeout", "10") as mnt:
            path = mnt.path / recording.workspace_id / sid / "outbound.wav"
            fd = os.open(path, os.O_RDONLY)
            try:
                # The first ranged GET: the old version, replaced on the server after it.
                head = os.pread(fd, 4096, 0)
                assert head == versions[0][:4096]
                assert emulator.control()["versions"] == {sid: 1}
                # Far from what was fetched: a GET of the new version, for a handle
                # that has read the old one.
                try:
                    tail = os.pread(fd, 4096, len(versions[0]) - 4096)
                except OSError as exc:
                    assert exc.errno == errno.EIO
                else:
                    raise AssertionError(
                        "a handle that read the old version was served "
                        + ("the new one" if tail == versions[1][-4096:] else "other bytes")
                    )
            finally:
                os.close(fd)
            assert sid in mnt.log()
            # An open from now on reads the new version whole.
            code, data = cat(path)
            assert code == 0 and sha(data) == sha(versions[1])
            inbound = mnt.path / recording.workspace_id / sid / "inbound.wav"
            code, data = cat(inbound)
            assert code == 0
            assert sha(data) == sha(version_of(emulator, recording, "inbound.wav", 1))


def test_every_cat_of_a_recording_replaced_mid_read_returns_one_version_whole() -> None:
    with running_emulator(**LONG_CALLS) as emulator:
        recording, sid = replaced_after_first_get(emulator)
        versions = {sha(version_of(emulator, recording, "outbound.wav", v)): v for v in (0, 1)}
        with mounted(emulator.url, emulator.api_key, "--timeout", "10") as mnt:
            path = mnt.path / recording.workspace_id / sid / "outbound.wav"
            results = [cat(path) for _ in range(3)]
        for code, data in results:
            if code == 0:
                assert sha(data) in versions, f"cat exited 0 with a splice of {len(data)} bytes"
        assert results[-1][0] == 0 and versions[sha(results[-1][1])] == 1


def test_a_recording_replaced_between_two_mounts_is_read_whole_in_its_new_version() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=3, min_duration=30.0, max_duration=30.0
    ) as emulator:
        replaced, kept = list(emulator.data.sound())[:2]
        cache = public_tempdir("amigofs-cache-")
        names = ("inbound.wav", "outbound.wav")

        def read_all(mount: Path) -> dict[tuple[str, str], tuple[int, str]]:
            found = {}
            for recording in (replaced, kept):
                for name in names:
                    code, data = cat(mount / recording.workspace_id / recording.call_sid / name)
                    found[(recording.call_sid, name)] = code, sha(data)
            return found

        def truth(version: int) -> dict[tuple[str, str], tuple[int, str]]:
            return {
                (r.call_sid, name): (
                    0, sha(version_of(emulator, r, name, version if r is replaced else 0))
                )
                for r in (replaced, kept)
                for name in names
            }  # fmt: skip

        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            assert read_all(mnt.path) == truth(0)
        emulator.control(replace=[replaced.call_sid])
        emulator.reset_stats()
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            assert read_all(mnt.path) == truth(1)
        # The unchanged recording's blocks were reused: no byte of it was sent again (its
        # version was asked with If-None-Match: 304), while the replaced one came whole.
        sent = emulator.stats()["download_bytes"]
        for recording, most in ((kept, 0), (replaced, 1 << 40)):
            for name in names:
                stored = (
                    recording.inbound_filename
                    if name == "inbound.wav"
                    else (recording.outbound_filename)
                )
                got = sum(
                    n
                    for p, n in sent.items()
                    if p.endswith(f"{recording.call_sid}/download/{stored}")
                )
                assert got <= most, f"{recording.call_sid}/{name}: {got} bytes fetched again"
