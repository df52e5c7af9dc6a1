"""The cache directory under a running mount: removed by a cleaner (`rm -rf ~/.cache`)
while mounted, and kept on tmpfs, whose reads refuse RWF_NOWAIT, across a remount.
What a user sees: the server's bytes (sha256), and no download repeated.
(The same without a mount: tests/unit/test_cache_dir.py.)
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from amigofs.emulator.data import Recording
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import amigofs_mount, mounted, public_tempdir, wait_until
from tests.reliability import PRESENTED, ThreadResult, presented_bytes, request_log
from tests.test_cache_integrity import direct_read, sha256, tmpfs

T = TypeVar("T")

READ_DEADLINE = 60.0  # for all the reads of one step, on a loaded machine
DATASET = {
    "workspaces": 1,
    "calls_per_workspace": 4,
    "min_duration": 40.0,  # ~320 KB a channel: two blocks and more
    "max_duration": 70.0,
    "null_sid_calls": 0,
    "no_recording_calls": 0,
}


def within(deadline: float, step: Callable[[], T]) -> T:
    """`step`, failing the test if it takes longer than `deadline` seconds."""
    result: T = ThreadResult(step).join(deadline)
    return result


def truths(emulator: EmulatorProc, recordings: list[Recording]) -> dict[str, str]:
    """sha256 of each file as the mount must present it, by its path in the mount."""
    return {
        f"{r.workspace_id}/{r.call_sid}/{name}": sha256(presented_bytes(emulator, r, name))
        for r in recordings
        for name in PRESENTED
    }


def read_all(mount: Path, wanted: dict[str, str]) -> dict[str, str]:
    """sha256 of each file, read with O_DIRECT: from the mount, not the page cache."""
    return {path: sha256(direct_read(mount / path)) for path in wanted}


@pytest.mark.parametrize("reads_before", [True, False], ids=["after-reads", "before-a-listing"])
def test_reads_go_on_after_the_cache_dir_is_removed_while_mounted(reads_before: bool) -> None:
    with running_emulator(**DATASET) as emulator:
        recordings = list(emulator.data.recordings())
        read_first = truths(emulator, recordings[:2])
        read_after = truths(emulator, recordings[2:])
        with mounted(emulator.url, emulator.api_key) as mnt:
            assert mnt.cache_dir is not None
            if reads_before:
                assert within(READ_DEADLINE, lambda: read_all(mnt.path, read_first)) == read_first
            shutil.rmtree(mnt.cache_dir)  # a cleaner's rm -rf, the mount still up
            workspace = mnt.path / recordings[0].workspace_id
            listed = within(READ_DEADLINE, lambda: sorted(os.listdir(workspace)))
            assert listed == sorted(r.call_sid for r in recordings)
            # Files never read: fetched into a cache directory made again.
            assert within(READ_DEADLINE, lambda: read_all(mnt.path, read_after)) == read_after
            # Files read before: their blocks went with the directory, fetched again.
            assert within(READ_DEADLINE, lambda: read_all(mnt.path, read_first)) == read_first
            assert (mnt.cache_dir.stat().st_mode & 0o777) == 0o700
            assert any(p.is_file() for p in (mnt.cache_dir / "blocks.v3").glob("??/*"))
            log = mnt.log()
            assert "Traceback" not in log and "was removed while mounted" in log


def test_a_cache_dir_removed_under_reads_in_flight() -> None:
    with running_emulator(**{**DATASET, "calls_per_workspace": 8}) as emulator:
        wanted = truths(emulator, list(emulator.data.recordings()))
        done: list[str] = []
        with mounted(emulator.url, emulator.api_key, "--cache-size", "16M") as mnt:
            assert mnt.cache_dir is not None
            cache_dir = mnt.cache_dir

            def reader(seed: int) -> dict[str, str]:
                order = sorted(wanted)
                random.Random(seed).shuffle(order)
                got = {}
                for path in order:
                    got[path] = sha256(direct_read(mnt.path / path))
                    done.append(path)
                return got

            readers = [ThreadResult(lambda seed=seed: reader(seed)) for seed in range(4)]
            # A cleaner, twice, while the readers are at it.
            for reads in (4, 2 * len(wanted)):
                wait_until(
                    lambda reads=reads: len(done) >= reads or all(r.done() for r in readers),
                    READ_DEADLINE,
                    f"{reads} reads",
                )
                shutil.rmtree(cache_dir, ignore_errors=True)
            for result in readers:
                try:
                    assert result.join(READ_DEADLINE) == wanted
                except OSError as exc:
                    raise AssertionError(f"{exc}; the mount's log:\n{mnt.log_tail()}") from exc
            assert "Traceback" not in mnt.log()


def test_a_cache_on_tmpfs_is_reused_after_a_remount() -> None:
    with running_emulator(**DATASET) as emulator, tmpfs("64M") as disk:
        wanted = truths(emulator, list(emulator.data.recordings()))
        mountpoint = public_tempdir("amigofs-mnt-")
        log_path = disk.parent / f"{disk.name}.log"
        try:
            for remount in (False, True):
                with amigofs_mount(
                    emulator.url, emulator.api_key, mountpoint, disk / "cache", log_path
                ) as mnt:
                    assert within(READ_DEADLINE, lambda: read_all(mnt.path, wanted)) == wanted
                    if remount:
                        downloads = [
                            e for e in request_log(emulator)
                            if e["op"] == "download-recording-file"
                        ]  # fmt: skip
                        # Each file's version checked once (304: unchanged, no byte), its
                        # blocks served from the tmpfs, none fetched again.
                        assert [e["status"] for e in downloads] == [304] * len(downloads)
                        assert len(downloads) <= len(wanted)
                        assert emulator.stats()["audio_bytes"] == 0
                    assert mnt.unmount() == 0
                emulator.reset_stats()
            log = log_path.read_text(errors="replace")
            # No block of the first mount dropped as unreadable ("cannot be read
            # (Operation not supported); fetching it again").
            assert "fetching it again" not in log and "cannot be read" not in log
        finally:
            with contextlib.suppress(OSError):
                mountpoint.rmdir()
            with contextlib.suppress(OSError):
                os.unlink(log_path)
