"""The fetch worker streams a download's body into its block files (issue 22, CPU): a
job touches one block's worth of download memory, reused, however large the job, not a
buffer of the whole range (up to 32 MiB in flight per cold read, each page faulted in
on first use); and every block it stores holds the file's bytes, checked as before.

The worker's loop runs here in the test's process (over a socketpair, against the
emulator in this process): no subprocess, nothing mounted."""

from __future__ import annotations

import json
import mmap
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from amigofs.api.ranges import Version
from amigofs.cache import worker
from amigofs.cache.block_format import HEADER, FileKey, block_path, unpack_header
from amigofs.cache.worker import BlockSink
from tests.unit.inprocess import API_KEY, served_emulator

KIB = 1 << 10
MIB = 1 << 20
BLOCK = 64 * KIB


class _Lines:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream, self.buffer = stream, b""

    async def next(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            assert chunk, "the worker closed its socket"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        value: dict[str, Any] = json.loads(line)
        return value


async def _send(stream: trio.SocketStream, message: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(message).encode() + b"\n")


def test_a_sink_hands_on_whole_blocks_in_order_and_the_last_on_flush() -> None:
    data = random.Random(4).randbytes(5 * BLOCK + 1234)
    stored: list[bytes] = []
    block = memoryview(bytearray(BLOCK))
    sink = BlockSink(lambda: block, len(data), lambda b: stored.append(bytes(b)))
    at = 0
    rng = random.Random(5)
    while at < len(data):  # chunks of any size: within a block, across two, over several
        n = min(rng.choice([1, 1000, BLOCK - 1, BLOCK, 3 * BLOCK + 7]), len(data) - at)
        sink.take(data[at : at + n])
        at += n
        assert len(sink) == len(data) - at
    sink.flush()
    assert stored == [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)]


@dataclass
class Recorded:
    mapped: list[int]  # the sizes of the download buffers the worker mapped
    announced: list[list[int]]  # (index, length, crc32c) of each block stored
    whole: bytes  # the file, as the emulator serves it
    key: FileKey


async def run_jobs(
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    ranges: Callable[[int], list[tuple[int, int]]],
    *,
    at_once: bool,
    connections: int = 4,
) -> Recorded:
    """The worker's loop given jobs for these ranges of a call's outbound.wav: one after
    another, or all at once."""
    mapped: list[int] = []
    real_mmap = mmap.mmap

    def recording_mmap(fileno: int, length: int, *args: Any, **kwargs: Any) -> mmap.mmap:
        mapped.append(length)
        return real_mmap(fileno, length, *args, **kwargs)

    monkeypatch.setattr(worker.mmap, "mmap", recording_mmap)
    async with served_emulator(workspaces=1, calls_per_workspace=1, min_duration=30.0) as served:
        recording = next(iter(served.app.data.sound()))
        ws, sid = recording.workspace_id, recording.call_sid
        urls = await served.client.recording_urls(ws, sid)
        assert urls.outbound is not None
        size = served.app.data.file_size(ws, sid, recording.outbound_filename)
        version = Version()
        whole = await served.client.read_range(urls.outbound, 0, size, total=size)
        await served.client.download_into(
            urls.outbound, 0, memoryview(bytearray(1)), version=version
        )
        key = FileKey(ws, sid, recording.outbound_filename, size, version.validator)

        parent, child = socket.socketpair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker._serve, child)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent))
            lines = _Lines(stream)
            await _send(stream, {
                "protocol": worker.PROTOCOL, "api_key": API_KEY,
                "base_url": served.client.config.base_url, "max_connections": connections,
                "connect_timeout": 5.0, "read_timeout": 5.0, "deadline": 10.0,
                "cache_dir": str(cache_dir),
            })  # fmt: skip
            assert (await lines.next())["ready"]
            announced: list[list[int]] = []
            jobs = ranges(size)
            batches = [list(enumerate(jobs, 1))] if at_once else [[j] for j in enumerate(jobs, 1)]
            for batch in batches:
                for job_id, (start, end) in batch:
                    await _send(stream, {
                        "id": job_id, "target": urls.outbound.target,
                        "filename": urls.outbound.filename, "start": start, "end": end,
                        "total": size, "block_size": BLOCK, "dir": key.relative_dir,
                        "known": True, "validator": version.validator, "versioned": True,
                    })  # fmt: skip
                done = 0
                with trio.fail_after(20):
                    while done < len(batch):
                        line = await lines.next()
                        assert "error" not in line, line
                        announced.extend(line["blocks"])
                        done += bool(line.get("done"))
            await stream.aclose()
    return Recorded(mapped, announced, whole, key)


def check_stored(cache_dir: Path, recorded: Recorded) -> None:
    """Every block of the file announced once, and on disk: a sound header, the bytes."""
    key, whole = recorded.key, recorded.whole
    indexes = sorted(index for index, _n, _crc in recorded.announced)
    assert indexes == list(range(-(-len(whole) // BLOCK)))
    for index, length, crc in recorded.announced:
        raw = (cache_dir / block_path(key.relative_dir, index)).read_bytes()
        assert unpack_header(raw[: HEADER.size], key.digest, index) == (length, crc)
        assert raw[HEADER.size :] == whole[index * BLOCK : (index + 1) * BLOCK]
    assert os.listdir(cache_dir / "blocks.v3" / "tmp") == []


async def test_a_job_touches_one_block_of_memory_and_stores_the_files_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two jobs, one after the other: 1 MiB, then the rest of the file.
    recorded = await run_jobs(
        tmp_path / "cache", monkeypatch, lambda size: [(0, MIB), (MIB, size)], at_once=False
    )
    # One block's buffer, reused by the second job: not 1 MiB and the file's rest.
    assert sum(recorded.mapped) <= BLOCK
    check_stored(tmp_path / "cache", recorded)


async def test_jobs_waiting_for_a_connection_hold_no_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The whole file in jobs of 2 blocks, all sent at once, over 2 connections.
    recorded = await run_jobs(
        tmp_path / "cache",
        monkeypatch,
        lambda size: [(at, min(size, at + 2 * BLOCK)) for at in range(0, size, 2 * BLOCK)],
        at_once=True,
        connections=2,
    )
    assert len(recorded.announced) > 20
    # A buffer per download receiving at once (and one given back just after the
    # next download's first bytes), not one per job sent.
    assert sum(recorded.mapped) <= 3 * BLOCK
    check_stored(tmp_path / "cache", recorded)
