"""WorkspaceSync (amigofs.fs.listing) against the emulator served in-process, with the
real client and a call index in a temporary directory: which calls end up indexed,
and how many list requests that took. No mount."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from amigofs.api import errors as api
from amigofs.api.client import PAGE_LIMIT, CallPage
from amigofs.cache.index import CallIndex
from amigofs.fs.listing import PARALLEL_PAGES, WorkspaceSync, list_filtered
from tests.unit.inprocess import Served, served_emulator

Checked = Callable[[str, Callable[[], Awaitable[CallPage]]], Awaitable[CallPage]]


async def passed(workspace_id: str, request: Callable[[], Awaitable[CallPage]]) -> CallPage:
    """What the mount's WorkspaceAccess.checked does for a workspace it may list."""
    return await request()


@pytest.fixture
def index(tmp_path: Path) -> CallIndex:
    index = CallIndex(tmp_path)
    index.open()
    return index


def workspace_sync(served: Served, index: CallIndex, checked: Checked = passed) -> WorkspaceSync:
    return WorkspaceSync(
        served.workspace_ids[0],
        client=served.client,
        index=index,
        nursery=served.nursery,
        checked=checked,
        listing_ttl=3600.0,
        failure_memory=60.0,
    )


async def until_complete(sync: WorkspaceSync) -> None:
    """As a listing of the directory waits: for the whole listing, or for its error."""
    with trio.fail_after(30):
        await sync.wait_complete()


def indexed(index: CallIndex, workspace_id: str) -> list[str]:
    names: list[str] = []
    after = 0
    while rows := index.after(workspace_id, after, 500, listed_only=True):
        names.extend(row.call_sid for row in rows)
        after = rows[-1].row_id
    return names


def assert_each_once(names: list[str], expected: list[str]) -> None:
    doubled = [name for name, count in Counter(names).items() if count > 1]
    assert not doubled
    assert sorted(names) == sorted(expected)


async def test_a_sync_indexes_every_call_once_reading_each_page_once(index: CallIndex) -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=2_345) as served:
        workspace_id = served.workspace_ids[0]
        sync = workspace_sync(served, index)
        await until_complete(sync)
        assert_each_once(indexed(index, workspace_id), served.listed_sids(workspace_id))
        pages = -(-len(served.app.data.calls(workspace_id)) // PAGE_LIMIT)
        assert served.requests("list-calls") == sync.requests == pages
        # A remount's sync, on the index that holds the fresh listing: no request.
        again = workspace_sync(served, index)
        again.ensure()
        assert again.complete
        assert served.requests("list-calls") == pages


async def test_calls_arriving_after_the_first_page_are_indexed_once(index: CallIndex) -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=1_500) as served:
        workspace_id = served.workspace_ids[0]

        async def arrivals_after_the_first(
            workspace_id: str, request: Callable[[], Awaitable[CallPage]]
        ) -> CallPage:
            page = await request()
            if served.requests("list-calls") == 1:
                served.app.data.add_calls(37, workspace_id)  # every later offset shifts
            return page

        await until_complete(workspace_sync(served, index, arrivals_after_the_first))
        assert_each_once(indexed(index, workspace_id), served.listed_sids(workspace_id))


async def test_new_calls_after_a_sync_take_a_few_pages_of_refresh(index: CallIndex) -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=1_500) as served:
        workspace_id = served.workspace_ids[0]
        sync = workspace_sync(served, index)
        await until_complete(sync)
        served.app.stats.reset()
        served.app.data.add_calls(150, workspace_id)
        sync.force()  # SIGHUP: the next listing shows what the API has now
        await until_complete(sync)
        assert_each_once(indexed(index, workspace_id), served.listed_sids(workspace_id))
        # Pages from the newest end until one is all known: 3 for 150 new calls.
        assert served.requests("list-calls") == 3


def failing_once(request_number: int, failure: Exception) -> Checked:
    """Lets list requests through, but the `request_number`th fails with `failure`."""
    asked = 0

    async def checked(workspace_id: str, request: Callable[[], Awaitable[CallPage]]) -> CallPage:
        nonlocal asked
        asked += 1
        if asked == request_number:
            raise failure
        return await request()

    return checked


async def test_a_failed_sync_is_remembered_then_goes_on_where_it_stopped(
    index: CallIndex,
) -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=4_000) as served:
        workspace_id = served.workspace_ids[0]
        pages = -(-len(served.app.data.calls(workspace_id)) // PAGE_LIMIT)
        failure = api.ServerError("list-calls: 503 after the retries", status=503)
        sync = workspace_sync(served, index, failing_once(10, failure))
        with pytest.raises(Exception) as caught:
            await until_complete(sync)
        assert sync.error is caught.value
        before = served.requests("list-calls")
        # Within the failure's moment, readers get the same error and no request is made.
        sync.ensure()
        await trio.testing.wait_all_tasks_blocked()
        assert sync.error is caught.value
        assert served.requests("list-calls") == before
        # A new listing of the directory tries again, and reads only what it lacks.
        await until_complete(sync)
        assert sync.error is None
        assert_each_once(indexed(index, workspace_id), served.listed_sids(workspace_id))
        assert served.requests("list-calls") <= pages + PARALLEL_PAGES


async def test_a_page_failing_mid_sync_fails_the_listing_with_the_apis_error(
    index: CallIndex,
) -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=1_000) as served:
        refused = api.AuthError("list-calls: 403 Forbidden", status=403)
        sync = workspace_sync(served, index, failing_once(5, refused))
        with pytest.raises(api.AuthError):
            await until_complete(sync)


# --- issue 19: pages shorter than asked for, and calls arriving all along -------------


async def test_pages_shorter_than_asked_for_give_the_whole_listing_in_one_round(
    index: CallIndex,
) -> None:
    # A server answering 50 rows a page for a limit of 100: its continuation tokens say
    # so, and the pages are read 50 apart, at once.
    async with served_emulator(workspaces=1, calls_per_workspace=1_234, page_rows=50) as served:
        workspace_id = served.workspace_ids[0]
        sync = workspace_sync(served, index)
        await until_complete(sync)
        assert_each_once(indexed(index, workspace_id), served.listed_sids(workspace_id))
        assert served.requests("list-calls") == -(-len(served.app.data.calls(workspace_id)) // 50)
        # And a refresh pages through the new calls by the server's tokens too.
        served.app.data.add_calls(170, workspace_id)
        sync.force()
        await until_complete(sync)
        assert_each_once(indexed(index, workspace_id), served.listed_sids(workspace_id))


async def test_a_day_of_short_pages_is_listed_whole() -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=3_000, page_rows=30) as served:
        workspace_id = served.workspace_ids[0]
        calls = served.app.data.calls(workspace_id)
        day = calls[len(calls) // 2].started_at.date()
        expected = [
            c.call_sid
            for c in calls
            if c.started_at.date() == day and c.call_sid is not None and c.recording is not None
        ]
        assert len(expected) > 30  # more than a page

        def page(offset: int) -> Awaitable[CallPage]:
            return served.client.list_calls_page(workspace_id, offset, date_from=day, date_to=day)

        listed = await list_filtered(page)
        assert_each_once([c.call_sid for c in listed], expected)


def arriving(served: Served, per_request: int) -> Checked:
    """Lets list requests through, `per_request` new calls arriving with each."""

    async def checked(workspace_id: str, request: Callable[[], Awaitable[CallPage]]) -> CallPage:
        served.app.data.add_calls(per_request, workspace_id)
        return await request()

    return checked


@pytest.mark.parametrize("per_request", [1, 3])
async def test_calls_arriving_with_every_request_leave_a_complete_listing(
    index: CallIndex, per_request: int
) -> None:
    # Calls arriving with every request, PARALLEL_PAGES requests at once: up to 48 new
    # calls a round (the README's 5 calls a second at 50 ms a request is 4 a round).
    async with served_emulator(workspaces=1, calls_per_workspace=2_000) as served:
        sync = workspace_sync(served, index, arriving(served, per_request))
        await until_complete(sync)
        assert_listed_but_the_last_rounds(served, index, per_request)


def assert_listed_but_the_last_rounds(served: Served, index: CallIndex, per_request: int) -> None:
    """Every call indexed once, but for those that arrived during the sync's last round
    (`per_request` calls arriving with each of its requests)."""
    workspace_id = served.workspace_ids[0]
    names = indexed(index, workspace_id)
    assert len(names) == len(set(names))
    missing = set(served.listed_sids(workspace_id)) - set(names)
    assert len(missing) <= per_request * PARALLEL_PAGES
    assert missing <= set(served.listed_sids(workspace_id)[: len(missing)])


async def test_a_listing_that_shifted_too_fast_leaves_nothing_that_fails_the_next_try(
    index: CallIndex,
) -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=200) as served:
        # More calls arriving with each request than a page holds: no round can cover.
        sync = workspace_sync(served, index, arriving(served, PAGE_LIMIT + 10))
        with pytest.raises(api.ProtocolError, match="kept shifting"):
            await until_complete(sync)
        # The arrivals calm down to a call with every request: the next try (a
        # remount's, on the same index) lists every call.
        again = workspace_sync(served, index, arriving(served, 1))
        await until_complete(again)
        assert_listed_but_the_last_rounds(served, index, 1)


async def test_a_listing_completes_while_calls_arrive_50_a_second(index: CallIndex) -> None:
    # Ten times the 5 calls a second a busy workspace receives, 20 ms a request.
    async with served_emulator(
        workspaces=1, calls_per_workspace=3_000, new_calls_per_second=50.0, latency=0.02
    ) as served:
        workspace_id = served.workspace_ids[0]
        sync = workspace_sync(served, index)
        before = len(served.app.data.calls(workspace_id))
        await until_complete(sync)
        calls = served.app.data.calls(workspace_id)
        assert len(calls) > before  # calls arrived during the sync
        names = indexed(index, workspace_id)
        assert len(names) == len(set(names))
        arrived = len(calls) - before
        listed_then = [c.call_sid for c in calls[arrived:] if c.recording is not None]
        assert set(listed_then) <= set(names) <= set(served.listed_sids(workspace_id))
