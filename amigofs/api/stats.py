"""The client's counters (`ClientStats`, read by `amigofs stats` and the metrics) and how one
request is counted when it ends (`Answer`)."""

from __future__ import annotations

import collections
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# What a request ended with when it was not an answer's status: no answer came (the
# connection refused or reset, the deadline passed), or the request was given up on
# before one did by what asked (a request beside it failed, the job was cancelled).
NO_ANSWER = "no_answer"
CANCELLED = "cancelled"


@dataclass(slots=True)
class ClientStats:
    """What this client has done, for `amigofs stats`."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    # Requests that have ended, by (operation, their answer's status, else NO_ANSWER
    # or CANCELLED).
    # Counted as they end, not as they start like `requests`: a counter that moved a
    # request from one status to another would go down, which Prometheus reads as a
    # restart.
    finished: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    retries: int = 0
    errors: int = 0  # operations that failed after their retries
    bytes_received: int = 0  # file bytes downloaded

    def by_status(self) -> dict[str, dict[str, int]]:
        """`finished` as {operation: {status: count}}, both sorted."""
        nested: dict[str, dict[str, int]] = {}
        for (op, status), count in sorted(self.finished.items()):
            nested.setdefault(op, {})[status] = count
        return nested

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "finished": self.by_status(),
            "retries": self.retries,
            "errors": self.errors,
            "bytes_received": self.bytes_received,
        }

    def since(self, earlier: ClientStats) -> ClientStats:
        """What was done after `earlier`, a copy of these counters taken then."""
        return self._combined(earlier, operator.sub)

    def plus(self, other: ClientStats) -> ClientStats:
        """The counts of both clients (the mount's and its fetch worker's)."""
        return self._combined(other, operator.add)

    def _combined(self, other: ClientStats, combine: Callable[[Any, Any], Any]) -> ClientStats:
        return ClientStats(
            combine(self.requests, other.requests),
            combine(self.finished, other.finished),
            combine(self.retries, other.retries),
            combine(self.errors, other.errors),
            combine(self.bytes_received, other.bytes_received),
        )

    def copy(self) -> ClientStats:
        return self.since(ClientStats())

    def add(self, document: Mapping[str, Any]) -> None:
        """Adds counts from `as_dict` of another client (the fetch worker's)."""
        for op, count in dict(document.get("requests") or {}).items():
            self.requests[str(op)] += int(count)
        for op, statuses in dict(document.get("finished") or {}).items():
            for status, count in dict(statuses).items():
                self.finished[str(op), str(status)] += int(count)
        self.retries += int(document.get("retries") or 0)
        self.errors += int(document.get("errors") or 0)
        self.bytes_received += int(document.get("bytes_received") or 0)


class Answer:
    """The status of one attempt's answer, once its headers are in (None until then)."""

    __slots__ = ("cancelled", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.cancelled = False  # given up on by the caller, not for its deadline

    def outcome(self) -> str:
        """What the attempt is counted as in ClientStats.finished."""
        if self.status is not None:
            return str(self.status)
        return CANCELLED if self.cancelled else NO_ANSWER
