"""A hostile server (tests/hostile_server.py) through a real mount, and the client against its TLS
(a certificate made by the openssl tool). The client alone: tests/unit/test_hostile_client.py.

Gzip bombs on error bodies, list pages and metadata; a metadata body without end; JSON nested
100,000 deep; downloads answered gzip-compressed; terminal escapes in metadata fields; a TLS
certificate nobody trusts. What must hold each time: the mount and its fetch worker stay under
300 MB peak RSS (VmHWM), the mount stays up (a later `ls` of its root works), the user gets EIO
or the right bytes (never gzip bytes as a file's content), and nothing the server wrote reaches
a terminal as a control sequence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from amigofs.api import errors
from tests.hostile_server import (
    Call,
    HostileServer,
    children_running,
    compressed,
    endless,
    gzip_bomb,
    nested,
    peak_rss_mib,
    self_signed_tls,
    with_fields,
)
from tests.mounting import (
    Mount,
    force_unmount,
    mount_command,
    mounted,
    public_tempdir,
    wait_until,
    workspace_names,
)
from tests.reliability import errno_of
from tests.unit.test_hostile_client import DEADLINE, client_for

MAX_PEAK_MIB = 300
# Control characters a terminal acts on: C0 (but the newline ending a line), DEL, C1.
CONTROL = {*range(0x20), 0x7F, *range(0x80, 0xA0)} - {0x0A}
ESCAPES = {
    "direction": "inbound\x1b[2J\x1b[H",
    "tts_provider": "\x1b]0;owned\x07elevenlabs",
    "inbound_format": "mulaw\x9b31m",
    "outbound_format": "pcm16\x7f\x08\x08",
}


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer() as hostile:
        yield hostile


def by_sid(server: HostileServer) -> list[Call]:
    """The calls in the order a workspace directory lists (and a walk enters) them."""
    return sorted(server.calls, key=lambda c: c.call_sid)


def control_bytes(text: str | bytes) -> list[str]:
    chars = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
    return [repr(c) for c in chars if ord(c) in CONTROL]


async def test_an_untrusted_certificate_is_named_and_not_retried(tmp_path: Path) -> None:
    context, _ = self_signed_tls(tmp_path)
    with HostileServer(tls=context) as server:
        async with client_for(server) as client:
            with trio.fail_after(DEADLINE), pytest.raises(errors.TransportError) as failure:
                await client.list_workspaces()
            assert dict(client.stats.requests) == {"list-workspaces": 1}
    message = str(failure.value)
    assert "TLS certificate of 127.0.0.1 not trusted" in message, message
    assert "self-signed" in message or "self signed" in message, message


async def test_ssl_cert_file_is_the_trust_store_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, cert = self_signed_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with HostileServer(tls=context) as server:
        async with client_for(server) as client:
            with trio.fail_after(DEADLINE):
                workspaces = await client.list_workspaces()
    assert [ws.id for ws in workspaces] == [server.workspace_id]


# --- through a real mount ------------------------------------------------------------


def mount(server: HostileServer, *flags: str) -> contextlib.AbstractContextManager[Mount]:
    return mounted(server.url, server.api_key, "--timeout", "5", *flags)


def assert_held_up(mnt: Mount, server: HostileServer) -> None:
    """The mount is up and answers, and neither it nor its fetch worker peaked above
    MAX_PEAK_MIB."""
    assert mnt.process.poll() is None, mnt.log()
    assert workspace_names(mnt.path) == [server.workspace_id]
    peaks = {"mount": peak_rss_mib(mnt.process.pid)}
    workers = children_running(mnt.process.pid, "amigofs.cache.worker")
    assert workers, "no fetch worker"
    peaks.update({f"worker {pid}": peak_rss_mib(pid) for pid in workers})
    print(f"\npeak RSS: { {k: f'{v:.0f} MiB' for k, v in peaks.items()} }")
    assert all(v < MAX_PEAK_MIB for v in peaks.values()), peaks


def content_or_errno(path: Path) -> bytes | int:
    try:
        return path.read_bytes()
    except OSError as exc:
        assert exc.errno is not None
        return exc.errno


def assert_eio_or(expected: bytes, got: bytes | int, what: str) -> None:
    if isinstance(got, bytes):
        assert not got.startswith(b"\x1f\x8b"), f"{what}: gzip bytes served as the content"
        assert got == expected, f"{what}: {len(got)} bytes, not the file's"
    else:
        assert got == errno.EIO, f"{what}: {errno.errorcode.get(got, got)}"


def test_gzip_bombs_on_503_bodies_cost_an_eio_not_the_memory(server: HostileServer) -> None:
    first, second, *_ = server.calls
    server.misbehave("metadata", gzip_bomb(status=503), call=first)
    server.misbehave("inbound", gzip_bomb(status=503), call=second)  # the fetch worker's
    with mount(server) as mnt:
        workspace = mnt.path / server.workspace_id
        assert sorted(os.listdir(workspace)) == sorted(c.call_sid for c in server.calls)
        assert errno_of(lambda: os.listdir(workspace / first.call_sid)) == errno.EIO
        call_dir = workspace / second.call_sid
        assert errno_of(lambda: (call_dir / "inbound.wav").read_bytes()) == errno.EIO
        assert (call_dir / "outbound.wav").read_bytes() == second.outbound
        assert server.misbehaved["metadata"] >= 1 and server.misbehaved["inbound"] >= 1
        assert_held_up(mnt, server)


def test_gzip_bombs_on_list_pages_and_metadata_cost_an_eio_not_the_memory(
    server: HostileServer,
) -> None:
    first, second, *_ = server.calls
    server.misbehave("calls", gzip_bomb())
    with mount(server) as mnt:
        workspace = mnt.path / server.workspace_id
        assert errno_of(lambda: os.listdir(workspace)) == errno.EIO
        server.behave()
        server.misbehave("metadata", gzip_bomb(), call=first)
        assert sorted(os.listdir(workspace)) == sorted(c.call_sid for c in server.calls)
        assert errno_of(lambda: os.listdir(workspace / first.call_sid)) == errno.EIO
        assert (workspace / second.call_sid / "metadata.json").read_bytes() == second.metadata_file
        assert server.misbehaved["calls"] >= 1 and server.misbehaved["metadata"] >= 1
        assert_held_up(mnt, server)


def test_an_endless_metadata_body_is_cut_at_its_cap(server: HostileServer) -> None:
    first = server.calls[0]
    server.misbehave("metadata", endless(), call=first)
    with mount(server, "--timeout", "20") as mnt:
        workspace = mnt.path / server.workspace_id
        os.listdir(workspace)
        started = time.monotonic()
        assert errno_of(lambda: os.listdir(workspace / first.call_sid)) == errno.EIO
        # At the cap: long before the deadline a client without one would have run into.
        assert time.monotonic() - started < 10
        assert_held_up(mnt, server)


def test_nested_json_is_an_eio_and_never_ends_the_mount(server: HostileServer) -> None:
    calls = by_sid(server)
    server.misbehave("metadata", nested(), call=calls[0])
    # Loaded ahead of a walk, in the background: an error there must not end the mount.
    server.misbehave("metadata", nested(), call=calls[3])
    with mount(server, "--debug", "--listing-ttl", "0.2") as mnt:
        workspace = mnt.path / server.workspace_id
        os.listdir(workspace)
        assert errno_of(lambda: os.listdir(workspace / calls[0].call_sid)) == errno.EIO
        os.listdir(workspace / calls[1].call_sid)
        os.listdir(workspace / calls[2].call_sid)  # a walk in listing order: loads ahead
        wait_until(
            lambda: "loading ahead failed" in mnt.log() or mnt.process.poll() is not None,
            20,
            "the load ahead of calls[3]",
        )
        assert mnt.process.poll() is None, mnt.log()
        assert errno_of(lambda: os.listdir(workspace / calls[3].call_sid)) == errno.EIO

        # A listing refreshed in the background (its TTL is 0.2 s) meets nested JSON.
        server.misbehave("calls", nested())

        def refresh_failed() -> bool:
            if mnt.process.poll() is not None:
                return True
            try:
                os.listdir(workspace)  # a look at a stale listing starts its refresh
            except OSError:
                return True  # the mount is gone
            return "refresh failed" in mnt.log()

        wait_until(refresh_failed, 20, "a background refresh of the listing")
        assert mnt.process.poll() is None, mnt.log()
        # The cached listing is kept.
        assert sorted(os.listdir(workspace)) == [c.call_sid for c in calls]
        assert_held_up(mnt, server)


def test_compressed_downloads_give_eio_or_the_right_bytes_never_gzip(
    server: HostileServer,
) -> None:
    # (metadata.json is the metadata answer, never downloaded: only audio is.)
    second = server.calls[1]
    server.misbehave("inbound", compressed(), call=second)
    with mount(server) as mnt:
        workspace = mnt.path / server.workspace_id
        os.listdir(workspace)
        got = content_or_errno(workspace / second.call_sid / "inbound.wav")
        assert_eio_or(second.inbound, got, "inbound.wav served compressed")
        # Nothing of it was kept: once the server behaves, the bytes are right.
        server.behave()
        assert (workspace / second.call_sid / "inbound.wav").read_bytes() == second.inbound
        asked = {h.get("accept-encoding") for h in server.headers_of("inbound")}
        assert asked == {"identity"}, asked
        assert_held_up(mnt, server)


def test_terminal_escapes_in_metadata_never_reach_a_terminal(server: HostileServer) -> None:
    server.misbehave("metadata", with_fields(**ESCAPES))
    server.misbehave("calls", with_fields(direction="\x1b[31minbound\x1b[0m"))
    first = server.calls[0]
    with mount(server) as mnt:
        call_dir = mnt.path / server.workspace_id / first.call_sid
        assert sorted(os.listdir(call_dir)) == ["inbound.wav", "metadata.json", "outbound.wav"]
        for target in (call_dir, call_dir / "inbound.wav"):
            for encoding in ("text", "base64"):
                shown = subprocess.run(
                    ["getfattr", "-d", "-e", encoding, str(target)],
                    capture_output=True,
                    check=True,
                    timeout=30,
                ).stdout
                assert b"user.amigo.tts_provider" in shown, shown
                assert control_bytes(shown) == [], (encoding, shown)
            for name in os.listxattr(target):
                value = os.getxattr(target, name).decode()
                assert control_bytes(value) == [], (name, value)
        # Still shown, escaped: the user sees what the server sent, harmlessly.
        direction = os.getxattr(call_dir, "user.amigo.direction").decode()
        assert direction.startswith("inbound") and "x1b" in direction, direction
        assert (call_dir / "inbound.wav").read_bytes() == first.inbound
        assert control_bytes(mnt.log()) == []
        assert_held_up(mnt, server)


def test_an_untrusted_certificate_is_named_when_mounting(tmp_path: Path) -> None:
    context, _ = self_signed_tls(tmp_path)
    point = public_tempdir("amigofs-mnt-")
    with HostileServer(tls=context) as server:
        try:
            result = subprocess.run(
                mount_command(server.url, point, tmp_path / "cache"),
                env={**os.environ, "AMIGO_API_KEY": server.api_key},
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        finally:
            force_unmount(point)
            point.rmdir()
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "TLS certificate of 127.0.0.1 not trusted" in result.stderr, result.stderr


def test_large_metadata_files_live_in_the_cache_not_in_memory() -> None:
    # 100 calls with a 900 kB metadata.json each (under the 1 MiB cap): 90 MB that the
    # mount once kept in memory with the records, and on disk outside --cache-size.
    # They are kept with the records now (meta.sqlite), within --cache-size.
    with HostileServer(calls=100) as server:
        server.calls[:] = [dataclasses.replace(c, padding=900_000) for c in server.calls]
        with mounted(server.url, server.api_key, "--cache-size", "16M") as mnt:
            workspace = mnt.path / server.workspace_id
            for _ in range(2):
                for call in server.calls:
                    data = (workspace / call.call_sid / "metadata.json").read_bytes()
                    assert data == call.metadata_file, call.call_sid
                subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=True)
            peak = peak_rss_mib(mnt.process.pid)
            # Everything the cache writes counts toward --cache-size: blocks, records,
            # the indexes.
            on_disk = sum(p.stat().st_blocks * 512 for p in mnt.cache_dir.rglob("*"))
            assert peak < 120, f"the mount peaked at {peak:.0f} MiB"
            assert on_disk <= 16 << 20, f"the cache holds {on_disk} bytes"
