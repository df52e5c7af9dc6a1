"""The API client in-process: against the emulator's ASGI app (no subprocess, no socket), and
the pure parts it is made of (ranges' checks, Retry-After, what a status means, why a
connection failed)."""

from __future__ import annotations

import socket

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from amigofs.api import errors
from amigofs.api.client import ClientConfig, PlatformClient, RetryPolicy
from amigofs.api.diagnostics import check_status
from amigofs.api.models import DownloadPath
from amigofs.api.ranges import check_content_range, check_whole_length
from amigofs.api.retries import Retryable, retry_after
from amigofs.api.secret import ApiKey
from amigofs.emulator.app import EmulatorApp
from amigofs.emulator.config import EmulatorConfig

KEY = "unit-test-key-0123456789"
PATH = DownloadPath("ws", "CA1", "inbound.wav", "/v1/ws/recordings/CA1/download/inbound.wav")


def in_process(app: EmulatorApp, retry: RetryPolicy | None = None) -> PlatformClient:
    config = ClientConfig(base_url="http://emulator", retry=retry or RetryPolicy())
    return PlatformClient(config, ApiKey(KEY), transport=httpx.ASGITransport(app=app))


async def test_the_five_operations_against_the_emulator_app_give_its_bytes() -> None:
    app = EmulatorApp(EmulatorConfig(api_key=KEY, calls_per_workspace=5))
    with trio.fail_after(10):
        async with in_process(app) as client:
            workspaces = await client.list_workspaces()
            assert [ws.id for ws in workspaces] == [ws.id for ws in app.data.workspaces]
            ws = workspaces[0].id
            calls = await client.list_calls(ws)
            recorded = [c.call_sid for c in app.data.calls(ws) if c.recording is not None]
            assert [c.call_sid for c in calls] == recorded
            sid = calls[0].call_sid
            urls = await client.recording_urls(ws, sid)
            metadata = await client.recording_metadata(ws, sid)
            size = metadata.outbound_size_bytes
            assert urls.outbound is not None
            got = await client.read_range(urls.outbound, 100, 5000, total=size)
            assert got == app.data.read_range(ws, sid, urls.outbound.filename, 100, 5000)
            assert urls.metadata is not None
            small = await client.download_small(urls.metadata)
            assert small == app.data.read_range(ws, sid, "metadata.json", 0, 1 << 20)
    assert client.stats.errors == client.stats.retries == 0
    assert client.stats.bytes_received == 4900 + len(small)


async def test_a_missing_call_is_not_found_and_counted_as_an_error() -> None:
    app = EmulatorApp(EmulatorConfig(api_key=KEY, calls_per_workspace=2))
    async with in_process(app) as client:
        with pytest.raises(errors.NotFound, match="HTTP 404"):
            await client.recording_urls(app.data.workspaces[0].id, "CA" + "0" * 32)
    assert client.stats.errors == 1
    assert client.stats.by_status() == {"get-recording-urls": {"404": 1}}


async def test_a_refused_connection_is_named_with_its_origin_and_the_systems_reason() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = ClientConfig(base_url=url, retry=RetryPolicy(max_attempts=1))
    async with PlatformClient(config, ApiKey(KEY)) as client:
        with pytest.raises(errors.TransportError) as raised:
            await client.list_workspaces()
    assert (
        str(raised.value)
        == f"list-workspaces /v1/workspaces: cannot connect to {url}: Connection refused"
    )


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "http://x/"))


def test_a_206_must_be_the_range_asked_for_of_a_file_of_the_metadatas_size() -> None:
    good = {"content-range": "bytes 10-19/100", "content-length": "10"}
    check_content_range(PATH, answer(206, **good), 10, 10, 100)
    check_content_range(
        PATH, answer(206, **{**good, "content-range": "bytes 10-19/*"}), 10, 10, 100
    )
    for header, value, said in (
        ("content-range", "bytes 10-19/101", "stored file has 101 bytes, metadata says 100"),
        ("content-range", "bytes 11-20/100", "asked for bytes 10-19, got 11-20"),
        ("content-range", "10-19/100", "206 without a valid Content-Range"),
        ("content-length", "11", "Content-Length disagrees with Content-Range"),
    ):
        with pytest.raises(errors.ProtocolError, match=said):
            check_content_range(PATH, answer(206, **{**good, header: value}), 10, 10, 100)


def test_a_whole_file_answer_must_have_the_metadatas_size() -> None:
    check_whole_length(PATH, answer(200, **{"content-length": "100"}), 100)
    check_whole_length(PATH, answer(200), 100)  # no length said: the body tells
    with pytest.raises(errors.ProtocolError, match="stored file has 99 bytes"):
        check_whole_length(PATH, answer(200, **{"content-length": "99"}), 100)


def test_retry_after_takes_seconds_or_a_date_and_ignores_nonsense() -> None:
    assert retry_after(answer(429, **{"retry-after": "7"})) == 7.0
    assert retry_after(answer(429, **{"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after(answer(429, **{"retry-after": "soon"})) is None
    assert retry_after(answer(429)) is None


@given(st.integers(100, 599))
def test_every_status_is_success_or_one_kind_of_error(status: int) -> None:
    try:
        check_status("op", "/v1/x?signature=secret", answer(status), None)
    except Retryable as again:
        assert status == 429 or status >= 500
        assert "signature" not in str(again.error)
    except errors.AmigoError as error:
        assert status not in (200, 206, 429) and not 500 <= status <= 599
        assert f"op /v1/x: HTTP {status}" in str(error)
    else:
        assert status in (200, 206)
