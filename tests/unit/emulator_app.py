"""The emulator's ASGI app in the test's own process, under trio's virtual clock.

    async with in_process_emulator(latency=0.4) as emu:
        answer = await emu.client.get("/v1/workspaces")

No process and no socket: httpx hands each request to the app, and every sleep of the emulator's
(latency, bandwidth, the shared link) passes in virtual time (run the test with pytest-trio's
``autojump_clock``), so what the link model promises is checked as arithmetic on
``trio.current_time()``, never against a wall clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from amigofs.emulator.app import EmulatorApp
from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.data import Dataset

API_KEY = "unit-test-key"


@dataclass(frozen=True, slots=True)
class InProcessEmulator:
    app: EmulatorApp
    client: httpx.AsyncClient
    """Sends the key; the harness routes (/__stats, /__control) ignore it."""

    @property
    def data(self) -> Dataset:
        return self.app.data

    async def control(self, **changes: Any) -> dict[str, Any]:
        response = await self.client.post("/__control", json=changes)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def link_stats(self) -> dict[str, int]:
        response = await self.client.get("/__stats/link")
        response.raise_for_status()
        result: dict[str, int] = response.json()
        return result


@contextlib.asynccontextmanager
async def in_process_emulator(**knobs: Any) -> AsyncIterator[InProcessEmulator]:
    app = EmulatorApp(EmulatorConfig(api_key=API_KEY, **knobs))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://emulator",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=None,  # virtual time: a deadline would be one on the virtual clock's jumps
    ) as client:
        yield InProcessEmulator(app, client)
