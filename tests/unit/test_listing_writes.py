"""What the call index's writes cost a workspace's first listing (amigofs.fs.listing):
the list requests go on while SQLite writes (a commit, a checkpoint's syncs), and the
pages that land meanwhile are stored together, in one transaction, not one each. A
write that fails fails the listing, and the next one completes. No mount: the emulator
in-process, the real client, a call index in a temporary directory."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import trio

from amigofs.api.client import PAGE_LIMIT, CallPage
from amigofs.api.models import CallSummary
from amigofs.cache.index import CallIndex
from amigofs.fs.listing import PARALLEL_PAGES, STORE_BACKLOG
from amigofs.policy.listing import PageRecord
from tests.unit.inprocess import served_emulator
from tests.unit.test_workspace_sync import (
    assert_each_once,
    indexed,
    until_complete,
    workspace_sync,
)

Pages = Sequence[tuple[Sequence[CallSummary], PageRecord | None]]


class HeldIndex(CallIndex):
    """A call index whose second write waits until `release` is set (as a checkpoint's
    fsync on a slow disk holds the writer), and that counts its transactions."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__(cache_dir)
        self.release = threading.Event()
        self.writes: list[int] = []  # the pages of each write

    def add_pages(self, workspace_id: str, pages: Pages, *, listed: bool = True) -> None:
        self.writes.append(len(pages))
        if len(self.writes) == 2:
            with self._write_lock:  # the one writer is busy meanwhile
                if not self.release.wait(30):
                    raise AssertionError("the test never released the index")
        super().add_pages(workspace_id, pages, listed=listed)


class FailingIndex(CallIndex):
    """A call index whose `failing`th write fails as a disk error does."""

    def __init__(self, cache_dir: Path, failing: int) -> None:
        super().__init__(cache_dir)
        self.failing = failing
        self.writes = 0

    def add_pages(self, workspace_id: str, pages: Pages, *, listed: bool = True) -> None:
        self.writes += 1
        if self.writes == self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        super().add_pages(workspace_id, pages, listed=listed)


def counting(reached: int, event: trio.Event) -> Callable[..., Awaitable[CallPage]]:
    """Lets list requests through, and sets `event` once `reached` have been answered."""
    answered = 0

    async def checked(workspace_id: str, request: Callable[[], Awaitable[CallPage]]) -> CallPage:
        nonlocal answered
        page = await request()
        answered += 1
        if answered == reached:
            event.set()
        return page

    return checked


async def test_the_listing_requests_go_on_while_the_index_writes(tmp_path: Path) -> None:
    index = HeldIndex(tmp_path)
    index.open()
    async with served_emulator(workspaces=1, calls_per_workspace=4_000) as served:
        workspace_id = served.workspace_ids[0]
        pages = -(-len(served.app.data.calls(workspace_id)) // PAGE_LIMIT)
        read_while_held = trio.Event()
        sync = workspace_sync(served, index, counting(1 + PARALLEL_PAGES + STORE_BACKLOG,
                                                      read_while_held))  # fmt: skip
        sync.ensure()
        # The index's second write hangs: pages are still read meanwhile, as many as
        # the backlog allows (the old sync held a request's place until its page was
        # written: it read PARALLEL_PAGES pages after the first, then waited on the disk).
        try:
            with trio.fail_after(10):
                await read_while_held.wait()
        finally:
            index.release.set()
        await until_complete(sync)
        assert_each_once(indexed(index, workspace_id), served.listed_sids(workspace_id))
        assert served.requests("list-calls") == pages
        # What landed while a write hung went in the next one, not one transaction a
        # page.
        assert sum(index.writes) == pages
        assert max(index.writes) >= STORE_BACKLOG
        assert len(index.writes) < pages


@pytest.mark.parametrize("failing", [1, 2])
async def test_a_failed_write_fails_the_listing_and_the_next_completes(
    tmp_path: Path, failing: int
) -> None:
    index = FailingIndex(tmp_path, failing)
    index.open()
    async with served_emulator(workspaces=1, calls_per_workspace=2_000) as served:
        workspace_id = served.workspace_ids[0]
        sync = workspace_sync(served, index)
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            await until_complete(sync)
        assert sync.error is not None
        assert not sync.complete
        # A new listing of the directory tries again, and shows every call once.
        await until_complete(sync)
        assert sync.complete
        assert_each_once(indexed(index, workspace_id), served.listed_sids(workspace_id))
