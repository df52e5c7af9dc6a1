"""The network between a client and the API, as the emulator models it.

Loopback hides what the internet adds; benchmarks need it back. Besides ``latency`` (before each
answer) and ``bandwidth`` (per response body, the vendor proxy's cap per download), the emulator
has one uplink shared by every response at once (``SharedLink``) and a cap on requests in flight
(``Admission``), beyond which requests queue or get 429, as a vendor's proxy does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import trio

BURST_SECONDS = 0.05
"""How much an idle link saves up: a body arriving at a quiet link goes out this much faster
than the rate, as a real link's queues let a short burst through."""


class SharedLink:
    """One budget of bytes per second for every response body at once.

    A token bucket shared by all responses: each chunk reserves its transmission time on one
    virtual clock (the moment the link is busy until) and is released when it would have gone
    through. Concurrent bodies so take turns chunk by chunk, and n of them get about 1/n of
    the rate each; a lone body gets all of it. The rate may change at run time.
    """

    __slots__ = ("_busy_until", "rate")

    def __init__(self, rate: int | None = None) -> None:
        self.rate = rate
        self._busy_until = 0.0

    async def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more bytes fit through the link."""
        rate = self.rate
        if rate is None or nbytes <= 0:
            return
        now = trio.current_time()
        start = max(self._busy_until, now - BURST_SECONDS)
        self._busy_until = start + nbytes / rate
        await trio.sleep_until(self._busy_until)

    @staticmethod
    def chunk_bytes(rate: int | None, largest: int) -> int:
        """A body chunk that keeps sharing fair and pacing smooth: about 1/20 s of the rate."""
        if rate is None:
            return largest
        return min(largest, max(4096, rate // 20))


class OverCapacity(Exception):
    """A request beyond max_connections in "429" mode."""


@dataclass(slots=True)
class AdmissionStats:
    in_flight: int = 0
    peak_in_flight: int = 0
    queued: int = 0
    """Requests that waited for a place."""
    rejected: int = 0
    """Requests answered 429 for want of a place."""

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        self.peak_in_flight = self.in_flight
        self.queued = 0
        self.rejected = 0


class Admission:
    """At most ``limit`` requests in flight (None: any number); the rest wait in arrival order
    ("queue") or are refused at once ("429", raising OverCapacity)."""

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(1)
        self.stats = AdmissionStats()

    async def enter(self, limit: int | None, mode: str) -> object | None:
        """Take a place; returns the token to give back to leave(). FIFO, as trio's limiter is."""
        token: object | None = None
        if limit is not None:
            if self._limiter.total_tokens != limit:
                self._limiter.total_tokens = limit
            token = object()
            try:
                self._limiter.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                if mode == "429":
                    self.stats.rejected += 1
                    raise OverCapacity from None
                self.stats.queued += 1
                await self._limiter.acquire_on_behalf_of(token)
        self.stats.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        return token

    def leave(self, token: object | None) -> None:
        self.stats.in_flight -= 1
        if token is not None:
            self._limiter.release_on_behalf_of(token)
