"""The API emulator served in the test's own process and trio run, and a real
PlatformClient pointed at it: the real HTTP stack, no subprocess, nothing mounted.

The test reaches into the emulator directly (its dataset, its counters, new calls)
instead of through the control endpoint a separate process needs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from amigofs.api.client import ClientConfig, PlatformClient
from amigofs.api.secret import ApiKey
from amigofs.emulator.app import EmulatorApp
from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.server import serve

API_KEY = "amigofs-unit-test-key"


@dataclass(slots=True, frozen=True)
class Served:
    app: EmulatorApp
    client: PlatformClient
    nursery: trio.Nursery  # lives as long as the server: for what the test starts

    def requests(self, op: str) -> int:
        """Requests of `op` (list-calls, ...) the emulator has answered so far."""
        return self.app.stats.requests[op]

    def listed_sids(self, workspace_id: str) -> list[str]:
        """The calls a listing of the workspace shows now (those with a SID and a
        recording), in its order."""
        calls = self.app.data.calls(workspace_id)
        return [c.call_sid for c in calls if c.call_sid is not None and c.recording is not None]

    @property
    def workspace_ids(self) -> Sequence[str]:
        return [ws.id for ws in self.app.data.workspaces]


@asynccontextmanager
async def served_emulator(**config: object) -> AsyncIterator[Served]:
    """An emulator of `config` (EmulatorConfig's fields) on 127.0.0.1, a free port."""
    emulator_config = EmulatorConfig(api_key=API_KEY, **config)  # type: ignore[arg-type]
    app = EmulatorApp(emulator_config)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve, emulator_config, app=app))
        async with PlatformClient(ClientConfig(base_url=url), ApiKey(API_KEY)) as client:
            yield Served(app, client, nursery)
        nursery.cancel_scope.cancel()
