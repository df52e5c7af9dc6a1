"""df on the mount says something true; the emulator stays on loopback unless told."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.emulator_proc import running_emulator
from tests.mounting import mounted


def test_df_shows_the_cache_size_and_what_it_holds() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=2, min_duration=60.0) as emulator:
        recording = next(emulator.data.recordings())
        with mounted(emulator.url, emulator.api_key, "--cache-size", "64M") as mnt:
            empty = os.statvfs(mnt.path)
            assert empty.f_blocks * empty.f_frsize == 64 << 20
            # Nothing read yet: only the cache's own files (its indexes, its folders).
            assert (empty.f_blocks - empty.f_bfree) * empty.f_frsize < 1 << 20
            (mnt.path / recording.workspace_id / recording.call_sid / "outbound.wav").read_bytes()
            used = os.statvfs(mnt.path)
            held = (used.f_blocks - used.f_bfree) * used.f_frsize
            assert held >= emulator.stats()["audio_bytes"] > 0
            df = subprocess.run(["df", "-B1", str(mnt.path)], capture_output=True, text=True,
                                timeout=30)  # fmt: skip
            assert df.returncode == 0 and str(64 << 20) in df.stdout, df.stdout


def test_the_emulator_refuses_a_public_address_unless_told() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "amigofs", "emulator", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        env={**os.environ, "AMIGO_API_KEY": "k"},
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--public" in lines[0], result.stderr
