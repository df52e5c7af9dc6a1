"""The server's length is the truth: a stored file longer than its metadata says is never
served cut to the metadata's length, however the server frames its answer (issue #19).

The emulator's metadata understates a call's audio sizes (understate_sizes) while its
downloads say their length in Content-Range (length), say "*" (unknown_total), or say
nothing and ignore Range (chunked: 200, the whole file). `cat` must never exit 0.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from tests.emulator_proc import running_emulator
from tests.mounting import mounted
from tests.reliability import presented_bytes, read_until_error, stored_bytes

LONGER_BY = 5000
TO_ZERO = 1 << 40  # the metadata says 0


@pytest.mark.parametrize("framing", ["length", "chunked", "unknown_total"])
def test_a_file_longer_than_its_metadata_is_never_served_cut(framing: str) -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=4, min_duration=6.0, max_duration=8.0
    ) as emulator:
        longer, zero, sound = list(emulator.data.sound())[:3]
        emulator.control(
            download_framing=framing,
            understate_sizes={longer.call_sid: LONGER_BY, zero.call_sid: TO_ZERO},
        )
        with mounted(emulator.url, emulator.api_key, "--timeout", "10") as mnt:
            for recording in (longer, zero):
                call_dir = mnt.path / recording.workspace_id / recording.call_sid
                for name in ("inbound.wav", "outbound.wav", "call.wav"):
                    path = call_dir / name
                    if recording is zero:
                        # The server holds bytes of it: not shown, rather than shown empty.
                        assert name not in os.listdir(call_dir)
                        assert subprocess.run(["cat", str(path)], timeout=60).returncode != 0
                        continue
                    cat = subprocess.run(["cat", str(path)], capture_output=True, timeout=60)
                    assert cat.returncode != 0, (
                        f"{framing}: cat of {recording.call_sid}/{name} exited 0 with "
                        f"{len(cat.stdout)} bytes"
                    )
                    got, error = read_until_error(path)
                    assert error == errno.EIO, f"{framing} {name}: {len(got)} bytes, then EOF"
                    if name != "call.wav":
                        # As far as any read gets, the stored bytes are the server's (a
                        # raw file's header is made from the understated metadata).
                        stored = stored_bytes(emulator, recording, name)
                        header = len(presented_bytes(emulator, recording, name)) - len(stored)
                        assert got[header:] == stored[: max(0, len(got) - header)]
                        assert len(got) < header + len(stored)
                # The log names the call; once a file, however often it is read.
                assert recording.call_sid in mnt.log()
                if recording is longer:
                    for name in ("inbound.wav", "outbound.wav", "call.wav"):
                        said = [
                            line
                            for line in mnt.log().splitlines()
                            if f"{recording.call_sid}/{name}" in line and "metadata says" in line
                        ]
                        assert len(said) == 1, f"{framing} {name}: {said}"
            # Calls whose metadata tells the truth are served whole, whatever the framing.
            path = mnt.path / sound.workspace_id / sound.call_sid / "inbound.wav"
            assert path.read_bytes() == presented_bytes(emulator, sound, "inbound.wav")
            assert mnt.process.poll() is None
