"""The mount's memory does not grow with the calls looked up (issue 21, "bounded memory"):
after a listing of 100,000 calls, a lookup of each of them and the records of thousands
(a `find` with sizes loads each call's record), the mount's resident memory is back
within 10 MB of where it was after the listing once the kernel forgets its inodes
(`echo 2 > /proc/sys/vm/drop_caches`: a FORGET for each). What is needed again is on
disk (the call index, the kept records), not in memory.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from amigofs.emulator.data import METADATA_FILENAME
from tests.emulator_proc import running_emulator
from tests.mounting import mounted, wait_until
from tests.reliability import proc_status_mib

CALLS = 100_000
# Calls whose records are loaded (one metadata request each): more than the records the
# mount kept in memory before (4096, some 5 KB each), so that keeping them shows; all
# 100,000 would take minutes here (a few ms of the mount's CPU each).
RECORDS = 5_000
SLACK_MIB = 10.0
# Threads that look up at once: the mount answers lookups of several calls together.
LOOKERS = 4
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
FORGET_DEADLINE = 30.0
LISTING_DEADLINE = 120


def _rss_mib(pid: int) -> float:
    return proc_status_mib(pid, "VmRSS")


def _kernel_forgets() -> None:
    """The kernel drops its dentries and inodes: FORGET for every inode of the mount."""
    subprocess.run(["sync"], check=True, timeout=60)
    DROP_CACHES.write_text("2\n")


@pytest.mark.skipif(
    not os.access(DROP_CACHES, os.W_OK), reason="needs root: echo 2 > /proc/sys/vm/drop_caches"
)
def test_memory_after_looking_up_100000_calls_is_back_once_the_kernel_forgets() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=CALLS, max_duration=30.0) as emu,
        mounted(emu.url, emu.api_key, "--listing-ttl", "3600") as mnt,
    ):
        workspace = mnt.path / emu.data.workspaces[0].id
        listed = subprocess.run(
            ["ls", "-f", str(workspace)],
            capture_output=True, text=True, check=True, timeout=LISTING_DEADLINE,
        )  # fmt: skip
        names = [name for name in listed.stdout.split() if name not in (".", "..")]
        assert len(names) == CALLS
        _kernel_forgets()
        baseline = _rss_mib(mnt.process.pid)

        with ThreadPoolExecutor(LOOKERS) as pool:
            # Each call looked up (its directory's attributes: from the index)...
            for stat in pool.map(lambda name: os.stat(workspace / name), names):
                assert stat.st_nlink == 2
            # ...and thousands of records loaded (metadata.json's size is the record's).
            for size in pool.map(
                lambda name: os.stat(workspace / name / METADATA_FILENAME).st_size,
                names[:RECORDS],
            ):
                assert size > 0
        looked_up = _rss_mib(mnt.process.pid)

        _kernel_forgets()
        try:
            wait_until(
                lambda: _rss_mib(mnt.process.pid) - baseline <= SLACK_MIB,
                FORGET_DEADLINE,
                "the mount's memory back within 10 MB of where it was after the listing",
            )
        except TimeoutError as exc:
            now = _rss_mib(mnt.process.pid)
            raise AssertionError(
                f"RSS {baseline:.1f} MiB after the listing, {looked_up:.1f} after the lookups, "
                f"{now:.1f} once the kernel forgot"
            ) from exc
