"""The fetch worker as the real process it is, against the emulator: killed mid-job it is
replaced and the job completes; a job whose waiter leaves still announces every block it stored.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from amigofs.api.client import ClientConfig, PlatformClient, RetryPolicy
from amigofs.api.models import DownloadPath
from amigofs.api.secret import ApiKey
from amigofs.cache.block_format import FileKey
from amigofs.cache.seams import FetchJob
from amigofs.cache.worker import FetchWorker, WorkerConfig
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.unit.test_block_store_disk import BLOCK, open_disk


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(
        workspaces=1, calls_per_workspace=1, min_duration=200.0, max_duration=210.0,
        null_sid_calls=0, no_recording_calls=0, bandwidth=2_000_000,
    ) as emu:  # fmt: skip
        yield emu


def worker_for(emulator: EmulatorProc, root: Path) -> FetchWorker:
    return FetchWorker(
        WorkerConfig(base_url=emulator.url, max_connections=4, connect_timeout=5.0,
                     read_timeout=5.0, deadline=30.0, cache_dir=str(root)),
        ApiKey(emulator.api_key),
    )  # fmt: skip


async def outbound_path(emulator: EmulatorProc) -> tuple[DownloadPath, int, bytes]:
    recording = next(iter(emulator.data.recordings()))
    config = ClientConfig(base_url=emulator.url, retry=RetryPolicy(deadline=10.0))
    async with PlatformClient(config, ApiKey(emulator.api_key)) as client:
        urls = await client.recording_urls(recording.workspace_id, recording.call_sid)
    assert urls.outbound is not None
    stored = emulator.data.read_range(
        recording.workspace_id, recording.call_sid, urls.outbound.filename, 0, 1 << 62
    )
    return urls.outbound, len(stored), stored


async def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes(
    tmp_path: Path, emulator: EmulatorProc
) -> None:
    path, size, stored = await outbound_path(emulator)
    key = FileKey("ws", "call", path.filename, size)
    disk = open_disk(tmp_path, blocks=1 << 12)
    worker = worker_for(emulator, tmp_path)
    landed: dict[int, tuple[int, int]] = {}
    end = min(size, 40 * BLOCK)
    try:
        async with trio.open_nursery() as nursery:
            await worker.start(nursery)
            first = worker._process
            assert first is not None

            def on_blocks(blocks: list[tuple[int, int, int]]) -> None:
                for index, length, crc in blocks:
                    landed[index] = (length, crc)
                    disk.added(key, index, length, crc)
                if len(landed) == 3 and first.poll() is None:
                    os.kill(first.pid, signal.SIGKILL)

            job = FetchJob(path.target, path.filename, 0, end, size, BLOCK, key.relative_dir)
            with trio.fail_after(60):
                await worker.fetch(job, nursery=nursery, on_blocks=on_blocks)
            assert first.poll() is not None, "the kill did not land mid-job"
            assert worker.restarts == 1
            replacement = worker._process
            assert replacement is not None and replacement is not first
            assert replacement.poll() is None, "the restart reaped the replacement"
            assert sorted(landed) == list(range(end // BLOCK))
            # The blocks' headers name the version the first answer said (its ETag).
            assert job.version.known and job.version.validator is not None
            versioned = dataclasses.replace(key, validator=job.version.validator)
            assert disk.copy(versioned, 0, end) == stored[:end]
            await worker.aclose()
            nursery.cancel_scope.cancel()
    finally:
        disk.close()


async def test_a_job_whose_waiter_leaves_still_announces_every_block_it_stored(
    tmp_path: Path, emulator: EmulatorProc
) -> None:
    path, size, _stored = await outbound_path(emulator)
    key = FileKey("ws", "call", path.filename, size)
    worker = worker_for(emulator, tmp_path)
    disk = open_disk(tmp_path, blocks=1 << 12)  # makes the cache directory
    landed: set[int] = set()
    try:
        async with trio.open_nursery() as nursery:
            await worker.start(nursery)
            some = trio.Event()

            def on_blocks(blocks: list[tuple[int, int, int]]) -> None:
                landed.update(index for index, _n, _c in blocks)
                if len(landed) >= 2:
                    some.set()

            async def waiter(cancel_scope: trio.CancelScope) -> None:
                with cancel_scope:
                    await worker.fetch(FetchJob(path.target, path.filename, 0,
                                                min(size, 60 * BLOCK), size, BLOCK,
                                                key.relative_dir),
                                       nursery=nursery, on_blocks=on_blocks)  # fmt: skip

            scope = trio.CancelScope()
            nursery.start_soon(waiter, scope)
            with trio.fail_after(30):
                await some.wait()
            scope.cancel()  # the waiter leaves mid-download
            with trio.fail_after(30):
                while worker._pending:  # noqa: ASYNC110 (until the job's last line)
                    await trio.sleep(0.01)
            prefix = tmp_path / key.relative_dir
            on_disk = {int(p.suffix[1:]) for p in prefix.parent.glob(f"{prefix.name}.*")}
            assert on_disk == landed
            assert len(landed) < 60, "the job was not cut short"
            await worker.aclose()
            nursery.cancel_scope.cancel()
    finally:
        disk.close()
