"""How long a failure is remembered: one rule for every place that repeats an error.

When something fails for want of the server (a read, a listing), the kernel or the
program asks again at once; answering with the same error for a moment keeps a
program's one call within one deadline, and a failing listing within one request per
moment, instead of a request per question. After `seconds`, the next question tries
again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class FailureMemory:
    """The last failure of one thing, answered again for `seconds` after it happened.

    Times are whatever clock the owner passes (trio's, in the mount): this is policy,
    it never reads a clock itself.
    """

    seconds: float
    _error: BaseException | None = None
    _at: float = 0.0

    def remember(self, error: BaseException, now: float) -> None:
        self._error, self._at = error, now

    def recent(self, now: float) -> BaseException | None:
        """The failure to answer with now; None once it is older than `seconds`."""
        if self._error is not None and now - self._at >= self.seconds:
            self._error = None
        return self._error

    @property
    def error(self) -> BaseException | None:
        """The last failure however old (None after `forget` or a success)."""
        return self._error

    def forget(self) -> None:
        self._error = None
