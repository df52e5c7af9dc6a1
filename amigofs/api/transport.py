"""The client's connections: an httpx transport over httpcore's connection pool, on a network
layer of our own, and the TLS trust store.

The network layer does two things httpx's own does not:
- It receives up to 1 MiB per socket read. httpcore reads 64 KiB at a time; under trio that
  caps a loopback or LAN stream at about 0.5 GB/s, all of it Python overhead per read. Asking
  the socket for 1 MiB lets h11 take whatever has arrived in one go (measured here: 1.6-2.1 GB/s
  for the same stream). Nothing else about the connection changes.
- It says why a connection failed, where the failure is raised: each error it raises is a
  `NetworkFailure` with the system's words (Connection refused, Name or service not known) or
  the TLS handshake's ssl error, never an address or URL; the transport raises httpx's error of
  the same kind from it (`network_failure` finds it again).

httpx takes no network backend, so the transport is built on httpcore's pool with its public
arguments (`large_read_transport`), and maps httpcore's errors to httpx's as httpx does.

Server certificates are checked against certifi's CA bundle, or the file or
directory that SSL_CERT_FILE or SSL_CERT_DIR name (OpenSSL's own variables), so
that a private CA can be trusted without touching certifi. Nothing else of the
environment is used: no proxy, no netrc (the client sets trust_env=False).
"""

# ruff: noqa: ASYNC109 -- these signatures are httpcore's interface, timeouts included.
from __future__ import annotations

import contextlib
import logging
import math
import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, cast

import certifi
import httpcore
import httpx
import trio

log = logging.getLogger(__name__)

SOCKET_READ_SIZE = 1 << 20


def trust_store() -> ssl.SSLContext:
    """A client context that verifies certificates and host names against the trust store."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile:
        log.debug("TLS trust store: %s (SSL_CERT_FILE)", cafile)
        return ssl.create_default_context(cafile=cafile)
    if capath:
        log.debug("TLS trust store: %s (SSL_CERT_DIR)", capath)
        return ssl.create_default_context(capath=capath)
    log.debug("TLS trust store: certifi %s", certifi.where())
    return ssl.create_default_context(cafile=certifi.where())


# --- why the network failed --------------------------------------------------------------------


class NetworkFailure(Exception):
    """Why the network failed a request: `reason` in the system's words ("" when it said
    nothing), and `tls`, the handshake's error when TLS is what failed."""

    def __init__(self, reason: str, *, tls: ssl.SSLError | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tls = tls


class _ConnectFailed(NetworkFailure, httpcore.ConnectError):
    pass


class _ReadFailed(NetworkFailure, httpcore.ReadError):
    pass


class _WriteFailed(NetworkFailure, httpcore.WriteError):
    pass


def network_failure(exc: httpx.TransportError) -> NetworkFailure | None:
    """Why our network layer failed the request of an httpx error (None for an error of
    another transport, or one the network layer did not raise: a timeout, a bad answer)."""
    cause = exc.__cause__  # large_read_transport raises each httpx error from its own
    return cause if isinstance(cause, NetworkFailure) else None


def _system_said(exc: OSError) -> str:
    """An OSError's reason without the address trio puts in its strerror: the errno's text,
    or a resolver's own (its errno is negative), or the first errno of the attempts when
    trio tried several addresses (trio raises its own OSError from the group of them)."""
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    if exc.strerror:
        return exc.strerror
    if isinstance(exc.__cause__, BaseExceptionGroup):
        for attempt in exc.__cause__.exceptions:
            if isinstance(attempt, OSError) and (reason := _system_said(attempt)):
                return reason
    return exc.args[-1][:200] if exc.args and isinstance(exc.args[-1], str) else ""


def _broken(
    exc: trio.BrokenResourceError, raised: type[_ConnectFailed | _ReadFailed | _WriteFailed]
) -> NetworkFailure:
    """The failure a trio stream broke on. trio raises BrokenResourceError from the OSError
    (an ssl.SSLError is one), through one BrokenResourceError per layer (TLS on TCP)."""
    cause = exc.__cause__
    while isinstance(cause, trio.BrokenResourceError):
        cause = cause.__cause__
    if isinstance(cause, ssl.SSLError):
        return raised(cause.reason or type(cause).__name__, tls=cause)
    return raised(_system_said(cause) if isinstance(cause, OSError) else "")


# --- the network layer -------------------------------------------------------------------------


@contextlib.contextmanager
def _failing_as(
    timeout: float | None,
    too_slow: type[httpcore.TimeoutException],
    failed: type[_ConnectFailed | _ReadFailed | _WriteFailed],
) -> Iterator[None]:
    """Within `timeout` seconds (None: no limit), else `too_slow`; a broken or closed trio
    stream raises `failed`, with what it broke on."""
    try:
        with trio.fail_after(math.inf if timeout is None else timeout):
            yield
    except trio.TooSlowError:
        raise too_slow(f"no progress within {timeout} s") from None
    except trio.BrokenResourceError as exc:
        raise _broken(exc, failed) from None
    except trio.ClosedResourceError:
        raise failed("") from None


class _Stream(httpcore.AsyncNetworkStream):
    """A trio stream, read up to SOCKET_READ_SIZE at a time."""

    def __init__(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _failing_as(timeout, httpcore.ReadTimeout, _ReadFailed):
            # bytes in fact (socket.recv, SSLObject.read); trio's type says bytearray too.
            data = await self._stream.receive_some(max(max_bytes, SOCKET_READ_SIZE))
        return cast(bytes, data)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            with _failing_as(timeout, httpcore.WriteTimeout, _WriteFailed):
                await self._stream.send_all(buffer)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        assert isinstance(self._stream, trio.SocketStream)
        tls = trio.SSLStream(
            self._stream,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            https_compatible=True,
        )
        try:
            with _failing_as(timeout, httpcore.ConnectTimeout, _ConnectFailed):
                await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(self._stream)
            raise
        return _Stream(tls)

    def get_extra_info(self, info: str) -> Any:
        stream = self._stream
        socket = (
            stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else stream.socket
        )
        if info == "ssl_object":
            # The SSLStream answers what httpcore asks of an SSLObject (selected_alpn_protocol).
            return stream if isinstance(stream, trio.SSLStream) else None
        if info == "socket":
            return socket
        if info == "is_readable":
            return socket.is_readable()
        if info == "client_addr":
            return socket.getsockname()
        if info == "server_addr":
            return socket.getpeername()
        return None


class _Network(httpcore.AsyncNetworkBackend):
    """TCP connections through trio, as _Streams."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with _failing_as(timeout, httpcore.ConnectTimeout, _ConnectFailed):
                stream = await trio.open_tcp_stream(host, port, local_address=local_address)
        except OSError as exc:
            raise _ConnectFailed(_system_said(exc)) from None
        for option in socket_options or ():
            stream.setsockopt(*option)
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise _ConnectFailed("Unix sockets are not used")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


# --- the transport -----------------------------------------------------------------------------

# httpcore's errors and httpx's of the same kind, the more specific first.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, error in _HTTPX_ERRORS:
            if isinstance(exc, core):
                raise error(str(exc)) from exc
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class PoolTransport(httpx.AsyncBaseTransport):
    """httpx requests sent through an httpcore connection pool (what httpx.AsyncHTTPTransport
    does, with a pool built here)."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            answer = await self._pool.handle_async_request(core_request)
        assert isinstance(answer.stream, AsyncIterable)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    def connections(self) -> int:
        """Connections open now (for the benchmarks)."""
        return len(self._pool.connections)


def large_read_transport(
    limits: httpx.Limits, ssl_context: ssl.SSLContext, *, http2: bool = False
) -> PoolTransport:
    """The client's transport: httpcore's pool with httpx's settings for `limits`, on the
    large-read network layer (HTTP/1.1, and HTTP/2 by ALPN if `http2`)."""
    return PoolTransport(
        httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=_Network(),
        )
    )
