"""Serving the emulator with hypercorn under trio."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from amigofs.emulator.app import EmulatorApp
from amigofs.emulator.config import EmulatorConfig

log = logging.getLogger(__name__)


def _hypercorn_config(fd: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"fd://{fd}"]
    # Access lines are logged by the app at debug level; hypercorn's own go to our logger.
    config.accesslog = None
    config.errorlog = logging.getLogger("amigofs.emulator.hypercorn")
    # Clients keep connections in a pool between FUSE reads; don't close them under their feet.
    config.keep_alive_timeout = 75
    config.keep_alive_max_requests = 1_000_000
    config.h11_max_incomplete_size = 64 * 1024
    # Stalled responses would otherwise hold shutdown for the default 3 s... or stall_seconds.
    config.graceful_timeout = 1.0
    config.include_server_header = False
    return config


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this: no Nagle delay on the small JSON answers.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, port: int, scheme: str = "http") -> str:
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"{scheme}://[{host}]:{port}" if is_v6 else f"{scheme}://{host}:{port}"


async def serve(
    config: EmulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    app: EmulatorApp | None = None,
    certificate: tuple[str, str] | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the emulator until cancelled or until shutdown_trigger returns.

    Port 0 picks a free port; the real URL (``http://HOST:PORT``) is reported through
    task_status. We bind the socket ourselves and hand it to hypercorn as ``fd://`` so the bound
    port is known before hypercorn starts accepting. With ``certificate`` (PEM certificate and
    key files) it serves HTTPS, and the URL says ``https://``.
    """
    if app is None:
        app = EmulatorApp(config)
    sock = _listening_socket(host, port)
    bound_port = sock.getsockname()[1]
    # hypercorn wraps the descriptor in its own socket object and closes it on exit.
    hc_config = _hypercorn_config(sock.detach())
    scheme = "http"
    if certificate is not None:
        hc_config.certfile, hc_config.keyfile = certificate
        scheme = "https"
    url = _url(host, bound_port, scheme)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                hypercorn_serve,
                cast(Any, app),  # hypercorn's ASGI TypedDicts vs our plain dict messages
                hc_config,
                shutdown_trigger=shutdown_trigger,
            )
        )
        log.info("emulator listening on %s", url)
        task_status.started(url)
