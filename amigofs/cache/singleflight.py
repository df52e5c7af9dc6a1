"""Single-flight: concurrent callers asking for the same key share one call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Generic, TypeVar

import trio

V = TypeVar("V")


class _Flight(Generic[V]):
    __slots__ = ("done", "error", "ok", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ok = False
        self.result: V | None = None
        self.error: Exception | None = None


class SingleFlight(Generic[V]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight[V]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._flights

    def flying(self) -> Iterator[tuple[Hashable, trio.Event]]:
        """The keys of the calls under way, each with the event set when it ends."""
        for key, flight in self._flights.items():
            yield key, flight.done

    async def run(self, key: Hashable, call: Callable[[], Awaitable[V]]) -> V:
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, call)
            await flight.done.wait()
            if flight.ok:
                return flight.result  # type: ignore[return-value]
            if flight.error is not None:
                raise flight.error
            # The leader was cancelled by its own deadline, not ours: lead a new flight.

    async def _lead(self, key: Hashable, call: Callable[[], Awaitable[V]]) -> V:
        flight: _Flight[V] = _Flight()
        self._flights[key] = flight
        try:
            flight.result = await call()
            flight.ok = True
            return flight.result
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()
