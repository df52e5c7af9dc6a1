"""FailureMemory: the same error for a moment, then a new try."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from amigofs.policy.failures import FailureMemory


def test_a_failure_is_answered_again_within_its_moment_then_forgotten() -> None:
    memory = FailureMemory(seconds=2.0)
    error = OSError("connection refused")
    assert memory.recent(0.0) is None
    memory.remember(error, now=10.0)
    assert memory.recent(10.0) is error
    assert memory.recent(11.9) is error
    assert memory.recent(12.0) is None
    assert memory.error is None  # gone for good once it has expired


@given(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))
def test_recent_only_within_seconds(seconds: int, at: int, later: int) -> None:
    memory = FailureMemory(seconds=seconds)
    error = ValueError("x")
    memory.remember(error, now=at)
    assert (memory.recent(at + later) is error) == (later < seconds)


def test_forget_clears_at_once() -> None:
    memory = FailureMemory(seconds=60.0)
    memory.remember(RuntimeError("503"), now=0.0)
    memory.forget()
    assert memory.recent(0.0) is None
