"""A hostile server (tests/hostile_server.py, a threaded server in the test's own process)
against the client alone: gzip bombs on error bodies and list pages, bodies without end, JSON
nested 100,000 deep, compressed downloads, redirects elsewhere, a Content-Length that lies, a
body trickling in, proxy variables. What must hold each time: the right error (never the wrong
bytes), no retry where none helps, and the memory a body may take capped. Through a real mount,
and with TLS (a certificate made by openssl): tests/test_hostile_server.py."""

from __future__ import annotations

import contextlib
import socket
import time
import tracemalloc
from collections.abc import Awaitable, Iterator

import pytest
import trio

from amigofs.api import errors
from amigofs.api.client import ClientConfig, PlatformClient, RetryPolicy
from amigofs.api.models import DownloadPath
from amigofs.api.secret import ApiKey
from tests.hostile_server import (
    Call,
    HostileServer,
    compressed,
    endless,
    gzip_bomb,
    lying_length,
    nested,
    redirect,
    trickle,
)

DEADLINE = 60  # for one unit test, all of its requests included


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer() as hostile:
        yield hostile


def client_for(server: HostileServer, **config: object) -> PlatformClient:
    retry = RetryPolicy(base_delay=0.01, max_delay=0.05, deadline=20.0)
    return PlatformClient(
        ClientConfig(base_url=server.url, retry=retry, **config),  # type: ignore[arg-type]
        ApiKey(server.api_key),
    )


def download_path(server: HostileServer, call: Call, filename: str) -> DownloadPath:
    target = f"/v1/{server.workspace_id}/recordings/{call.call_sid}/download/{filename}"
    return DownloadPath(server.workspace_id, call.call_sid, filename, target)


@contextlib.contextmanager
def unused_listener() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket on another loopback address, and its URL: whether anything
    connected to it is told by a non-blocking accept()."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.2", 0))
        listener.listen(4)
        listener.setblocking(False)
        yield f"http://127.0.0.2:{listener.getsockname()[1]}", listener


def assert_nobody_connected(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        listener.accept()


async def peak_traced_mib(operation: Awaitable[object]) -> tuple[object, float]:
    """What `operation` (an awaitable) returned or raised, and the peak of Python memory
    allocated meanwhile (tracemalloc: the bytes a body or its decoding took), in MiB."""
    tracemalloc.start()
    try:
        with trio.fail_after(DEADLINE):
            outcome = await operation
    except errors.AmigoError as exc:
        outcome = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
        tracemalloc.stop()
    return outcome, peak


async def test_an_error_body_bomb_is_read_no_further_than_a_few_kib(server: HostileServer) -> None:
    call = server.calls[0]
    server.misbehave("metadata", gzip_bomb(status=503), call=call)
    server.misbehave("inbound", gzip_bomb(status=503), call=call)
    async with client_for(server) as client:
        failure, peak = await peak_traced_mib(
            client.recording_metadata(server.workspace_id, call.call_sid)
        )
        assert isinstance(failure, errors.ServerError), failure
        assert peak < 16, f"a 503 body took {peak:.0f} MiB"
        failure, peak = await peak_traced_mib(
            client.read_range(download_path(server, call, "inbound.wav"), 0, 4096)
        )
        assert isinstance(failure, errors.ServerError), failure
        assert peak < 16, f"a 503 body took {peak:.0f} MiB"
    assert server.misbehaved["metadata"] >= 2 and server.misbehaved["inbound"] >= 2


async def test_json_bodies_past_their_cap_are_protocol_errors_without_retries(
    server: HostileServer,
) -> None:
    call = server.calls[0]
    server.misbehave("calls", gzip_bomb())
    server.misbehave("metadata", endless(), call=call)
    async with client_for(server) as client:
        failure, peak = await peak_traced_mib(client.list_calls(server.workspace_id))
        assert isinstance(failure, errors.ProtocolError), failure
        assert "MiB" in str(failure), failure  # names the cap it broke
        assert peak < 64, f"a list page took {peak:.0f} MiB"
        started = time.monotonic()
        failure, peak = await peak_traced_mib(
            client.recording_metadata(server.workspace_id, call.call_sid)
        )
        assert isinstance(failure, errors.ProtocolError), failure
        assert peak < 64, f"a metadata answer took {peak:.0f} MiB"
        # Cut at the cap, not at the read timeout or the deadline.
        assert time.monotonic() - started < 5
    assert server.served["calls"] == 1 and server.served["metadata"] == 1  # not retried


async def test_deeply_nested_json_is_a_protocol_error(server: HostileServer) -> None:
    server.misbehave("metadata", nested())
    server.misbehave("calls", nested())
    async with client_for(server) as client:
        with trio.fail_after(DEADLINE), pytest.raises(errors.ProtocolError, match="nested"):
            await client.recording_metadata(server.workspace_id, server.calls[0].call_sid)
        with trio.fail_after(DEADLINE), pytest.raises(errors.ProtocolError, match="nested"):
            await client.list_calls(server.workspace_id)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_json_answers_still_decode(server: HostileServer, encoding: str) -> None:
    server.misbehave("metadata", compressed(encoding))
    server.misbehave("calls", compressed(encoding))
    call = server.calls[0]
    async with client_for(server) as client:
        with trio.fail_after(DEADLINE):
            metadata = await client.recording_metadata(server.workspace_id, call.call_sid)
            calls = await client.list_calls(server.workspace_id)
    assert metadata.inbound_size_bytes == len(call.inbound)
    assert sorted(c.call_sid for c in calls) == sorted(c.call_sid for c in server.calls)
    assert all(h["accept-encoding"] == "gzip, deflate" for h in server.headers_of("metadata"))


async def test_compressed_downloads_are_protocol_errors_and_identity_is_asked(
    server: HostileServer,
) -> None:
    call = server.calls[0]
    server.misbehave("inbound", compressed())
    server.misbehave("metadata.json", compressed())
    async with client_for(server) as client:
        with trio.fail_after(DEADLINE):
            with pytest.raises(errors.ProtocolError, match="Content-Encoding"):
                await client.read_range(download_path(server, call, "inbound.wav"), 0, 1000)
            with pytest.raises(errors.ProtocolError, match="Content-Encoding"):
                await client.download_small(download_path(server, call, "metadata.json"))
            server.behave()
            got = await client.read_range(download_path(server, call, "inbound.wav"), 0, 1000)
            small = await client.download_small(download_path(server, call, "metadata.json"))
    assert bytes(got) == call.inbound[:1000]
    assert small == call.metadata_file
    for kind in ("inbound", "metadata.json"):
        assert [h.get("accept-encoding") for h in server.headers_of(kind)] == ["identity"] * 2


async def test_a_small_download_past_its_cap_is_a_protocol_error(server: HostileServer) -> None:
    call = server.calls[0]
    async with client_for(server, max_small_download_bytes=100) as client:
        with trio.fail_after(DEADLINE), pytest.raises(errors.ProtocolError, match="larger"):
            await client.download_small(download_path(server, call, "metadata.json"))


async def test_proxy_variables_are_not_used(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with unused_listener() as (proxy_url, proxy):
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with client_for(server) as client:
            with trio.fail_after(DEADLINE):
                workspaces = await client.list_workspaces()
        assert [ws.id for ws in workspaces] == [server.workspace_id]
        assert_nobody_connected(proxy)


async def test_a_redirect_elsewhere_is_not_followed(server: HostileServer) -> None:
    call = server.calls[0]
    with unused_listener() as (elsewhere, listener):
        server.misbehave("metadata", redirect(elsewhere + "/v1/metadata"))
        server.misbehave("inbound", redirect(elsewhere + "/inbound.wav", status=307))
        async with client_for(server) as client:
            with trio.fail_after(DEADLINE):
                with pytest.raises(errors.ProtocolError, match="HTTP 302"):
                    await client.recording_metadata(server.workspace_id, call.call_sid)
                with pytest.raises(errors.ProtocolError, match="HTTP 307"):
                    await client.read_range(download_path(server, call, "inbound.wav"), 0, 100)
        assert_nobody_connected(listener)


async def test_a_lying_content_length_never_yields_data(server: HostileServer) -> None:
    call = server.calls[0]
    server.misbehave("metadata", lying_length())
    server.misbehave("inbound", lying_length())
    server.misbehave("metadata.json", lying_length())
    async with client_for(server) as client:
        with trio.fail_after(DEADLINE):
            with pytest.raises(errors.TransportError):
                await client.recording_metadata(server.workspace_id, call.call_sid)
            with pytest.raises(errors.ProtocolError, match="Content-Length"):
                await client.read_range(download_path(server, call, "inbound.wav"), 0, 100)
            with pytest.raises(errors.TransportError):
                await client.download_small(download_path(server, call, "metadata.json"))


async def test_a_trickling_body_ends_at_the_deadline(server: HostileServer) -> None:
    server.misbehave("metadata", trickle(0.2))
    retry = RetryPolicy(deadline=2.0)
    config = ClientConfig(base_url=server.url, read_timeout=1.0, retry=retry)
    async with PlatformClient(config, ApiKey(server.api_key)) as client:
        started = time.monotonic()
        with trio.fail_after(DEADLINE), pytest.raises(errors.DeadlineExceeded):
            await client.recording_metadata(server.workspace_id, server.calls[0].call_sid)
    assert time.monotonic() - started < 4
