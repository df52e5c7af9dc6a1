"""Processes the benchmarks start: the emulator, FUSE mounts, nginx; always stopped.

Every context manager here waits for its process with a deadline, polling a condition (a line on
stdout, the mount in /proc/mounts, a TCP connect), never sleeping as synchronisation, and on the
way out, whatever happened, unmounts (`fusermount3 -u -z`) and ends the process (SIGTERM, then
SIGKILL). Children run in their own session so a Ctrl-C at the terminal reaches only the harness,
which then cleans up in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from amigofs.daemon.mount_table import is_mounted
from amigofs.emulator.cli import knob_arguments
from amigofs.emulator.config import LINK_PROFILES
from amigofs.emulator.process import Listening, await_listening_details

log = logging.getLogger(__name__)

START_DEADLINE = 60.0
STOP_DEADLINE = 15.0


def wait_until(condition: Callable[[], bool], deadline: float, what: str) -> None:
    """Polls `condition` until it holds; TimeoutError once `deadline` seconds have passed."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(0.02)


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the deadline."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_DEADLINE)


def unmount(mountpoint: Path) -> None:
    if is_mounted(mountpoint):
        subprocess.run(
            ["fusermount3", "-u", "-z", str(mountpoint)],
            check=False,
            timeout=STOP_DEADLINE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Workdir:
    """A scratch directory for one harness run, removed at the end (mounts are gone by then)."""

    path: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="amigofs-bench-")))
    _count: int = 0

    def __post_init__(self) -> None:
        # nginx workers run as nobody and must reach the files it serves.
        self.path.chmod(0o755)

    def new(self, prefix: str) -> Path:
        self._count += 1
        path = self.path / f"{prefix}-{self._count}"
        path.mkdir(mode=0o755)
        return path

    def cleanup(self) -> None:
        # Never follow into a mount point that is somehow still mounted.
        for root, dirs, _files in os.walk(self.path):
            for name in dirs:
                if is_mounted(Path(root) / name):
                    log.error("still mounted, leaving %s in place", self.path)
                    return
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.path)], check=False)


# --- emulator ------------------------------------------------------------------------------------


@dataclass
class Emulator:
    url: str
    api_key: str
    knobs: dict[str, Any]
    """EmulatorConfig fields as served: the link profile's, then those given over it."""
    client: httpx.Client
    certificate: str | None = None
    """With tls: the PEM file of the emulator's self-signed certificate, which clients trust
    (curl --cacert, SSL_CERT_FILE for the mount) with certificate checks on."""

    def stats(self) -> dict[str, Any]:
        response = self.client.get("/__stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset_stats(self) -> None:
        self.client.post("/__stats/reset").raise_for_status()


@contextlib.contextmanager
def emulator(
    api_key: str, log_path: Path, profile: str | None = None, **knobs: Any
) -> Iterator[Emulator]:
    """`amigofs emulator` on a free loopback port; knobs are EmulatorConfig field names, and
    `profile` a `--link-profile` they override."""
    argv = [sys.executable, "-m", "amigofs", "emulator", "--host", "127.0.0.1", "--port", "0"]
    if profile is not None:
        argv += ["--link-profile", profile]
    argv += knob_arguments(knobs)
    served = {**(LINK_PROFILES[profile] if profile is not None else {}), **knobs}
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            env={**os.environ, "AMIGO_API_KEY": api_key},
            start_new_session=True,
        )
    try:
        try:
            listening = _await_listening(process)
        except (TimeoutError, RuntimeError) as exc:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{exc}:\n{tail}") from None
        trust = ssl.create_default_context(cafile=listening.certificate)
        with httpx.Client(base_url=listening.url, timeout=30.0, verify=trust) as client:
            yield Emulator(listening.url, api_key, served, client, listening.certificate)
    finally:
        stop_process(process)
        if process.stdout is not None:
            process.stdout.close()


def _await_listening(process: subprocess.Popen[Any]) -> Listening:
    return await_listening_details(process, START_DEADLINE)


# --- FUSE mounts ---------------------------------------------------------------------------------


@dataclass
class Mounted:
    name: str
    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


@contextlib.contextmanager
def fuse_mount(
    name: str,
    argv: Sequence[str],
    mountpoint: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> Iterator[Mounted]:
    """Runs a FUSE daemon in the foreground; ready once `mountpoint` shows in /proc/mounts."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    mount = Mounted(name, mountpoint, process, log_path)
    try:
        wait_until(
            lambda: is_mounted(mountpoint) or process.poll() is not None,
            START_DEADLINE,
            f"{name} to mount at {mountpoint}",
        )
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with status {process.returncode}:\n{mount.log_tail()}"
            )
        yield mount
    finally:
        if is_mounted(mountpoint):
            unmount(mountpoint)
            # After an unmount the daemon exits by itself; give it the time to (amigofs may
            # write its cache on the way out), then insist.
            try:
                process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s did not exit within %.0f s of its unmount; stopping it", name, STOP_DEADLINE
                )
        # Interrupted before the mount came up (or it never will): stop the daemon, then
        # remove whatever mount it may have made in between or left behind dead.
        stop_process(process)
        unmount(mountpoint)


def amigofs_mount(
    emu: Emulator, mountpoint: Path, cache_dir: Path, log_path: Path, *extra: str
) -> contextlib.AbstractContextManager[Mounted]:
    argv = [
        sys.executable, "-m", "amigofs", "mount", str(mountpoint),
        "--base-url", emu.url, "--cache-dir", str(cache_dir), "--foreground", *extra,
    ]  # fmt: skip
    env = {"AMIGO_API_KEY": emu.api_key}
    if emu.certificate is not None:
        # The mount's trust store (amigofs.api.transport.trust_store): checks stay on.
        env["SSL_CERT_FILE"] = emu.certificate
    return fuse_mount("amigofs", argv, mountpoint, log_path, env)


def memfs_mount(
    knobs: dict[str, Any], mountpoint: Path, log_path: Path, preload: Sequence[str] = ()
) -> contextlib.AbstractContextManager[Mounted]:
    import json

    argv = [sys.executable, "-m", "benchmarks.memfs", str(mountpoint), "--knobs", json.dumps(knobs)]
    for name in preload:
        argv += ["--preload", name]
    # The harness may run from anywhere with PYTHONPATH set; the child must find this package.
    package_root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return fuse_mount("memfs", argv, mountpoint, log_path, {"PYTHONPATH": path})


# --- nginx ---------------------------------------------------------------------------------------

NGINX_LOG_FORMAT = "$request_method $uri $status $body_bytes_sent"


@dataclass
class Nginx:
    url: str
    access_log: Path

    def log_offset(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def wait_idle(self) -> None:
        """Waits until no connection but the one asking is open, so that every request made
        so far has ended and been logged (nginx logs a request when it ends)."""

        def idle() -> bool:
            status = httpx.get(self.url + "/__status", timeout=5.0).text
            return "Active connections: 1 " in status

        wait_until(idle, START_DEADLINE, "nginx's connections to close")

    def bytes_sent(self, since: int, uri_suffix: str) -> tuple[int, int]:
        """(body bytes, requests) logged since byte offset `since` for URIs ending so."""
        total = requests = 0
        with open(self.access_log, "rb") as log_file:
            log_file.seek(since)
            for line in log_file.read().decode(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[1].endswith(uri_suffix):
                    total += int(parts[3])
                    requests += 1
        return total, requests


@contextlib.contextmanager
def nginx(root: Path, workdir: Path) -> Iterator[Nginx]:
    """nginx serving `root` (autoindex, ranges) on a free loopback port, as an unprivileged
    foreground master so stopping it is stopping one process group."""
    port = free_port()
    access_log = workdir / "access.log"
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format bench '{NGINX_LOG_FORMAT}';
    access_log {access_log} bench;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    types {{ audio/wav wav; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex on;
        location = /__status {{ stub_status; access_log off; }}
    }}
}}
"""
    )
    with open(workdir / "stderr.log", "ab") as stderr:
        process = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(workdir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: _accepts(port) or process.poll() is not None, START_DEADLINE, "nginx to listen"
        )
        if process.poll() is not None:
            raise RuntimeError(
                f"nginx exited with status {process.returncode}: "
                + (workdir / "stderr.log").read_text(errors="replace")[-1000:]
            )
        yield Nginx(f"http://127.0.0.1:{port}", access_log)
    finally:
        # SIGQUIT would wait for connections; SIGTERM is nginx's fast shutdown.
        stop_process(process)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
