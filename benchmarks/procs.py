"""What the benchmarks start beyond the shared harness: nginx, memfs mounts, scratch space.

The emulator, FUSE mounts, `wait_until` and the stopping of processes are the tests' harness
(tests/emulator_proc.py, tests/mounting.py), which the benchmarks use as they are: every process
waited for with a deadline, polling a condition (a line on stdout, the mount in /proc/mounts, a
TCP connect), never sleeping as synchronisation; on the way out, whatever happened, unmounted and
ended, each child in its own session so that a Ctrl-C reaches only the harness. Here, a mount's
daemon gets STOP_DEADLINE to exit by itself after its unmount (amigofs writes its cache on the
way out, and the remount figures depend on it) before it is stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from amigofs.daemon.mount_table import is_mounted
from tests.emulator_proc import EmulatorProc
from tests.mounting import STOP_DEADLINE, Mount, fuse_mount, stop_process, wait_until
from tests.mounting import amigofs_mount as mount_amigofs

log = logging.getLogger(__name__)

START_DEADLINE = 60.0


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


# --- FUSE mounts ---------------------------------------------------------------------------------


def amigofs_mount(
    emu: EmulatorProc, mountpoint: Path, cache_dir: Path, log_path: Path, *extra: str
) -> contextlib.AbstractContextManager[Mount]:
    return mount_amigofs(
        emu.url, emu.api_key, mountpoint, cache_dir, log_path, *extra,
        certificate=emu.certificate, deadline=START_DEADLINE, patience=STOP_DEADLINE,
    )  # fmt: skip


def benchmark_mount(
    name: str,
    argv: Sequence[str],
    mountpoint: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> contextlib.AbstractContextManager[Mount]:
    """A peer's FUSE daemon (or memfs), given the time to exit by itself as amigofs is."""
    return fuse_mount(
        name, argv, mountpoint, log_path, env, deadline=START_DEADLINE, patience=STOP_DEADLINE
    )


def memfs_mount(
    knobs: dict[str, Any], mountpoint: Path, log_path: Path, preload: Sequence[str] = ()
) -> contextlib.AbstractContextManager[Mount]:
    argv = [sys.executable, "-m", "benchmarks.memfs", str(mountpoint), "--knobs", json.dumps(knobs)]
    for name in preload:
        argv += ["--preload", name]
    # The harness may run from anywhere with PYTHONPATH set; the child must find this package.
    package_root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return benchmark_mount("memfs", argv, mountpoint, log_path, {"PYTHONPATH": path})


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
