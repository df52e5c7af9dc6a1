"""A remount does no work at start that grows with what is cached (issue 21: a remount
with a million calls cached is live within 2 s). What opening reads is counted in
tests/unit/test_cache_open_bounded.py; here, the one start-up job whose size is the
cache's own: a cache over its (lowered) --cache-size is brought under it while the
mount serves, after it is mounted, and what it still holds is served right."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.emulator_proc import running_emulator
from tests.mounting import mounted, public_tempdir, wait_until
from tests.reliability import presented_bytes
from tests.test_cache_budget import DATASET, du_sb
from tests.test_cache_integrity import sha256

DEADLINE = 120.0  # for the reads of one step, and the eviction, on a loaded machine
FILLED = "64M"
LOWERED = 16 << 20  # the least --cache-size there is
CALLS = 24  # about 2 MB of outbound audio each, read whole: ~46 MB cached


def test_a_cache_over_its_lowered_size_is_evicted_after_the_remount_is_live() -> None:
    cache = public_tempdir("amigofs-cache-")
    with running_emulator(calls_per_workspace=CALLS, **DATASET) as emulator:
        recordings = list(emulator.data.recordings())
        with mounted(
            emulator.url, emulator.api_key, "--cache-dir", str(cache), "--cache-size", FILLED
        ) as mnt:
            files = [mnt.path / r.workspace_id / r.call_sid / "outbound.wav" for r in recordings]
            with ThreadPoolExecutor(8) as pool:
                assert sum(pool.map(lambda f: len(f.read_bytes()), files)) > 2 * LOWERED
        filled = du_sb(cache)
        assert filled > 2 * LOWERED
        with mounted(
            emulator.url, emulator.api_key, "--cache-dir", str(cache),
            "--cache-size", str(LOWERED),
        ) as mnt:  # fmt: skip
            wait_until(lambda: "within its budget" in mnt.log(), DEADLINE, "the eviction")
            log = mnt.log()
            # Mounted first, evicted after: not a start that waits on the eviction.
            assert log.index("mounted ") < log.index("within its budget"), log
            # Evicted down to what it counts within LOWERED (du also sees block files a
            # mount counts once a read finds them).
            assert du_sb(cache) < filled / 2
            last = recordings[-1]
            want = sha256(presented_bytes(emulator, last, "outbound.wav"))
            got = Path(mnt.path / last.workspace_id / last.call_sid / "outbound.wav")
            assert sha256(got.read_bytes()) == want
