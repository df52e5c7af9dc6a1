"""The API emulator in a subprocess, for the tests and the benchmarks.

    with running_emulator(calls_per_workspace=5, fault_rate=0.1) as emu:
        httpx.get(emu.url + "/v1/workspaces", headers=emu.auth_headers)
        expected = emu.data.read_range(ws, sid, "outbound.wav", 0, 100)

Knobs are EmulatorConfig field names, over a link profile's if one is named. The emulator is a
real process on loopback (as `amigofs demo` uses it), started with ``--port 0`` in its own
session; we read the port from its one listening line instead of sleeping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from amigofs.emulator.cli import knob_arguments
from amigofs.emulator.config import LINK_PROFILES, EmulatorConfig
from amigofs.emulator.data import Dataset
from amigofs.emulator.process import await_listening_details
from tests.mounting import stop_process

START_DEADLINE = 30.0


class EmulatorProc:
    """A running emulator subprocess and the ground truth it serves."""

    def __init__(
        self,
        process: subprocess.Popen[str],
        url: str,
        config: EmulatorConfig,
        certificate: str | None = None,
        knobs: dict[str, Any] | None = None,
    ) -> None:
        self.process = process
        self.url = url
        self.config = config
        self.api_key = config.api_key
        self.certificate = certificate
        """With tls: the PEM file of the emulator's self-signed certificate, which clients
        trust (curl --cacert, SSL_CERT_FILE for a mount) with certificate checks on."""
        self.knobs = knobs or {}
        """The knobs it was started with: its link profile's, then those given over it."""
        self._data: Dataset | None = None
        self.client = httpx.Client(base_url=url, timeout=30.0, verify=self.ssl_context())
        """For the harness's own routes (/__stats, /__control): they need no key."""

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this emulator's certificate (the system's without tls)."""
        return ssl.create_default_context(cafile=self.certificate)

    @property
    def data(self) -> Dataset:
        """The deterministic dataset the process serves, for ground-truth bytes."""
        if self._data is None:
            self._data = Dataset(self.config)
        return self._data

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def stats(self) -> dict[str, Any]:
        response = self.client.get("/__stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def link_stats(self) -> dict[str, int]:
        """Requests in flight now and at most, queued and refused (max_connections)."""
        response = self.client.get("/__stats/link")
        response.raise_for_status()
        result: dict[str, int] = response.json()
        return result

    def synced_data(self) -> Dataset:
        """``data`` with the calls the server has added since the start (add_calls,
        new_calls_per_second) added to it too, as of this moment."""
        added: dict[str, int] = self.control()["added_calls"]
        data = self.data
        for workspace_id, count in added.items():
            data.add_calls(count - data.added_calls()[workspace_id], workspace_id)
        return data

    def reset_stats(self) -> None:
        self.client.post("/__stats/reset").raise_for_status()

    def control(self, **changes: Any) -> dict[str, Any]:
        """Change run-time knobs (fault_rate, fault_kinds, latency, bandwidth, url_ttl,
        retry_after, stall_seconds, link_bandwidth, max_connections, over_capacity,
        new_calls_per_second) or move calls with restore=[sid] / archive=[sid], or add
        calls with add_calls=N / add_calls={workspace_id: N} (see synced_data)."""
        response = self.client.post("/__control", json=changes)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        self.client.close()
        code = stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def _argv(config: EmulatorConfig, port: int = 0) -> list[str]:
    argv = [sys.executable, "-m", "amigofs.emulator", "--host", "127.0.0.1", "--port", str(port)]
    defaults = EmulatorConfig(api_key="x")
    changed = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(EmulatorConfig)
        if field.name != "api_key" and getattr(config, field.name) != getattr(defaults, field.name)
    }
    return argv + knob_arguments(changed)


def start_emulator(
    api_key: str = "test-key",
    *,
    port: int = 0,
    profile: str | None = None,
    log_path: Path | None = None,
    **knobs: Any,
) -> EmulatorProc:
    """Start an emulator; the caller must stop() it (prefer running_emulator).

    ``port`` 0 picks a free one; pass a stopped emulator's ``port`` to bring "the same server"
    back where a mount expects it. ``profile`` is a link profile (LINK_PROFILES) the knobs
    override. Its stderr goes to ``log_path`` (appended), else to ours (pytest captures it: a
    pipe nobody reads could fill and block the server)."""
    served = {**(LINK_PROFILES[profile] if profile is not None else {}), **knobs}
    config = EmulatorConfig(api_key=api_key, **served)
    env = {**os.environ, "AMIGO_API_KEY": api_key}
    with contextlib.ExitStack() as files:
        log_file = files.enter_context(open(log_path, "ab")) if log_path is not None else None
        process = subprocess.Popen(
            _argv(config, port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=env,
            start_new_session=True,
        )
    try:
        listening = await_listening_details(process, START_DEADLINE)
    except BaseException as exc:
        process.kill()
        process.wait()
        if log_path is not None and isinstance(exc, TimeoutError | RuntimeError):
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{exc}:\n{tail}") from None
        raise
    return EmulatorProc(process, listening.url, config, listening.certificate, served)


@contextlib.contextmanager
def running_emulator(
    api_key: str = "test-key",
    *,
    port: int = 0,
    profile: str | None = None,
    log_path: Path | None = None,
    **knobs: Any,
) -> Iterator[EmulatorProc]:
    """An emulator subprocess for the duration of the block; always stopped afterwards."""
    emulator = start_emulator(api_key, port=port, profile=profile, log_path=log_path, **knobs)
    try:
        yield emulator
    finally:
        emulator.stop()
