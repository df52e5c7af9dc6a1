"""Links with the records loaded ahead only for a walker that reads what it visits
(amigofs.policy.links_ahead)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from amigofs.policy.links_ahead import REACH, LinksAhead


def test_nothing_read_no_links_ahead() -> None:
    links = LinksAhead()
    assert [links.load() for _ in range(3 * REACH)] == [False] * 3 * REACH


@given(st.lists(st.integers(0, REACH - 1), min_size=1, max_size=50))
def test_a_walker_reading_each_call_keeps_getting_links(loads_between_reads: list[int]) -> None:
    links = LinksAhead()
    for loads in loads_between_reads:
        links.read()
        assert all(links.load() for _ in range(loads))


@given(st.integers(0, 5 * REACH))
def test_a_stat_walk_after_reads_pays_at_most_reach_links(loads: int) -> None:
    links = LinksAhead()
    links.read()
    with_links = sum(links.load() for _ in range(loads))
    assert with_links == min(loads, REACH)
    links.read()  # reads again: links again
    assert links.load()
