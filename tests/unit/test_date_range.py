"""A workspace's span of calls (amigofs.fs.date_range) and by-date's days from it: against
the emulator served in-process (a 100,000-call workspace, the real client), and against
stand-in listings in any order. No mount."""

from __future__ import annotations

import datetime as dt
import errno
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from amigofs.api.client import PAGE_LIMIT, CallPage
from amigofs.api.models import CallSummary, time_ns
from amigofs.cache.index import CallIndex
from amigofs.fs.date_range import CallSpan, DateRanges, ListPage, api_pages
from amigofs.fs.errors import FsError
from amigofs.fs.namespace import ROOT_INODE, Namespace
from amigofs.fs.records import RecordingSource
from amigofs.fs.views import Days
from tests.unit.inprocess import Served, served_emulator
from tests.unit.test_nodes import _config, _Source

WORKSPACE = "5b0e2f4c-2d8e-4c39-9a53-1f7d7c1e0a42"


async def passed(workspace_id: str, request: Callable[[], Awaitable[CallPage]]) -> CallPage:
    """What the mount's WorkspaceAccess.checked does for a workspace it may list."""
    return await request()


async def no_whole_listing(workspace_id: str) -> None:
    raise AssertionError("the whole listing was read")


def true_span(served: Served, workspace_id: str) -> CallSpan:
    """The oldest and newest mountable call, from the dataset's ends (newest first)."""
    calls = served.app.data.calls(workspace_id)
    shown = [
        time_ns(calls[p].started_at)
        for p in [*range(200), *range(len(calls) - 200, len(calls))]
        if calls[p].call_sid is not None and calls[p].recording is not None
    ]
    return CallSpan(min(shown), max(shown))


def day_names(span: CallSpan, days: Days) -> list[str]:
    return [day.isoformat() for day in span.days(days)]


async def test_the_span_of_100000_calls_costs_four_list_requests(tmp_path: Path) -> None:
    index = CallIndex(tmp_path)
    index.open()
    async with served_emulator(workspaces=1, calls_per_workspace=100_000) as served:
        workspace_id = served.workspace_ids[0]
        ranges = DateRanges(
            api_pages(served.client, passed), index, no_whole_listing, listing_ttl=60.0
        )
        span = await ranges.span(workspace_id)
        assert span == true_span(served, workspace_id)
        assert served.requests("list-calls") <= 4
        # Kept for the listing TTL; asked again after a SIGHUP.
        assert await ranges.span(workspace_id) == span
        assert served.requests("list-calls") <= 4
        ranges.drop()
        await ranges.span(workspace_id)
        assert served.requests("list-calls") <= 8
    index.close()


async def test_a_cold_by_date_listing_and_made_up_days_cost_the_span_only(
    tmp_path: Path,
) -> None:
    """Through the tree: `ls by-date/WS/` lists every day of the span, and days looked up
    by others are answered from it, inside or outside, without the workspace's listing."""
    index = CallIndex(tmp_path)
    index.open()
    async with served_emulator(workspaces=1, calls_per_workspace=100_000) as served:
        workspace_id = served.workspace_ids[0]
        ns = Namespace(
            served.client, cast(RecordingSource, _Source()),
            served.nursery, _config(), index=index,
        )  # fmt: skip
        by_date = await ns.lookup(ROOT_INODE, "by-date")
        ws = await ns.lookup(by_date.inode, workspace_id)
        handle = await ns.opendir(ws.inode)
        names = [entry.name for _, entry in await ns.readdir(handle, 0)]
        ns.releasedir(handle)
        assert names == day_names(true_span(served, workspace_id), Days())
        asked = served.requests("list-calls")
        assert asked <= 5
        for made_up in ["1999-12-31", "2001-02-03", "2262-04-11", "1000-01-01"]:
            with pytest.raises(FsError) as missing:
                await ns.lookup(ws.inode, made_up, owner=False)
            assert missing.value.errno == errno.ENOENT
        for name in (names[0], names[len(names) // 2], names[-1]):
            assert (await ns.lookup(ws.inode, name, owner=False)).is_dir
        assert served.requests("list-calls") == asked


def _summary(n: int, started: dt.datetime) -> CallSummary:
    return CallSummary(WORKSPACE, f"CA{n:032x}", started, 10.0, "inbound")


def stand_in(calls: list[CallSummary], asked: list[int]) -> ListPage:
    """A listing of `calls` in the order given, filtered by UTC dates as the API does."""

    async def page(
        workspace_id: str, offset: int, date_from: dt.date | None, date_to: dt.date | None
    ) -> CallPage:
        asked.append(offset)
        kept = [
            c
            for c in calls
            if c.started_at is not None
            and (date_from is None or date_from <= c.started_at.date())
            and (date_to is None or c.started_at.date() <= date_to)
        ]
        items = kept[offset : offset + PAGE_LIMIT]
        more = offset + PAGE_LIMIT < len(kept)
        return CallPage(items, len(items), len(kept), more, offset + PAGE_LIMIT if more else None)

    return page


@asynccontextmanager
async def _index() -> AsyncIterator[CallIndex]:
    with tempfile.TemporaryDirectory() as scratch:
        index = CallIndex(Path(scratch))
        index.open()
        try:
            yield index
        finally:
            index.close()


@settings(max_examples=40, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 400 * 86_400), min_size=101, max_size=450),
    order=st.sampled_from(["newest", "oldest", "shuffled"]),
    seed=st.integers(0, 1000),
)
def test_the_span_has_the_days_of_the_oldest_and_newest_call_in_any_order(
    offsets: list[int], order: str, seed: int
) -> None:
    """Whatever order the listing has, the span's first and last days are those of its
    oldest and newest call: read off its ends when it is newest first (four requests at
    most), else checked with date filters or, failing that, read whole."""
    origin = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    calls = [_summary(n, origin + dt.timedelta(seconds=s)) for n, s in enumerate(offsets)]
    calls.sort(key=lambda c: c.started_at or origin, reverse=order != "oldest")
    if order == "shuffled":
        random.Random(seed).shuffle(calls)

    async def run() -> None:
        async with _index() as index:
            asked: list[int] = []
            read_whole: list[str] = []

            async def whole_listing(workspace_id: str) -> None:
                read_whole.append(workspace_id)
                index.add(workspace_id, calls)

            ranges = DateRanges(stand_in(calls, asked), index, whole_listing, listing_ttl=60.0)
            span = await ranges.span(WORKSPACE)
            assert span is not None
            starts = [c.started_at for c in calls if c.started_at is not None]
            assert span.bounds(Days()) == (min(starts).date(), max(starts).date())
            if order == "newest":
                assert len(asked) <= 4 and not read_whole

    trio.run(run)


async def test_a_workspace_without_calls_has_no_days() -> None:
    async with _index() as index:
        asked: list[int] = []
        ranges = DateRanges(stand_in([], asked), index, no_whole_listing, listing_ttl=60.0)
        assert await ranges.span(WORKSPACE) is None
        assert asked == [0]
