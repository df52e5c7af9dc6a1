"""The API emulator, through real HTTP against its subprocess (httpx and curl)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
import warnings
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from amigofs.emulator.audio import lin2ulaw, ulaw2lin
from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.data import Dataset, Recording
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import wait_until

WAIT_DEADLINE = 10.0


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProc]:
    with running_emulator(calls_per_workspace=12, long_calls=1) as emulator:
        yield emulator


@pytest.fixture
def client(emu: EmulatorProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, headers=emu.auth_headers, timeout=30) as c:
        yield c


def recordings(emu: EmulatorProc, storage: str | None = None) -> list[Recording]:
    return [
        r
        for r in emu.data.recordings()
        if (storage is None or r.storage == storage) and r.inbound_samples < 8000 * 1000
    ]


def base(rec: Recording) -> str:
    return f"/v1/{rec.workspace_id}/recordings/{rec.call_sid}"


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def pcm16(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data[: len(data) // 2 * 2]))


# --- shapes and pagination ---------------------------------------------------------------------

WORKSPACE_FIELDS = {
    "id",
    "slug",
    "name",
    "environment",
    "backend_org_id",
    "region",
    "connector_type",
    "provisioned_at",
    "created_at",
    "updated_at",
}


def test_workspaces_page_through_all(emu: EmulatorProc, client: httpx.Client) -> None:
    first = client.get("/v1/workspaces").json()
    assert first["total"] == 2 and first["has_more"] is False
    assert first["continuation_token"] is None
    seen = []
    token: int | None = 0
    while token is not None:
        page = client.get("/v1/workspaces", params={"limit": 1, "continuation_token": token})
        body = page.json()
        assert set(body) == {"items", "has_more", "continuation_token", "total"}
        for ws in body["items"]:
            assert set(ws) == WORKSPACE_FIELDS
            uuid.UUID(ws["id"])
        seen += [ws["id"] for ws in body["items"]]
        token = body["continuation_token"]
        assert body["has_more"] == (token is not None)
    assert seen == [ws.id for ws in emu.data.workspaces]
    assert emu.data.foreign_workspace_id not in seen


def test_calls_pagination_covers_every_call(emu: EmulatorProc, client: httpx.Client) -> None:
    for ws in emu.data.workspaces:
        expected = [c.summary for c in emu.data.calls(ws.id)]
        assert len(expected) == 12 + 2 + 2
        got: list[dict[str, Any]] = []
        token = None
        while True:
            params: dict[str, Any] = {"limit": 5}
            if token is not None:
                params["continuation_token"] = token
            body = client.get(f"/v1/{ws.id}/calls", params=params).json()
            assert body["total"] == len(expected)
            got += body["items"]
            token = body["continuation_token"]
            assert body["has_more"] == (token is not None)
            if token is None:
                break
        assert got == expected
        starts = [c["started_at"] for c in got]
        assert starts == sorted(starts, reverse=True), "newest first"
        assert sum(c["call_sid"] is None for c in got) == 2
        assert sum(c["has_recording"] is False for c in got) == 2
        for call in got:
            assert call["status"] == "completed"
            if call["call_sid"] is not None:
                assert call["call_sid"].startswith("CA") and len(call["call_sid"]) == 34
        # offset is an alias of continuation_token
        by_offset = client.get(f"/v1/{ws.id}/calls", params={"limit": 3, "offset": 4}).json()
        assert by_offset["items"] == expected[4:7]
        assert by_offset["continuation_token"] == 7


def test_calls_default_limit_and_date_filter(emu: EmulatorProc, client: httpx.Client) -> None:
    ws = emu.data.workspaces[0]
    calls = emu.data.calls(ws.id)
    assert len(client.get(f"/v1/{ws.id}/calls").json()["items"]) == min(20, len(calls))
    day = calls[len(calls) // 2].started_at.date()
    body = client.get(
        f"/v1/{ws.id}/calls", params={"date_from": day.isoformat(), "date_to": day.isoformat()}
    ).json()
    assert body["items"] == [c.summary for c in calls if c.started_at.date() == day]
    assert body["total"] >= 1


# --- error answers -----------------------------------------------------------------------------


def test_auth_errors(emu: EmulatorProc) -> None:
    with httpx.Client(base_url=emu.url) as anonymous:
        assert anonymous.get("/v1/workspaces").status_code == 401
        wrong = anonymous.get("/v1/workspaces", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "detail" in wrong.json()
        rec = recordings(emu)[0]
        assert anonymous.get(f"{base(rec)}/download/metadata.json").status_code == 401


def test_forbidden_workspaces(emu: EmulatorProc, client: httpx.Client) -> None:
    for ws_id in (emu.data.foreign_workspace_id, str(uuid.uuid4())):
        assert client.get(f"/v1/{ws_id}/calls").status_code == 403
        sid = recordings(emu)[0].call_sid
        assert client.get(f"/v1/{ws_id}/recordings/{sid}/urls").status_code == 403


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("/v1/workspaces", {"limit": 101}, ["query", "limit"]),
        ("/v1/workspaces", {"limit": 0}, ["query", "limit"]),
        ("/v1/workspaces", {"limit": "ten"}, ["query", "limit"]),
        ("/v1/workspaces", {"continuation_token": "x"}, ["query", "continuation_token"]),
        ("/v1/{ws}/calls", {"limit": 101}, ["query", "limit"]),
        ("/v1/{ws}/calls", {"limit": 0}, ["query", "limit"]),
        ("/v1/{ws}/calls", {"offset": "1.5"}, ["query", "offset"]),
        ("/v1/{ws}/calls", {"offset": -1}, ["query", "offset"]),
        ("/v1/{ws}/calls", {"continuation_token": "abc"}, ["query", "continuation_token"]),
        ("/v1/{ws}/calls", {"date_from": "2025-13-01"}, ["query", "date_from"]),
        ("/v1/{ws}/calls", {"date_to": "yesterday"}, ["query", "date_to"]),
        ("/v1/not-a-uuid/calls", {}, ["path", "workspace_id"]),
        ("/v1/not-a-uuid/recordings/CA1/urls", {}, ["path", "workspace_id"]),
    ],
)
def test_validation_errors(
    emu: EmulatorProc, client: httpx.Client, path: str, params: dict[str, Any], loc: list[str]
) -> None:
    response = client.get(path.format(ws=emu.data.workspaces[0].id), params=params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc
    assert {"loc", "msg", "type"} <= set(detail[0])


def test_not_found_and_bad_filenames(emu: EmulatorProc, client: httpx.Client) -> None:
    ws = emu.data.workspaces[0]
    assert client.get(f"/v1/{ws.id}/recordings/CA{'0' * 32}/urls").status_code == 404
    assert client.get(f"/v1/{ws.id}/recordings/CA{'0' * 32}/metadata").status_code == 404
    unrecorded = [c for c in emu.data.calls(ws.id) if c.call_sid and c.recording is None]
    assert unrecorded
    assert client.get(f"/v1/{ws.id}/recordings/{unrecorded[0].call_sid}/urls").status_code == 404
    rec = recordings(emu)[0]
    other = "inbound.ulaw" if rec.storage == "wav" else "inbound.wav"
    assert client.get(f"{base(rec)}/download/{other}").status_code == 404
    assert client.get(f"{base(rec)}/download/nothing.json").status_code == 404
    for bad in ("a%20b", "%2E%2E", "x%2F..%2Fy", "..metadata.json", "%00"):
        response = client.get(f"{base(rec)}/download/{bad}")
        assert response.status_code == 400, bad
    assert client.get("/v1/nowhere").status_code == 404


# --- recordings --------------------------------------------------------------------------------


def test_urls_metadata_and_downloads_match_ground_truth(
    emu: EmulatorProc, client: httpx.Client
) -> None:
    for rec in recordings(emu)[:6]:
        urls = client.get(f"{base(rec)}/urls").json()
        assert urls["call_sid"] == rec.call_sid and urls["status"] == "available"
        names = [urls[k].rsplit("/", 1)[1] for k in ("inbound_url", "outbound_url", "metadata_url")]
        assert names == list(rec.filenames)
        metadata = client.get(f"{base(rec)}/metadata")
        assert metadata.headers["content-type"] == "application/json"
        assert client.get(urls["metadata_url"]).content == metadata.content == rec.metadata_bytes
        meta = metadata.json()
        summary = emu.data.call(rec.workspace_id, rec.call_sid)
        assert summary is not None
        assert meta["duration_seconds"] == summary.summary["duration_seconds"]
        assert meta["inbound_format"] == "mulaw" and meta["inbound_sample_rate"] == 8000
        assert meta["outbound_format"] == "pcm_s16le" and meta["outbound_sample_rate"] == 16000
        for key, size_key in (
            ("inbound_url", "inbound_size_bytes"),
            ("outbound_url", "outbound_size_bytes"),
        ):
            body = client.get(urls[key])
            assert body.status_code == 200
            assert body.headers["accept-ranges"] == "bytes"
            assert int(body.headers["content-length"]) == len(body.content) == meta[size_key]
            name = urls[key].rsplit("/", 1)[1]
            expected = emu.data.read_range(rec.workspace_id, rec.call_sid, name, 0, meta[size_key])
            assert body.content == expected


def test_metadata_times_are_consistent(emu: EmulatorProc) -> None:
    from datetime import datetime

    for rec in recordings(emu):
        meta = rec.metadata
        start = datetime.fromisoformat(str(meta["call_start_iso"]))
        end = datetime.fromisoformat(str(meta["call_end_iso"]))
        assert start.utcoffset() is not None
        assert abs((end - start).total_seconds() - float(str(meta["duration_seconds"]))) < 0.002
        call = emu.data.call(rec.workspace_id, rec.call_sid)
        assert call is not None
        assert start == datetime.fromisoformat(str(call.summary["started_at"]))
        assert 0 <= int(str(meta["media_start_epoch_ms"])) - start.timestamp() * 1000 < 1000


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-99", 10, 100),
        ("bytes=100-", 100, None),
        ("bytes=-57", -57, None),
        ("bytes=5-999999999", 5, None),
    ],
)
def test_ranges(
    emu: EmulatorProc, client: httpx.Client, header: str, start: int, end: int | None
) -> None:
    rec = recordings(emu, "raw")[0]
    size = emu.data.file_size(rec.workspace_id, rec.call_sid, "outbound.pcm")
    first = start if start >= 0 else size + start
    stop = size if end is None else end
    response = client.get(f"{base(rec)}/download/outbound.pcm", headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {first}-{stop - 1}/{size}"
    assert int(response.headers["content-length"]) == stop - first
    assert response.headers["accept-ranges"] == "bytes"
    expected = emu.data.read_range(rec.workspace_id, rec.call_sid, "outbound.pcm", first, stop)
    assert response.content == expected


def test_unsatisfiable_range(emu: EmulatorProc, client: httpx.Client) -> None:
    rec = recordings(emu)[0]
    size = len(rec.metadata_bytes)
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = client.get(f"{base(rec)}/download/metadata.json", headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"


def test_blocks_depend_on_position(emu: EmulatorProc) -> None:
    rec = recordings(emu)[0]
    data = emu.data
    size = data.file_size(rec.workspace_id, rec.call_sid, rec.outbound_filename)
    whole = data.read_range(rec.workspace_id, rec.call_sid, rec.outbound_filename, 0, size)
    chunks = b"".join(
        data.iter_range(rec.workspace_id, rec.call_sid, rec.outbound_filename, 0, size, 10_001)
    )
    assert chunks == whole
    for start, stop in ((0, 7), (65_530, 65_600), (size - 3, size + 50), (1000, 200_000)):
        piece = data.read_range(rec.workspace_id, rec.call_sid, rec.outbound_filename, start, stop)
        assert piece == whole[start:stop]
    blocks = {whole[i : i + 4096] for i in range(0, size - 4096, 64 * 1024)}
    assert len(blocks) == len(range(0, size - 4096, 64 * 1024)), "blocks must differ"


def test_curl_download_and_range(emu: EmulatorProc) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    rec = recordings(emu, "wav")[0]
    url = f"{emu.url}{base(rec)}/download/outbound.wav"
    auth = f"Authorization: Bearer {emu.api_key}"
    full = subprocess.run(
        [curl, "-sS", "--fail", "-H", auth, url], capture_output=True, check=True, timeout=30
    ).stdout
    size = emu.data.file_size(rec.workspace_id, rec.call_sid, "outbound.wav")
    expected = emu.data.read_range(rec.workspace_id, rec.call_sid, "outbound.wav", 0, size)
    assert hashlib.sha256(full).digest() == hashlib.sha256(expected).digest()
    part = subprocess.run(
        [curl, "-sS", "--fail", "-H", auth, "-r", "1000-1999", url],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    assert part == expected[1000:2000]


def test_head_request(emu: EmulatorProc, client: httpx.Client) -> None:
    rec = recordings(emu)[0]
    response = client.head(f"{base(rec)}/download/{rec.outbound_filename}")
    assert response.status_code == 200 and response.content == b""
    size = emu.data.file_size(rec.workspace_id, rec.call_sid, rec.outbound_filename)
    assert int(response.headers["content-length"]) == size


# --- audio -------------------------------------------------------------------------------------


def test_mulaw_codec_matches_the_standard() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = __import__("audioop")
    samples = list(range(-32768, 32768))
    ours = bytes(lin2ulaw(s) for s in samples)
    assert ours == audioop.lin2ulaw(struct.pack(f"<{len(samples)}h", *samples), 2)
    codes = bytes(range(256))
    assert [ulaw2lin(c) for c in codes] == pcm16(audioop.ulaw2lin(codes, 2))


def test_pcm_wav_parses_and_is_audio(emu: EmulatorProc, client: httpx.Client) -> None:
    rec = recordings(emu, "wav")[0]
    body = client.get(f"{base(rec)}/download/outbound.wav").content
    with wave.open(io.BytesIO(body)) as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == 16000
        assert wav.getnframes() == rec.outbound_samples
        frames = wav.readframes(wav.getnframes())
    assert len(frames) == 2 * rec.outbound_samples
    assert rms(pcm16(frames)) > 500


def test_mulaw_wav_header_and_audio(emu: EmulatorProc, client: httpx.Client) -> None:
    rec = recordings(emu, "wav")[0]
    body = client.get(f"{base(rec)}/download/inbound.wav").content
    riff, riff_size, wave_id = struct.unpack_from("<4sI4s", body, 0)
    assert (riff, wave_id) == (b"RIFF", b"WAVE") and riff_size == len(body) - 8
    chunk, size, tag, channels, rate, avg, align, bits, cb = struct.unpack_from(
        "<4sIHHIIHHH", body, 12
    )
    assert (chunk, size, tag, channels, rate, avg, align, bits, cb) == (
        b"fmt ",
        18,
        7,
        1,
        8000,
        8000,
        1,
        8,
        0,
    )
    assert struct.unpack_from("<4sII", body, 38) == (b"fact", 4, rec.inbound_samples)
    assert struct.unpack_from("<4sI", body, 50) == (b"data", rec.inbound_samples)
    data = body[58 : 58 + rec.inbound_samples]
    assert rms([ulaw2lin(c) for c in data]) > 500


def test_raw_files_are_audio(emu: EmulatorProc, client: httpx.Client) -> None:
    rec = recordings(emu, "raw")[0]
    inbound = client.get(f"{base(rec)}/download/inbound.ulaw").content
    outbound = client.get(f"{base(rec)}/download/outbound.pcm").content
    assert len(inbound) == rec.inbound_samples and len(outbound) == 2 * rec.outbound_samples
    assert rms([ulaw2lin(c) for c in inbound]) > 500
    assert rms(pcm16(outbound)) > 500
    # Speech has pauses: some 50 ms windows are much quieter than the loudest ones.
    window = 800
    levels = [rms(pcm16(outbound[i : i + 2 * window])) for i in range(0, 64000, 2 * window)]
    assert min(levels) < max(levels) / 4


def test_ffprobe_reads_the_wavs(emu: EmulatorProc, client: httpx.Client, tmp_path: Any) -> None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe not installed")
    rec = recordings(emu, "wav")[0]
    for name, codec, rate in (
        ("outbound.wav", "pcm_s16le", 16000),
        ("inbound.wav", "pcm_mulaw", 8000),
    ):
        path = tmp_path / name
        path.write_bytes(client.get(f"{base(rec)}/download/{name}").content)
        probe = subprocess.run(
            [ffprobe, "-v", "error", "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            check=True,
            timeout=30,
        )
        stream = json.loads(probe.stdout)["streams"][0]
        assert stream["codec_name"] == codec
        assert int(stream["sample_rate"]) == rate
        assert stream["channels"] == 1
        assert abs(float(stream["duration"]) - float(str(rec.metadata["duration_seconds"]))) < 0.01


# --- lifecycle: archive, not configured, expiring links ----------------------------------------


def test_archived_calls_answer_202_until_restored() -> None:
    with (
        running_emulator(calls_per_workspace=3, archived_calls=1) as emu,
        httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client,
    ):
        archived = [r for r in emu.data.recordings() if r.archived]
        assert len(archived) == 2
        rec = archived[0]
        for suffix in (
            "urls",
            "metadata",
            "download/metadata.json",
            f"download/{rec.inbound_filename}",
        ):
            response = client.get(f"{base(rec)}/{suffix}")
            assert response.status_code == 202, suffix
            body = response.json()
            assert body["call_sid"] == rec.call_sid
            assert body["status"] == "archived" and body["tier"] == "warm"
            assert body["restore_eta"].endswith("Z")
            assert int(response.headers["retry-after"]) > 0
        emu.control(restore=[rec.call_sid])
        assert client.get(f"{base(rec)}/urls").status_code == 200
        emu.control(archive=[rec.call_sid])
        assert client.get(f"{base(rec)}/metadata").status_code == 202
        fresh = next(r for r in emu.data.recordings() if not r.archived)
        assert client.get(f"{base(fresh)}/urls").status_code == 200


def test_not_configured_workspace_answers_503() -> None:
    with (
        running_emulator(calls_per_workspace=2, not_configured_workspaces=1) as emu,
        httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client,
    ):
        last = emu.data.workspaces[-1]
        assert client.get(f"/v1/{last.id}/calls").status_code == 200
        rec = next(r for r in emu.data.recordings() if r.workspace_id == last.id)
        for suffix in ("urls", "metadata", "download/metadata.json"):
            response = client.get(f"{base(rec)}/{suffix}")
            assert response.status_code == 503
            assert "not configured" in response.json()["detail"]
        ok = next(r for r in emu.data.recordings() if r.workspace_id != last.id)
        assert client.get(f"{base(ok)}/urls").status_code == 200


def test_download_links_expire_and_refresh() -> None:
    with (
        running_emulator(calls_per_workspace=1, url_ttl=1) as emu,
        httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client,
    ):
        rec = next(emu.data.recordings())
        link = client.get(f"{base(rec)}/urls").json()["metadata_url"]
        assert "expires=" in link and "sig=" in link
        assert client.get(link).content == rec.metadata_bytes
        # Without the signature, or with a tampered one, links are refused.
        assert client.get(link.split("?")[0]).status_code == 403
        assert client.get(link[:-1] + ("0" if link[-1] != "0" else "1")).status_code == 403
        wait_until(lambda: client.get(link).status_code == 403, WAIT_DEADLINE, "the link to expire")
        fresh = client.get(f"{base(rec)}/urls").json()["metadata_url"]
        assert client.get(fresh).status_code == 200
        emu.control(url_ttl=None)
        assert client.get(link).status_code == 200


# --- faults, pacing ----------------------------------------------------------------------------


def test_status_faults() -> None:
    with (
        running_emulator(calls_per_workspace=1, fault_rate=1.0, fault_kinds=("500",)) as emu,
        httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client,
    ):
        assert client.get("/v1/workspaces").status_code == 500
        emu.control(fault_kinds=["503"])
        response = client.get("/v1/workspaces")
        assert response.status_code == 503
        assert response.json() == {"detail": "Service temporarily unavailable"}
        emu.control(fault_kinds=["429"], retry_after=7)
        response = client.get("/v1/workspaces")
        assert response.status_code == 429 and response.headers["retry-after"] == "7"
        # Body faults don't apply to JSON routes.
        emu.control(fault_kinds=["drop", "stall", "ignore_range"])
        assert client.get("/v1/workspaces").status_code == 200
        emu.control(fault_rate=0.0)
        assert client.get("/v1/workspaces").status_code == 200
        assert emu.stats()["faults"] == {"500": 1, "503": 1, "429": 1}


def test_drop_fault_cuts_the_body() -> None:
    with running_emulator(calls_per_workspace=1, min_duration=60, max_duration=60) as emu:
        rec = next(emu.data.recordings())
        emu.control(fault_rate=1.0, fault_kinds=["drop"])
        with httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client:
            received = bytearray()
            with (
                pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
                client.stream("GET", f"{base(rec)}/download/{rec.outbound_filename}") as response,
            ):
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    received += chunk
            size = emu.data.file_size(rec.workspace_id, rec.call_sid, rec.outbound_filename)
            assert len(received) < size
            expected = emu.data.read_range(
                rec.workspace_id, rec.call_sid, rec.outbound_filename, 0, len(received)
            )
            assert bytes(received) == expected
        assert emu.stats()["faults"] == {"drop": 1}


def test_stall_fault_pauses_and_server_still_stops() -> None:
    with running_emulator(calls_per_workspace=1, stall_seconds=300) as emu:
        rec = next(emu.data.recordings())
        emu.control(fault_rate=1.0, fault_kinds=["stall"])
        timeout = httpx.Timeout(10, read=0.5)
        with httpx.Client(base_url=emu.url, headers=emu.auth_headers, timeout=timeout) as client:
            received = bytearray()
            with (
                pytest.raises(httpx.ReadTimeout),
                client.stream("GET", f"{base(rec)}/download/{rec.outbound_filename}") as response,
            ):
                for chunk in response.iter_bytes():
                    received += chunk
            size = emu.data.file_size(rec.workspace_id, rec.call_sid, rec.outbound_filename)
            assert len(received) < size
            assert emu.stats()["faults"] == {"stall": 1}
            # A second stalled response stays open while we stop the server.
            stalled = client.send(
                client.build_request("GET", f"{base(rec)}/download/{rec.inbound_filename}"),
                stream=True,
            )
            began = time.monotonic()
            assert emu.stop() == 0
            assert time.monotonic() - began < 5
            stalled.close()


def test_ignore_range_fault_sends_whole_file() -> None:
    with running_emulator(calls_per_workspace=1) as emu:
        rec = next(emu.data.recordings())
        emu.control(fault_rate=1.0, fault_kinds=["ignore_range"])
        with httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client:
            path = f"{base(rec)}/download/{rec.inbound_filename}"
            response = client.get(path, headers={"Range": "bytes=10-19"})
            assert response.status_code == 200
            size = emu.data.file_size(rec.workspace_id, rec.call_sid, rec.inbound_filename)
            assert len(response.content) == size
            # Only requests with a Range are candidates.
            assert client.get(path).status_code == 200
        assert emu.stats()["faults"] == {"ignore_range": 1}


def test_client_reading_a_prefix_does_not_pull_the_whole_file() -> None:
    with running_emulator(calls_per_workspace=1, long_calls=1) as emu:
        rec = next(emu.data.recordings())
        size = emu.data.file_size(rec.workspace_id, rec.call_sid, rec.outbound_filename)
        assert size == 115_200_000 + (44 if rec.storage == "wav" else 0)
        emu.control(fault_rate=1.0, fault_kinds=["ignore_range"])
        path = f"{base(rec)}/download/{rec.outbound_filename}"
        with (
            httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client,
            client.stream("GET", path, headers={"Range": "bytes=0-4095"}) as response,
        ):
            assert response.status_code == 200
            read = 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read >= 1 << 20:
                    break
        readings: list[int] = []

        def settled() -> bool:
            readings.append(emu.stats()["audio_bytes"])
            return len(readings) >= 5 and len(set(readings[-5:])) == 1

        wait_until(settled, WAIT_DEADLINE, "the counters to settle")
        assert readings[-1] < 12 * 2**20, readings[-1]


def test_latency_and_bandwidth() -> None:
    with running_emulator(calls_per_workspace=1, latency=0.3, bandwidth=400_000) as emu:
        rec = next(emu.data.recordings())
        with httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client:
            began = time.monotonic()
            assert client.get("/v1/workspaces").status_code == 200
            assert time.monotonic() - began >= 0.3
            emu.control(latency=0.0)
            began = time.monotonic()
            path = f"{base(rec)}/download/{rec.outbound_filename}"
            response = client.get(path, headers={"Range": "bytes=0-199999"})
            assert len(response.content) == 200_000
            # 200 kB at 400 kB/s: the first tenth goes at once, the rest is paced.
            assert time.monotonic() - began >= 0.4


# --- stats, control ----------------------------------------------------------------------------


def test_stats_count_requests_and_reset(emu: EmulatorProc, client: httpx.Client) -> None:
    emu.reset_stats()
    rec = recordings(emu, "raw")[0]
    client.get("/v1/workspaces")
    client.get(f"/v1/{rec.workspace_id}/calls")
    client.get(f"{base(rec)}/urls")
    client.get(f"{base(rec)}/metadata")
    client.get(f"{base(rec)}/download/inbound.ulaw", headers={"Range": "bytes=0-99"})
    client.get(f"{base(rec)}/download/metadata.json")
    stats = emu.stats()
    assert stats["requests"] == {
        "list-workspaces": 1,
        "list-calls": 1,
        "get-recording-urls": 1,
        "get-recording-metadata": 1,
        "download-recording-file": 2,
    }
    assert stats["audio_bytes"] == 100
    assert stats["download_bytes"] == {
        f"{base(rec)}/download/inbound.ulaw": 100,
        f"{base(rec)}/download/metadata.json": len(rec.metadata_bytes),
    }
    assert stats["faults"] == {}
    entry = stats["log"][-2]
    assert entry["op"] == "download-recording-file" and entry["status"] == 206
    assert entry["range"] == "bytes=0-99" and entry["path"].endswith("inbound.ulaw")
    assert abs(entry["time"] - time.time()) < 60
    assert [e["status"] for e in stats["log"]] == [200, 200, 200, 200, 206, 200]
    emu.reset_stats()
    stats = emu.stats()
    assert stats == {
        "requests": {},
        "audio_bytes": 0,
        "download_bytes": {},
        "faults": {},
        "log": [],
    }


def test_control_rejects_unknown_knobs(emu: EmulatorProc) -> None:
    with httpx.Client(base_url=emu.url) as client:
        assert client.post("/__control", json={"nope": 1}).status_code == 400
        assert client.post("/__control", json={"fault_kinds": ["boom"]}).status_code == 400
        assert client.post("/__control", json={"restore": ["CAnothing"]}).status_code == 400
        state = client.get("/__control").json()
        assert state["fault_kinds"] == ["500", "503", "429", "drop", "stall", "ignore_range"]


# --- determinism, command line -----------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    one = Dataset(EmulatorConfig(api_key="a", seed=5, calls_per_workspace=3))
    two = Dataset(EmulatorConfig(api_key="b", seed=5, calls_per_workspace=3))
    other = Dataset(EmulatorConfig(api_key="a", seed=6, calls_per_workspace=3))
    assert [ws.to_json() for ws in one.workspaces] == [ws.to_json() for ws in two.workspaces]
    assert [ws.id for ws in one.workspaces] != [ws.id for ws in other.workspaces]
    rec1, rec2 = next(one.recordings()), next(two.recordings())
    assert rec1.metadata_bytes == rec2.metadata_bytes
    name = rec1.outbound_filename
    assert one.read_range(rec1.workspace_id, rec1.call_sid, name, 0, 300_000) == two.read_range(
        rec2.workspace_id, rec2.call_sid, name, 0, 300_000
    )
    rec3 = next(other.recordings())
    assert one.read_range(rec1.workspace_id, rec1.call_sid, name, 100, 5000) != other.read_range(
        rec3.workspace_id, rec3.call_sid, rec3.outbound_filename, 100, 5000
    )
    # And across processes: a second emulator with the same seed serves the same bytes.
    with (
        running_emulator(seed=5, calls_per_workspace=3) as emu,
        httpx.Client(base_url=emu.url, headers=emu.auth_headers) as client,
    ):
        body = client.get(f"{base(rec1)}/download/{name}", headers={"Range": "bytes=0-299999"})
        assert body.content == one.read_range(rec1.workspace_id, rec1.call_sid, name, 0, 300_000)


def test_cli_requires_an_api_key() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "amigofs.emulator", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "API key" in result.stderr


def test_cli_stops_cleanly_on_sigint() -> None:
    with running_emulator(calls_per_workspace=1) as emu:
        emu.process.send_signal(signal.SIGINT)
        assert emu.process.wait(10) == 0


def test_cli_reports_a_busy_port() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "amigofs.emulator", "--port", str(port), "--api-key", "k"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"amigofs emulator: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
    ]
