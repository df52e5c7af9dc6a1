"""An httpx transport that receives up to 1 MiB per socket read, and the TLS trust store.

httpcore reads 64 KiB at a time; under trio that caps a loopback or LAN stream
at about 0.5 GB/s, all of it Python overhead per read. Asking the socket for
1 MiB lets h11 take whatever has arrived in one go (measured here: 1.6-2.1 GB/s
for the same stream). Nothing else about the connection changes.

Server certificates are checked against certifi's CA bundle, or the file or
directory that SSL_CERT_FILE or SSL_CERT_DIR name (OpenSSL's own variables), so
that a private CA can be trusted without touching certifi. Nothing else of the
environment is used: no proxy, no netrc (the client sets trust_env=False).
"""

# ruff: noqa: ASYNC109 -- these signatures are httpcore's interface, timeouts included.
from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterable
from typing import Any

import certifi
import httpcore
import httpx

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


class _LargeReadStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, SOCKET_READ_SIZE), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _LargeReadStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _LargeReadStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _LargeReadStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def large_read_transport(
    limits: httpx.Limits, ssl_context: ssl.SSLContext
) -> httpx.AsyncHTTPTransport:
    """httpx's own transport, with its connection pool built on the large-read backend."""
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
    # httpx exposes no parameter for the network backend; its pool is the one
    # place to give it. Same settings as httpx would use, plus the backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_LargeReadBackend(),
    )
    return transport
