"""Run the API emulator in a subprocess for tests.

    with running_emulator(calls_per_workspace=5, fault_rate=0.1) as emu:
        httpx.get(emu.url + "/v1/workspaces", headers=emu.auth_headers)
        expected = emu.data.read_range(ws, sid, "outbound.wav", 0, 100)

Knobs are EmulatorConfig field names. The emulator is a real process on loopback (as `amigofs
demo` and the benchmarks use it), started with ``--port 0``; we read the port from its one
listening line instead of sleeping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx

from amigofs.emulator.cli import knob_arguments
from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.data import Dataset
from amigofs.emulator.process import await_listening, await_listening_details
from tests.mounting import stop_process

START_DEADLINE = 30.0
STOP_DEADLINE = 10.0


class EmulatorProc:
    """A running emulator subprocess and the ground truth it serves."""

    def __init__(
        self,
        process: subprocess.Popen[str],
        url: str,
        config: EmulatorConfig,
        certificate: str | None = None,
    ) -> None:
        self.process = process
        self.url = url
        self.config = config
        self.api_key = config.api_key
        self.certificate = certificate
        """With tls: the PEM file of the emulator's self-signed certificate."""
        self._data: Dataset | None = None
        self._client = httpx.Client(base_url=url, timeout=10.0, verify=self.ssl_context())

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
        response = self._client.get("/__stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def link_stats(self) -> dict[str, int]:
        """Requests in flight now and at most, queued and refused (max_connections)."""
        response = self._client.get("/__stats/link")
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
        self._client.post("/__stats/reset").raise_for_status()

    def control(self, **changes: Any) -> dict[str, Any]:
        """Change run-time knobs (fault_rate, fault_kinds, latency, bandwidth, url_ttl,
        retry_after, stall_seconds, link_bandwidth, max_connections, over_capacity,
        new_calls_per_second) or move calls with restore=[sid] / archive=[sid], or add
        calls with add_calls=N / add_calls={workspace_id: N} (see synced_data)."""
        response = self._client.post("/__control", json=changes)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        self._client.close()
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


def _await_listening(process: subprocess.Popen[Any]) -> str:
    return await_listening(process, START_DEADLINE)


def start_emulator(api_key: str = "test-key", *, port: int = 0, **knobs: Any) -> EmulatorProc:
    """Start an emulator; the caller must stop() it (prefer running_emulator).

    ``port`` 0 picks a free one; pass a stopped emulator's ``port`` to bring "the same server"
    back where a mount expects it."""
    config = EmulatorConfig(api_key=api_key, **knobs)
    env = {**os.environ, "AMIGO_API_KEY": api_key}
    process = subprocess.Popen(
        _argv(config, port),
        stdout=subprocess.PIPE,
        # Inherited: pytest captures it, and a pipe nobody reads could fill and block the server.
        stderr=None,
        text=True,
        env=env,
    )
    try:
        if config.tls:
            listening = await_listening_details(process, START_DEADLINE)
            url, certificate = listening.url, listening.certificate
        else:
            url, certificate = _await_listening(process), None
    except BaseException:
        process.kill()
        process.wait()
        raise
    return EmulatorProc(process, url, dataclasses.replace(config), certificate)


@contextlib.contextmanager
def running_emulator(
    api_key: str = "test-key", *, port: int = 0, **knobs: Any
) -> Iterator[EmulatorProc]:
    """An emulator subprocess for the duration of the block; always stopped afterwards."""
    emulator = start_emulator(api_key, port=port, **knobs)
    try:
        yield emulator
    finally:
        emulator.stop()
