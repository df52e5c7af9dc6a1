"""The root's workspace listing (KeptListing): served at once, refreshed in the
background after its TTL, a failing refresh asked again only a TTL later."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from amigofs.api import errors as api
from amigofs.fs.workspaces import KeptListing

TTL = 60.0


class _Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    async def __call__(self) -> list[str]:
        self.calls += 1
        if self.failing:
            raise api.TransportError("connection refused")
        return [f"listing {self.calls}"]


async def _failing_after_one_load(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> tuple[_Loader, KeptListing[list[str]]]:
    """A listing loaded once, its loader failing since, and its TTL past."""
    load = _Loader()
    listing = KeptListing(load, TTL, "workspace listing")
    await listing.get(nursery)
    load.failing = True
    mock_clock.jump(TTL + 1)
    return load, listing


async def test_a_listing_is_kept_for_its_ttl_then_refreshed_behind_the_stale_one(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    load = _Loader()
    listing = KeptListing(load, TTL, "workspace listing")
    assert await listing.get(nursery) == ["listing 1"]
    mock_clock.jump(TTL / 2)
    assert await listing.get(nursery) == ["listing 1"]
    mock_clock.jump(TTL)
    assert await listing.get(nursery) == ["listing 1"]  # stale, while one refresh runs
    await trio.testing.wait_all_tasks_blocked()
    assert await listing.get(nursery) == ["listing 2"]
    assert load.calls == 2


async def test_a_failing_refresh_is_tried_again_only_a_ttl_later(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    load, listing = await _failing_after_one_load(mock_clock, nursery)
    for _ in range(5):
        assert await listing.get(nursery) == ["listing 1"]  # the cached one, kept
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(1)
    assert load.calls == 2  # one request for the failure, not one per look
    assert "refresh failed, keeping the cached listing" in caplog.text
    load.failing = False
    mock_clock.jump(TTL)
    await listing.get(nursery)
    await trio.testing.wait_all_tasks_blocked()
    assert await listing.get(nursery) == ["listing 3"]


async def test_invalidate_makes_the_next_look_refresh_even_after_a_failure(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    load, listing = await _failing_after_one_load(mock_clock, nursery)
    await listing.get(nursery)
    await trio.testing.wait_all_tasks_blocked()
    load.failing = False
    listing.invalidate()  # SIGHUP
    await listing.get(nursery)
    await trio.testing.wait_all_tasks_blocked()
    assert await listing.get(nursery) == ["listing 3"]


async def test_a_listing_kept_by_an_earlier_mount_is_shown_at_once_then_refreshed(
    nursery: trio.Nursery,
) -> None:
    load = _Loader()
    persisted: list[list[str]] = []
    listing = KeptListing(
        load, TTL, "workspace listing", restore=lambda: ["from disk"], persist=persisted.append
    )
    assert await listing.get(nursery) == ["from disk"]
    assert load.calls == 0  # no wait on the API
    # Joins the refresh under way (it is writing the listing to disk in a thread).
    assert await listing.refresh() == ["listing 1"]
    assert load.calls == 1
    assert persisted == [["listing 1"]]


async def test_a_first_listing_that_fails_fails_the_look(nursery: trio.Nursery) -> None:
    load = _Loader()
    load.failing = True
    listing = KeptListing(load, TTL, "workspace listing")
    with pytest.raises(api.TransportError):
        await listing.get(nursery)
    assert listing.cached is None
