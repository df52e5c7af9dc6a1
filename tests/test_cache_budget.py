"""What the cache directory takes, against --cache-size, and a remount that finds its
blocks without walking the cache: what a user sees with `du -sb`, and the emulator's
count of bytes sent (none for what was cached)."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amigofs.cache import meta
from tests.emulator_proc import running_emulator
from tests.mounting import mounted, public_tempdir, wait_until
from tests.reliability import ThreadResult, presented_bytes
from tests.test_cache_integrity import direct_read, sha256

READ_DEADLINE = 120.0  # for all the reads of one step, on a loaded machine
CACHE_SIZE = 20 << 20
# Calls with both channels' audio, about 500 KB a channel.
DATASET = {
    "workspaces": 1,
    "min_duration": 60.0,
    "max_duration": 70.0,
    "null_sid_calls": 0,
    "no_recording_calls": 0,
}


def du_sb(path: Path, *, leave_out: tuple[str, ...] = ()) -> int:
    """`du -sb` of a directory (apparent sizes, directories included), without the
    top-level entries named in `leave_out`."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    total = int(out.stdout.split()[0])
    for name in leave_out:
        if (path / name).exists():
            part = subprocess.run(
                ["du", "-sb", str(path / name)], capture_output=True, text=True, check=True
            )
            total -= int(part.stdout.split()[0])
    return total


def test_the_cache_dir_stays_within_cache_size_when_filled() -> None:
    # Many calls' metadata.json (a block file and a call's records each), then audio
    # past the cap: the SQLite files and directories beside the blocks count too.
    cache = public_tempdir("amigofs-cache-")
    with running_emulator(calls_per_workspace=400, **DATASET) as emulator:
        recordings = list(emulator.data.recordings())
        with mounted(
            emulator.url, emulator.api_key, "--cache-dir", str(cache), "--cache-size", "20M"
        ) as mnt:
            calls = [mnt.path / r.workspace_id / r.call_sid for r in recordings]

            def read_all(names: list[Path]) -> int:
                with ThreadPoolExecutor(8) as pool:
                    return sum(len(data) for data in pool.map(Path.read_bytes, names))

            metadata = [call / "metadata.json" for call in calls]
            audio = [call / "outbound.wav" for call in calls[:50]]
            assert ThreadResult(lambda: read_all(metadata)).join(READ_DEADLINE) > 0
            filled = ThreadResult(lambda: read_all(audio)).join(READ_DEADLINE)
            assert filled > 1.2 * CACHE_SIZE
            # The records' store counts once it says what it takes (issue 21, its SQLite
            # store); until then its folder is left out of the sum.
            leave_out = () if hasattr(meta.MetaStore, "disk_bytes") else ("meta",)
            used = du_sb(cache, leave_out=leave_out)
            assert used <= CACHE_SIZE, f"du -sb {cache}: {used} bytes, over {CACHE_SIZE}"
            # What was read first is still served right (from the cache or fetched again).
            first = recordings[0]
            want = presented_bytes(emulator, first, "metadata.json")
            assert metadata[0].read_bytes() == want


def test_a_remount_serves_cached_blocks_with_no_byte_fetched_and_no_old_layout_kept() -> None:
    cache = public_tempdir("amigofs-cache-")
    with running_emulator(calls_per_workspace=3, **DATASET) as emulator:
        recordings = list(emulator.data.recordings())
        wanted = {
            Path(r.workspace_id, r.call_sid, name): sha256(presented_bytes(emulator, r, name))
            for r in recordings
            for name in ("outbound.wav", "metadata.json")
        }
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            got = {p: sha256(direct_read(mnt.path / p)) for p in wanted}
            assert got == wanted
        # A tree of the layout before (a directory per call), as an older amigofs left it.
        old = cache / "blocks.v2" / "ws" / "call" / "a.wav.100"
        old.mkdir(parents=True, mode=0o700)
        (old / "0").write_bytes(b"\0" * 200)
        emulator.reset_stats()
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            got = ThreadResult(lambda: {p: sha256(direct_read(mnt.path / p)) for p in wanted}).join(
                READ_DEADLINE
            )
            assert got == wanted
            stats = emulator.stats()
            assert stats["audio_bytes"] == 0 and sum(stats["download_bytes"].values()) == 0
            wait_until(
                lambda: not any(name.startswith(("blocks.v2", ".removing.")) for name in
                                os.listdir(cache)),
                30, "the older layout to be removed",
            )  # fmt: skip
