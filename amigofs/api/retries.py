"""Retrying one operation: the policy (`RetryPolicy`), what an attempt raises to be tried
again (`Retryable`, `ResumableShort`), the deadline a download's progress moves
(`ProgressDeadline`), Retry-After, and the loop itself (`retrying`).

What can succeed on a second try (transport failures, 429, 5xx) is retried with
exponential backoff and jitter, honouring Retry-After, until an overall deadline: the
policy's own, or the caller's trio deadline if that is sooner.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import trio

from amigofs.api import errors
from amigofs.api.stats import Answer, ClientStats

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.1
    max_delay: float = 5.0
    # Overall time for one operation, retries and Retry-After waits included.
    deadline: float = 30.0
    # A 503 may be a passing overload or "call recording not configured"; after
    # this many 503s in a row it is reported as not configured.
    unavailable_attempts: int = 3


# Bytes that count as progress for a download's deadline (see ProgressDeadline).
PROGRESS_BYTES = 64 << 10


class Retryable(Exception):
    """Raised inside one attempt: the error to report if retrying stops here."""

    def __init__(self, error: errors.AmigoError, *, wait: float = 0.0, unavailable: bool = False):
        super().__init__(str(error))
        self.error = error
        self.wait = wait
        self.unavailable = unavailable


class ResumableShort(Exception):
    """Raised inside one attempt: a body ended after `got` bytes; the next try asks for
    the rest, and a try that brought bytes does not count as a failed one."""

    def __init__(self, got: int, error: errors.AmigoError) -> None:
        super().__init__(str(error))
        self.got = got
        self.error = error


class ProgressDeadline:
    """The retry policy's deadline, moved forward each time another PROGRESS_BYTES
    arrive: a download that keeps delivering is slow, not stalled, and must not fail
    for its length; a trickle below PROGRESS_BYTES a deadline still ends it, and so
    does a stall. Never past the caller's own trio deadline."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._hard = trio.current_effective_deadline()
        self._counted = 0
        self.at = min(trio.current_time() + seconds, self._hard)
        self.scope: trio.CancelScope | None = None

    def progressed(self, total: int) -> None:
        """`total` bytes have arrived so far."""
        if total - self._counted < PROGRESS_BYTES:
            return
        self._counted = total
        self.at = min(trio.current_time() + self._seconds, self._hard)
        if self.scope is not None:
            self.scope.deadline = self.at


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds an answer's Retry-After asks to wait (delta-seconds or an HTTP date)."""
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


async def retrying(
    op: str,
    attempt: Callable[[Answer], Awaitable[T]],
    *,
    policy: RetryPolicy,
    stats: ClientStats,
    progress: Callable[[], int] = lambda: 0,
    deadline: ProgressDeadline | None = None,
) -> T:
    """`attempt` until it returns, or the error it raised last once retrying stops.

    `progress()` is how many bytes the operation has so far: a try that moved it is a
    resumed download, not a failed try. Each try is counted in `stats`.
    """
    clock = deadline or ProgressDeadline(policy.deadline)
    tries = unavailable = 0
    last_progress = progress()
    while True:
        tries += 1
        stats.requests[op] += 1
        answer = Answer()
        with trio.move_on_at(clock.at) as scope:
            clock.scope = scope
            try:
                return await attempt(answer)
            except ResumableShort as short:
                failure = Retryable(short.error)
            except errors.CertificateError:
                stats.errors += 1
                raise  # trying again meets the same certificate
            except errors.TransportError as exc:
                failure = Retryable(exc)
            except Retryable as exc:
                failure = exc
            except errors.ApiError:
                # An answer not worth a retry (401, 403, 404, 422...): an error all
                # the same, for `amigofs stats`.
                stats.errors += 1
                raise
            except trio.Cancelled:
                # Not by this scope, whose deadline is the operation's: by the caller.
                answer.cancelled = not scope.cancel_called
                raise
            finally:
                stats.finished[op, answer.outcome()] += 1
        clock.scope = None
        if scope.cancelled_caught:
            stats.errors += 1
            raise errors.DeadlineExceeded(f"{op}: no answer within the deadline")
        if progress() != last_progress:
            # A body cut short after some bytes: resuming is not a failed try.
            last_progress = progress()
            tries = 0
        unavailable = unavailable + 1 if failure.unavailable else 0
        backoff = min(policy.max_delay, policy.base_delay * 2 ** max(tries - 1, 0))
        wait = max(failure.wait, backoff * random.uniform(0.5, 1.0))
        if (
            tries >= policy.max_attempts
            or unavailable >= policy.unavailable_attempts
            or trio.current_time() + wait >= clock.at
        ):
            stats.errors += 1
            # The httpx exception it came from holds the request, headers and
            # all: keep it out of what callers can reach.
            failure.error.__context__ = failure.error.__cause__ = None
            raise failure.error
        stats.retries += 1
        log.debug("%s: %s; retrying in %.2f s", op, failure.error, wait)
        await trio.sleep(wait)
