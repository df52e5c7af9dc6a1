"""The Platform API client against the real emulator, a subprocess on loopback.

Nothing is mocked: every test talks HTTP to `python -m amigofs.emulator` and checks what a user
of the client would notice (the bytes, the exception and its fields) plus what the server saw
(request counts, ranges and timestamps from its /__stats). Each async test runs under a
`trio.fail_after` deadline; nothing waits with a sleep.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import pickle
import random
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from amigofs.api import errors
from amigofs.api.client import PAGE_LIMIT, ClientConfig, PlatformClient, RetryPolicy
from amigofs.api.models import DownloadPath, parse_download_path
from amigofs.api.secret import ApiKey, BearerAuth, KeyFileError
from amigofs.emulator.config import FAULT_KINDS
from amigofs.emulator.data import METADATA_FILENAME, Recording
from tests.emulator_proc import EmulatorProc, running_emulator

# Distinctive, so a leak anywhere is found by a plain substring search.
API_KEY = "amk_live_7Qz3xV9pLw2Rt8Ns4Hd6Jc1Yb5Mf0Ke"
WRONG_KEY = "amk_live_WRONGwrong0wrong1wrong2wrong3wr"
KiB = 1024
MiB = 1024 * KiB
LONG_SAMPLES = 16000 * 3000  # an outbound channel longer than 50 minutes is "the hour-long call"

KNOBS: dict[str, Any] = {
    "seed": 1,
    "workspaces": 3,
    "calls_per_workspace": 250,
    "long_calls": 1,
    "null_sid_calls": 3,
    "no_recording_calls": 4,
    "archived_calls": 2,
    "not_configured_workspaces": 1,
    "stall_seconds": 60.0,
}
# The run-time knobs every test starts from (tests change them through /__control).
CALM: dict[str, Any] = {
    "fault_rate": 0.0,
    "fault_kinds": list(FAULT_KINDS),
    "retry_after": 1,
    "stall_seconds": 60.0,
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(api_key=API_KEY, **KNOBS) as emu:
        yield emu


@pytest.fixture
def emu(emulator: EmulatorProc) -> Iterator[EmulatorProc]:
    """The module's emulator with no faults and empty stats, put back calm afterwards."""
    emulator.control(**CALM)
    emulator.reset_stats()
    yield emulator
    emulator.control(**CALM)


def client_for(
    emu: EmulatorProc,
    *,
    key: str = API_KEY,
    read_timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> PlatformClient:
    config = ClientConfig(base_url=emu.url, read_timeout=read_timeout, retry=retry or RetryPolicy())
    return PlatformClient(config, ApiKey(key), transport=transport)


@dataclass(frozen=True)
class File:
    """One stored file of the emulator's dataset and how the client addresses it."""

    workspace_id: str
    call_sid: str
    filename: str
    size: int
    path: DownloadPath


def stored_file(emu: EmulatorProc, rec: Recording, filename: str) -> File:
    path = parse_download_path(
        f"/v1/{rec.workspace_id}/recordings/{rec.call_sid}/download/{filename}",
        key="test",
        workspace_id=rec.workspace_id,
        call_sid=rec.call_sid,
        base_url=emu.url,
    )
    assert path is not None
    size = emu.data.file_size(rec.workspace_id, rec.call_sid, filename)
    return File(rec.workspace_id, rec.call_sid, filename, size, path)


def configured_workspaces(emu: EmulatorProc) -> list[str]:
    return [ws.id for ws in emu.data.workspaces if ws.recording_configured]


def readable_recordings(emu: EmulatorProc) -> list[Recording]:
    configured = set(configured_workspaces(emu))
    return [r for r in emu.data.recordings() if r.workspace_id in configured and not r.archived]


def long_outbound(emu: EmulatorProc) -> File:
    """The hour-long outbound channel (~115 MB), stored as WAV so the header can be crossed."""
    recs = [
        r
        for r in readable_recordings(emu)
        if r.outbound_samples >= LONG_SAMPLES and r.storage == "wav"
    ]
    assert recs, "the emulator's dataset has no readable hour-long WAV call"
    file = stored_file(emu, recs[0], recs[0].outbound_filename)
    assert file.size > 100_000_000
    return file


def truth(emu: EmulatorProc, file: File, start: int, end: int) -> bytes:
    return emu.data.read_range(file.workspace_id, file.call_sid, file.filename, start, end)


def download_log(emu: EmulatorProc) -> list[dict[str, Any]]:
    return [e for e in emu.stats()["log"] if e["op"] == "download-recording-file"]


def range_start(entry: dict[str, Any]) -> int:
    header = entry["range"]
    assert header is not None and header.startswith("bytes=")
    return int(header[len("bytes=") :].split("-", 1)[0])


class RecordingTransport(httpx.AsyncBaseTransport):
    """The ordinary network transport, noting each request's URL on the way out."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.urls: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- listings ----------------------------------------------------------------------------------


async def test_list_calls_reads_every_page_and_skips_unmountable_calls(emu: EmulatorProc) -> None:
    transport = RecordingTransport()
    expected_requests = 0
    with trio.fail_after(30):
        async with client_for(emu, transport=transport) as client:
            for ws in emu.data.workspaces:
                calls = await client.list_calls(ws.id)
                listed = emu.data.calls(ws.id)
                # Exactly the recorded calls, in listing order: null SIDs and
                # has_recording=false are left out, nothing else is.
                expected = [c for c in listed if c.recording is not None]
                assert len(listed) > 2 * PAGE_LIMIT
                assert len(expected) == KNOBS["calls_per_workspace"]
                assert [c.call_sid for c in calls] == [c.call_sid for c in expected]
                for got, want in zip(calls, expected, strict=True):
                    assert got.workspace_id == ws.id
                    assert got.started_at == want.started_at
                    assert got.duration_seconds == want.summary["duration_seconds"]
                    assert got.direction == want.summary["direction"]
                expected_requests += math.ceil(len(listed) / PAGE_LIMIT)
    assert emu.stats()["requests"] == {"list-calls": expected_requests}
    # The client never asks for more than the API's maximum page, and walks the tokens.
    limits = [int(url.params["limit"]) for url in transport.urls]
    assert limits and max(limits) <= 100
    tokens = [int(url.params["continuation_token"]) for url in transport.urls]
    per_ws = math.ceil(len(emu.data.calls(emu.data.workspaces[0].id)) / PAGE_LIMIT)
    assert tokens[:per_ws] == [i * PAGE_LIMIT for i in range(per_ws)]


async def test_list_workspaces_returns_the_emulators_workspaces(emu: EmulatorProc) -> None:
    with trio.fail_after(10):
        async with client_for(emu) as client:
            workspaces = await client.list_workspaces()
    assert [(w.id, w.slug, w.name) for w in workspaces] == [
        (w.id, w.slug, w.name) for w in emu.data.workspaces
    ]
    assert emu.data.foreign_workspace_id not in {w.id for w in workspaces}
    assert emu.stats()["requests"] == {"list-workspaces": 1}


async def test_list_workspaces_reads_every_page() -> None:
    with running_emulator(
        api_key=API_KEY, workspaces=205, calls_per_workspace=0, null_sid_calls=0,
        no_recording_calls=0,
    ) as emu:  # fmt: skip
        with trio.fail_after(20):
            async with client_for(emu) as client:
                workspaces = await client.list_workspaces()
        assert [w.id for w in workspaces] == [w.id for w in emu.data.workspaces]
        assert len(workspaces) == 205
        assert emu.stats()["requests"] == {"list-workspaces": 3}


async def test_a_limit_above_100_is_a_422(emu: EmulatorProc) -> None:
    ws = emu.data.workspaces[0].id
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=emu.url, headers=emu.auth_headers) as http:
            for path in ("/v1/workspaces", f"/v1/{ws}/calls"):
                too_big = await http.get(path, params={"limit": 101})
                assert too_big.status_code == 422
                assert too_big.json()["detail"][0]["loc"] == ["query", "limit"]
                assert (await http.get(path, params={"limit": 100})).status_code == 200


# --- error answers -----------------------------------------------------------------------------


async def test_a_wrong_key_is_an_auth_error_401_without_retries(emu: EmulatorProc) -> None:
    rec = readable_recordings(emu)[0]
    with trio.fail_after(10):
        async with client_for(emu, key=WRONG_KEY) as client:
            with pytest.raises(errors.AuthError) as listing:
                await client.list_workspaces()
            with pytest.raises(errors.AuthError) as metadata:
                await client.recording_metadata(rec.workspace_id, rec.call_sid)
            with pytest.raises(errors.AuthError) as download:
                await client.read_range(stored_file(emu, rec, rec.inbound_filename).path, 0, 10)
    assert listing.value.status == metadata.value.status == download.value.status == 401
    assert emu.stats()["requests"] == {
        "list-workspaces": 1,
        "get-recording-metadata": 1,
        "download-recording-file": 1,
    }


async def test_a_foreign_workspace_is_an_auth_error_403(emu: EmulatorProc) -> None:
    foreign = emu.data.foreign_workspace_id
    with trio.fail_after(10):
        async with client_for(emu) as client:
            with pytest.raises(errors.AuthError) as calls:
                await client.list_calls(foreign)
            with pytest.raises(errors.AuthError) as urls:
                await client.recording_urls(foreign, "CA" + "1" * 32)
    assert calls.value.status == urls.value.status == 403
    assert emu.stats()["requests"] == {"list-calls": 1, "get-recording-urls": 1}


async def test_an_unknown_call_is_not_found(emu: EmulatorProc) -> None:
    ws = configured_workspaces(emu)[0]
    unknown = "CA" + "0" * 32  # well-formed, but no such call
    path = parse_download_path(
        f"/v1/{ws}/recordings/{unknown}/download/outbound.wav",
        key="test",
        workspace_id=ws,
        call_sid=unknown,
        base_url=emu.url,
    )
    assert path is not None
    with trio.fail_after(10):
        async with client_for(emu) as client:
            for operation in (
                client.recording_urls(ws, unknown),
                client.recording_metadata(ws, unknown),
                client.read_range(path, 0, 100),
            ):
                with pytest.raises(errors.NotFound) as caught:
                    await operation
                assert caught.value.status == 404
            # A SID that cannot be one never becomes part of a request.
            with pytest.raises(errors.NotFound):
                await client.recording_metadata(ws, "../../v1/workspaces")
    assert emu.stats()["requests"] == {
        "get-recording-urls": 1,
        "get-recording-metadata": 1,
        "download-recording-file": 1,
    }


async def test_reads_past_the_stored_end_are_protocol_errors(emu: EmulatorProc) -> None:
    rec = readable_recordings(emu)[0]
    file = stored_file(emu, rec, rec.inbound_filename)
    size = file.size
    with trio.fail_after(10):
        async with client_for(emu) as client:
            # Metadata claims a longer file: the server's 416, then its short Content-Range.
            with pytest.raises(errors.ProtocolError):
                await client.read_range(file.path, size + 10, size + 20, total=size + 100)
            with pytest.raises(errors.ProtocolError):
                await client.read_range(file.path, size - 10, size + 10, total=size + 100)
            # Without a size to check against, a range across the end is still refused,
            # never returned short or padded.
            with pytest.raises(errors.ProtocolError):
                await client.read_range(file.path, size - 10, size + 10)
            with pytest.raises(errors.ProtocolError):
                await client.read_range(file.path, size, size + 1)
            # A range outside the size the caller knows is its own mistake: no request.
            with pytest.raises(ValueError):
                await client.read_range(file.path, size - 10, size + 10, total=size)
            assert await client.read_range(file.path, size - 10, size, total=size) == truth(
                emu, file, size - 10, size
            )
    statuses = [e["status"] for e in download_log(emu)]
    assert statuses == [416, 206, 206, 416, 206]  # and no retries of the refused ones


async def test_an_archived_recording_is_archived_with_restore_eta(emu: EmulatorProc) -> None:
    configured = set(configured_workspaces(emu))
    rec = next(r for r in emu.data.recordings() if r.archived and r.workspace_id in configured)
    file = stored_file(emu, rec, rec.outbound_filename)
    with trio.fail_after(10):
        async with client_for(emu) as client:
            now = trio.current_time()
            for operation in (
                client.recording_urls(rec.workspace_id, rec.call_sid),
                client.recording_metadata(rec.workspace_id, rec.call_sid),
                client.read_range(file.path, 0, 100),
            ):
                with pytest.raises(errors.Archived) as caught:
                    await operation
                archived = caught.value
                assert archived.status == 202
                assert archived.restore_eta is not None
                assert archived.restore_eta.tzinfo is not None
                assert archived.retry_after == 3 * 3600
            assert trio.current_time() - now < 5  # a 202 is an answer, not something to retry
    assert emu.stats()["requests"] == {
        "get-recording-urls": 1,
        "get-recording-metadata": 1,
        "download-recording-file": 1,
    }


async def test_not_configured_is_reported_after_a_few_tries(emu: EmulatorProc) -> None:
    ws = next(w.id for w in emu.data.workspaces if not w.recording_configured)
    rec = next(c.recording for c in emu.data.calls(ws) if c.recording is not None)
    assert rec is not None
    file = stored_file(emu, rec, rec.outbound_filename)
    policy = RetryPolicy()
    with trio.fail_after(20):
        async with client_for(emu, retry=policy) as client:
            with pytest.raises(errors.NotConfigured) as metadata:
                await client.recording_metadata(ws, rec.call_sid)
            with pytest.raises(errors.NotConfigured) as download:
                await client.read_range(file.path, 0, 100)
    assert metadata.value.status == download.value.status == 503
    assert emu.stats()["requests"] == {
        "get-recording-metadata": policy.unavailable_attempts,
        "download-recording-file": policy.unavailable_attempts,
    }


async def test_a_passing_503_is_retried_not_taken_for_not_configured(emu: EmulatorProc) -> None:
    # "Service temporarily unavailable" says what it is: retried as any 5xx, not
    # reported as "not configured" after three in a row (under 15% faults, three 503s
    # in a row failed an rsync now and then).
    rec = readable_recordings(emu)[0]
    policy = RetryPolicy(base_delay=0.05)
    emu.control(fault_rate=1.0, fault_kinds=["503"])
    got = []
    with trio.fail_after(20):
        async with client_for(emu, retry=policy) as client, trio.open_nursery() as nursery:

            async def metadata() -> None:
                got.append(await client.recording_metadata(rec.workspace_id, rec.call_sid))

            nursery.start_soon(metadata)
            # The emulator is another process: its count is polled (within fail_after).
            for _ in itertools.count():
                stats = await trio.to_thread.run_sync(emu.stats)
                if stats["faults"].get("503", 0) > policy.unavailable_attempts:
                    break
                await trio.sleep(0.01)
            await trio.to_thread.run_sync(lambda: emu.control(fault_rate=0.0))
    assert [m.call_sid for m in got] == [rec.call_sid]


# --- the bytes ----------------------------------------------------------------------------------


async def test_urls_metadata_and_small_files_match_the_dataset(emu: EmulatorProc) -> None:
    recs = readable_recordings(emu)[:3]
    with trio.fail_after(20):
        async with client_for(emu) as client:
            for rec in recs:
                urls = await client.recording_urls(rec.workspace_id, rec.call_sid)
                meta = await client.recording_metadata(rec.workspace_id, rec.call_sid)
                assert urls.inbound is not None and urls.outbound is not None
                assert urls.metadata is not None
                assert (urls.inbound.filename, urls.outbound.filename, urls.metadata.filename) == (
                    rec.inbound_filename,
                    rec.outbound_filename,
                    METADATA_FILENAME,
                )
                assert meta.inbound_size_bytes == emu.data.file_size(
                    rec.workspace_id, rec.call_sid, rec.inbound_filename
                )
                assert meta.outbound_size_bytes == emu.data.file_size(
                    rec.workspace_id, rec.call_sid, rec.outbound_filename
                )
                assert await client.download_small(urls.metadata) == rec.metadata_bytes
                head = await client.read_range(
                    urls.outbound, 0, 4096, total=meta.outbound_size_bytes
                )
                assert head == emu.data.read_range(
                    rec.workspace_id, rec.call_sid, rec.outbound_filename, 0, 4096
                )


def edge_ranges(size: int, header: int, block: int) -> list[tuple[int, int]]:
    return [
        (0, 1),  # first byte
        (size - 1, size),  # last byte
        (0, header),  # exactly the WAV header
        (header - 4, header + 4),  # across the header's end
        (0, header + block),  # header and the first data block
        (header, header + block),  # exactly one data block
        (header + 7 * block, header + 8 * block),  # exactly one block further in
        (header + block - 1, header + block + 1),  # across a block boundary
        (0, block),  # a block-sized read from the start
        (size - block, size),  # the last block-sized stretch
    ]


async def test_random_ranges_of_an_hour_long_file_match_the_ground_truth(
    emu: EmulatorProc,
) -> None:
    file = long_outbound(emu)
    rng = random.Random(20250602)
    ranges = edge_ranges(file.size, 44, 64 * KiB)
    while len(ranges) < 200:
        length = rng.choice((1, 2, 4095, 4096, 65536, 131072, rng.randint(1, 512 * KiB)))
        start = rng.randrange(file.size - length + 1)
        ranges.append((start, start + length))
    with trio.fail_after(60):
        async with client_for(emu) as client:
            for start, end in ranges:
                got = await client.read_range(file.path, start, end, total=file.size)
                assert len(got) == end - start
                assert got == truth(emu, file, start, end), (start, end)
    stats = emu.stats()
    assert stats["requests"] == {"download-recording-file": len(ranges)}
    assert stats["audio_bytes"] == sum(end - start for start, end in ranges)


async def test_a_full_download_hashes_as_the_ground_truth_and_holds_the_client_ranges(
    emu: EmulatorProc,
) -> None:
    """The ground truth itself, checked once against a whole download by plain httpx."""
    file = long_outbound(emu)
    ranges = [(0, 100), (44 + 1000 * 64 * KiB - 3, 44 + 1000 * 64 * KiB + 5000)]
    ranges.append((file.size - 70_000, file.size))
    with trio.fail_after(60):
        async with client_for(emu) as client:
            from_client = [await client.read_range(file.path, s, e) for s, e in ranges]
        whole = hashlib.sha256()
        slices = [bytearray() for _ in ranges]
        position = 0
        async with (
            httpx.AsyncClient(base_url=emu.url, headers=emu.auth_headers) as http,
            http.stream("GET", file.path.target) as resp,
        ):
            assert resp.status_code == 200
            async for chunk in resp.aiter_raw():
                whole.update(chunk)
                for (start, end), out in zip(ranges, slices, strict=True):
                    lo, hi = max(start, position), min(end, position + len(chunk))
                    if lo < hi:
                        out += chunk[lo - position : hi - position]
                position += len(chunk)
    assert position == file.size
    assert slices == from_client
    expected = hashlib.sha256()
    for piece in emu.data.iter_range(
        file.workspace_id, file.call_sid, file.filename, 0, file.size, chunk_size=8 * MiB
    ):
        expected.update(piece)
    assert whole.hexdigest() == expected.hexdigest()


# --- faults -------------------------------------------------------------------------------------


async def test_exact_bytes_under_a_20_percent_fault_rate(emu: EmulatorProc) -> None:
    file = long_outbound(emu)
    # Stalls last a minute on the server; the client's 1 s read timeout makes them cheap.
    emu.control(fault_rate=0.2, fault_kinds=list(FAULT_KINDS), stall_seconds=60, retry_after=1)
    rng = random.Random(7)
    ranges = []
    for _ in range(50):
        length = rng.randint(1, 2 * MiB)
        start = rng.randrange(file.size - length + 1)
        ranges.append((start, start + length))
    with trio.fail_after(120):
        async with client_for(emu, read_timeout=1.0) as client:
            calls = await client.list_calls(configured_workspaces(emu)[0])
            assert len(calls) == KNOBS["calls_per_workspace"]
            for rec in readable_recordings(emu)[:10]:
                urls = await client.recording_urls(rec.workspace_id, rec.call_sid)
                assert urls.outbound is not None
                assert urls.outbound.filename == rec.outbound_filename
                meta = await client.recording_metadata(rec.workspace_id, rec.call_sid)
                assert meta.inbound_size_bytes == rec.metadata["inbound_size_bytes"]
            for start, end in ranges:
                got = await client.read_range(file.path, start, end, total=file.size)
                assert got == truth(emu, file, start, end), (start, end)
    stats = emu.stats()
    assert stats["requests"]["download-recording-file"] > len(ranges)
    assert sum(stats["faults"].values()) >= 5, stats["faults"]
    assert len(stats["faults"]) >= 3, stats["faults"]


async def test_retry_after_is_honoured(emu: EmulatorProc) -> None:
    retry_after = 1
    slack = 0.05
    file = long_outbound(emu)
    emu.control(fault_rate=1.0, fault_kinds=["429"], retry_after=retry_after)
    with trio.fail_after(30):
        async with client_for(emu, retry=RetryPolicy(max_attempts=3, deadline=20)) as client:
            # Always 429: the client gives up after its attempts, each a Retry-After apart.
            with pytest.raises(errors.RateLimited) as caught:
                await client.read_range(file.path, 0, 1000)
            assert caught.value.retry_after == retry_after
            times = [e["time"] for e in download_log(emu)]
            assert len(times) == 3
            assert all(b - a >= retry_after - slack for a, b in itertools.pairwise(times))

    # Half of the requests rate-limited: the reads succeed, and each 429 is waited out.
    emu.reset_stats()
    emu.control(fault_rate=0.5)
    with trio.fail_after(60):
        async with client_for(emu) as client:
            rng = random.Random(3)
            for _ in range(6):
                start = rng.randrange(file.size - 10_000)
                got = await client.read_range(file.path, start, start + 10_000)
                assert got == truth(emu, file, start, start + 10_000)
    log = emu.stats()["log"]
    limited = [i for i, e in enumerate(log) if e["status"] == 429]
    assert limited, "no 429 was injected"
    for i in limited:
        after = next(e for e in log[i + 1 :] if e["path"] == log[i]["path"])
        assert after["time"] - log[i]["time"] >= retry_after - slack


async def test_a_stopped_server_fails_with_a_transport_error_within_the_deadline() -> None:
    with running_emulator(api_key=API_KEY, workspaces=1, calls_per_workspace=1) as emu:
        rec = next(emu.data.recordings())
        file = stored_file(emu, rec, rec.inbound_filename)
        emu.stop()
    policy = RetryPolicy(deadline=3.0)
    with trio.fail_after(20):
        async with client_for(emu, retry=policy) as client:
            for operation in (client.read_range(file.path, 0, 100), client.list_workspaces()):
                began = trio.current_time()
                with pytest.raises(errors.TransportError):
                    await operation
                assert trio.current_time() - began < policy.deadline + 0.5


async def test_a_proxy_that_ignores_range_costs_only_what_is_needed(emu: EmulatorProc) -> None:
    file = long_outbound(emu)
    emu.control(fault_rate=1.0, fault_kinds=["ignore_range"])
    with trio.fail_after(30):
        async with client_for(emu) as client:
            for start in (0, 1 * MiB, 3 * MiB + 12_345):
                emu.reset_stats()
                got = await client.read_range(file.path, start, start + 64 * KiB, total=file.size)
                assert got == truth(emu, file, start, start + 64 * KiB)
                # A later request shows the server has moved on from the abandoned body.
                await client.list_workspaces()
                stats = emu.stats()
                assert [e["status"] for e in stats["log"]][:1] == [200]  # Range was ignored
                assert stats["faults"] == {"ignore_range": 1}
                assert stats["audio_bytes"] < 16 * MiB, stats["audio_bytes"]


async def test_a_body_cut_short_is_resumed(emu: EmulatorProc) -> None:
    file = long_outbound(emu)
    emu.control(fault_rate=0.5, fault_kinds=["drop"])
    rng = random.Random(11)
    reads = []
    for _ in range(12):
        start = rng.randrange(file.size - 2 * MiB)
        reads.append((start, start + 2 * MiB))
    with trio.fail_after(60):
        async with client_for(emu) as client:
            for start, end in reads:
                got = await client.read_range(file.path, start, end, total=file.size)
                assert got == truth(emu, file, start, end), (start, end)
    log = download_log(emu)
    assert emu.stats()["faults"].get("drop", 0) >= 1
    assert len(log) > len(reads)
    # The retry after a cut asks for the rest, not the whole range again.
    starts = {start for start, _ in reads}
    resumed = [e for e in log if range_start(e) not in starts]
    assert resumed
    for entry in resumed:
        assert any(s < range_start(entry) < e for s, e in reads)


# --- the key never shows ------------------------------------------------------------------------


def texts_of(exc: BaseException) -> Iterator[str]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (str(arg) for arg in current.args)
        stack += [current.__cause__, current.__context__]
    yield "".join(traceback.format_exception(exc))


async def test_the_api_key_is_in_no_log_line_and_no_error(
    emu: EmulatorProc, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("amigofs", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    rec = readable_recordings(emu)[0]
    raised: list[BaseException] = []
    with trio.fail_after(30):
        async with client_for(emu) as client:
            await client.list_calls(rec.workspace_id)
            urls = await client.recording_urls(rec.workspace_id, rec.call_sid)
            assert urls.outbound is not None
            await client.read_range(urls.outbound, 100, 5000)
            try:
                await client.recording_metadata(rec.workspace_id, "CA" + "0" * 32)
            except errors.NotFound as exc:
                raised.append(exc)
        async with client_for(emu, key=WRONG_KEY) as client:
            try:
                await client.list_workspaces()
            except errors.AuthError as exc:
                raised.append(exc)
        # A transport failure carries httpx's own exception as context.
        async with client_for(
            emu, retry=RetryPolicy(max_attempts=2, deadline=2), read_timeout=0.5
        ) as client:
            emu.control(fault_rate=1.0, fault_kinds=["stall"], stall_seconds=30)
            try:
                await client.read_range(urls.outbound, 0, 100_000)
            except errors.TransportError as exc:
                raised.append(exc)
    assert [type(e) for e in raised[:2]] == [errors.NotFound, errors.AuthError]
    assert len(raised) == 3 and isinstance(raised[2], errors.TransportError)
    assert any(r.name.startswith("httpcore") for r in caplog.records), "DEBUG was not captured"
    assert any(r.name.startswith("amigofs") for r in caplog.records)
    lines = [caplog.text]
    for record in caplog.records:
        lines += [record.getMessage(), repr(record.args), record.exc_text or ""]
    texts = lines + [text for exc in raised for text in texts_of(exc)]
    for secret in (API_KEY, WRONG_KEY):
        assert not [t for t in texts if secret in t]


def test_reprs_hide_the_key() -> None:
    key = ApiKey(API_KEY)
    client = PlatformClient(ClientConfig(base_url="http://127.0.0.1:9"), key)
    shown = [
        repr(key),
        str(key),
        f"{key}",
        repr(client),
        repr(BearerAuth(key)),
        repr(client.config),
    ]
    assert not [text for text in shown if API_KEY in text]
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert key.reveal() == API_KEY


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    path.write_text(API_KEY + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError) as caught:
        ApiKey.from_file(path)
    message = str(caught.value)
    assert f"chmod 600 {path}" in message
    assert API_KEY not in message
    os.chmod(path, 0o600)
    assert ApiKey.from_file(path).reveal() == API_KEY


async def test_a_slow_but_steady_download_outlasts_the_deadline(emu: EmulatorProc) -> None:
    # 400 kB at 100 kB/s is 4 s against a 2 s deadline: bytes keep arriving, so it is
    # slow, not stalled, and must not fail for its length.
    file = long_outbound(emu)
    emu.control(bandwidth=100_000)
    async with client_for(emu, retry=RetryPolicy(deadline=2.0)) as client:
        started = trio.current_time()
        data = await client.read_range(file.path, 1000, 401_000, total=file.size)
        assert trio.current_time() - started > 2.0
    assert data == truth(emu, file, 1000, 401_000)


async def test_a_trickle_still_ends_at_the_deadline(emu: EmulatorProc) -> None:
    # 2 kB/s: far below what counts as progress, so the deadline is not moved on.
    file = long_outbound(emu)
    emu.control(bandwidth=2_000)
    async with client_for(emu, retry=RetryPolicy(deadline=2.0)) as client:
        started = trio.current_time()
        with pytest.raises(errors.DeadlineExceeded):
            await client.read_range(file.path, 0, 400_000, total=file.size)
        assert trio.current_time() - started < 4.0
