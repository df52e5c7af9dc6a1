"""Running a few awaitables at once, with errors as plain exceptions.

trio reports failures of a nursery's tasks as an ExceptionGroup; callers here
want the first failure itself (a NotFound stays a NotFound for the errno map).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


async def gather(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Runs every call concurrently; returns their results in order.

    If any fails, the others are cancelled and the first failure is raised as is.
    """
    results: list[Any] = [None] * len(calls)

    async def run(index: int, call: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await call()

    try:
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(run, index, call)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return results


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure a caller should see from a nursery's ExceptionGroup."""
    # Prefer a real failure over the Cancelled of its siblings.
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if not isinstance(exc, trio.Cancelled):
            return exc
    return leaves[0]
