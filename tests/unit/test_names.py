"""Names that cost nothing to make up (days numbered by arithmetic, other users' names asked
of the index alone), folder times held for a mount, and `.`/`..` before a listing's entries
(issues 19 and 20), without a mount."""

from __future__ import annotations

import datetime as dt
import errno
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from amigofs.fs.attributes import Attributes, DirEntry, InodeT
from amigofs.fs.errors import FsError
from amigofs.fs.handles import DOTS, OpenDir, Snapshot
from amigofs.fs.namespace import ROOT_INODE
from amigofs.fs.workspaces import UNKNOWN_TIME_NS, HeldTime
from amigofs.policy.inodes import (
    CALL_INODES,
    DAY_INODES,
    LAST_ORDINAL,
    SLOTS,
    WORKSPACE_ROWS,
    DaySlot,
    call_inode,
    day_inode,
    decode,
    decode_day,
)
from tests.unit.test_nodes import MAY_1, SALES, SUPPORT, _sid, _tree

workspace_rows = st.integers(0, WORKSPACE_ROWS - 1)
ordinals = st.integers(1, LAST_ORDINAL)
call_rows = st.integers(0, 1 << 50)

# --- the numbers of days ------------------------------------------------------------


@given(workspace_rows, ordinals)
def test_every_day_decodes_back_and_is_no_call(workspace_row: int, ordinal: int) -> None:
    inode = day_inode(workspace_row, ordinal)
    assert decode_day(inode) == DaySlot(workspace_row, ordinal)
    assert decode(inode) is None
    # Whole as a signed 64-bit number, as some programs read st_ino.
    assert DAY_INODES <= inode < 1 << 63


@given(workspace_rows, ordinals, workspace_rows, ordinals)
def test_two_days_never_share_a_number(a: int, d: int, b: int, e: int) -> None:
    assert (day_inode(a, d) == day_inode(b, e)) == ((a, d) == (b, e))


@given(call_rows, st.integers(0, SLOTS - 1), st.integers(1, CALL_INODES - 1))
def test_calls_and_numbered_nodes_are_no_days(row_id: int, slot: int, small: int) -> None:
    assert decode_day(call_inode(row_id, slot)) is None
    assert decode_day(small) is None


def test_every_valid_date_has_a_number_and_nothing_else_does() -> None:
    assert decode_day(day_inode(0, dt.date.min.toordinal())) == DaySlot(0, 1)
    assert decode_day(day_inode(7, dt.date.max.toordinal())) == DaySlot(7, LAST_ORDINAL)
    for workspace_row, ordinal in [(-1, 1), (0, 0), (0, LAST_ORDINAL + 1), (WORKSPACE_ROWS, 1)]:
        with pytest.raises(ValueError):
            day_inode(workspace_row, ordinal)
    # The numbers between two workspaces' days name none.
    assert decode_day(DAY_INODES) is None
    assert decode_day(day_inode(0, LAST_ORDINAL) + 1) is None
    # A call never reaches the days: its number is refused first.
    with pytest.raises(ValueError):
        call_inode((DAY_INODES - CALL_INODES) // SLOTS, 0)


# --- `.` and `..` -----------------------------------------------------------------


def _entry(n: int) -> DirEntry:
    return DirEntry(f"e{n}", Attributes(InodeT(100 + n), False, 0, 0, 1, 0.0))


@given(st.integers(0, 40), st.lists(st.integers(1, 7), min_size=1, max_size=60))
def test_dots_come_first_then_every_entry_once_whatever_the_kernel_takes(
    count: int, takes: list[int]
) -> None:
    """The kernel takes as many entries as fit, then asks again from the last offset kept."""
    opened = OpenDir(InodeT(5), Snapshot([_entry(n) for n in range(count)]), InodeT(1))

    async def read_all() -> list[DirEntry]:
        seen: list[DirEntry] = []
        offset = 0
        for take in takes * (count + 3):
            kept = (await opened.read_with_dots(offset))[:take]
            if not kept:
                break
            assert all(later > offset for later, _ in kept)
            seen += [entry for _, entry in kept]
            offset = kept[-1][0]
        return seen

    seen = trio.run(read_all)
    assert [entry.name for entry in seen] == [*DOTS, *(f"e{n}" for n in range(count))]
    assert [entry.attrs.inode for entry in seen[:2]] == [5, 1]
    assert all(entry.attrs.is_dir for entry in seen[:2])


# --- folder times -------------------------------------------------------------------

MOUNT_START = 1_000_000
times = st.one_of(st.none(), st.integers(0, 2 * MOUNT_START))


@given(times, st.lists(times, max_size=8))
def test_a_folder_time_never_moves_back_and_moves_only_for_something_new(
    first: int | None, later: list[int | None]
) -> None:
    held = HeldTime.first_look(first, MOUNT_START)
    shown = held.shown(first)
    assert shown == (UNKNOWN_TIME_NS if first is None else first)
    newest = first
    for value in later:
        # The index's newest only grows (or stays unknown).
        if value is not None:
            newest = value if newest is None else max(newest, value)
        now = held.shown(newest)
        assert now >= shown
        if now != shown:
            # A move: to the newest call, newer than the first look and, if that knew
            # nothing, than the mount's start (not a call the listing merely revealed).
            assert newest is not None and now == newest
            assert newest > (MOUNT_START if first is None else first)
        shown = now


# --- through the tree ---------------------------------------------------------------


async def test_days_are_numbered_from_their_date_and_found_again(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        days = await tree.at("by-date", SALES)
        first = await tree.ns.lookup(days.inode, "1999-12-31")
        for n in range(2000):  # no table to grow: each is its own number
            day = dt.date(2000, 1, 1) + dt.timedelta(days=n)
            attrs = await tree.ns.lookup(days.inode, day.isoformat())
            assert decode_day(attrs.inode) is not None
        assert decode_day(first.inode) is not None
        again = await tree.ns.getattr(first.inode)
        assert again.inode == first.inode and again.is_dir
        assert again.mtime_ns == int(dt.datetime(1999, 12, 31, tzinfo=dt.UTC).timestamp()) * 10**9
        assert tree.ns.describe(first.inode) == f"by-date/{SALES}/1999-12-31"
        assert (await tree.ns.lookup(days.inode, "2024-05-01")).inode != first.inode
    # The same day, the same number, on the next mount of the same cache.
    async with _tree(tmp_path) as tree:
        days = await tree.at("by-date", SALES)
        assert (await tree.ns.lookup(days.inode, "1999-12-31")).inode == first.inode


async def test_other_users_see_only_days_and_calls_the_index_has(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        days = await tree.at("by-date", SALES)
        for n in range(50):
            made_up = (dt.date(2001, 1, 1) + dt.timedelta(days=n)).isoformat()
            with pytest.raises(FsError) as missing:
                await tree.ns.lookup(days.inode, made_up, owner=False)
            assert missing.value.errno == errno.ENOENT
        # The workspace's span of calls (one page here), not a date-filtered page a name.
        assert tree.client.pages == 1
        day = await tree.ns.lookup(days.inode, "2024-05-01", owner=False)
        entry = f"{MAY_1:%H-%M-%S}_{_sid(1)}"
        # A day's names are the index's: there once the day is listed (its own page).
        with pytest.raises(FsError):
            await tree.ns.lookup(day.inode, entry, owner=False)
        assert entry in await tree.listing("by-date", SALES, "2024-05-01")
        assert tree.client.pages == 2
        assert (await tree.ns.lookup(day.inode, entry, owner=False)).link is not None
        with pytest.raises(FsError):
            await tree.ns.lookup(day.inode, f"{MAY_1:%H-%M-%S}_{_sid(99)}", owner=False)
        # Days no call can have (before 1677) ask nobody, the owner's listing included.
        old = await tree.ns.lookup(days.inode, "1000-01-01")
        assert await tree.listing("by-date", SALES, "1000-01-01") == []
        with pytest.raises(FsError):
            await tree.ns.lookup(days.inode, "1000-01-01", owner=False)
        assert tree.client.pages == 2 and old.is_dir
        # A day of a workspace not listed yet: its names in a day come from the index
        # alone for others (no date-filtered page for them).
        support = await tree.at("by-date", SUPPORT)
        owner_day = await tree.ns.lookup(support.inode, "2024-05-03")
        asked = tree.client.pages
        with pytest.raises(FsError):
            await tree.ns.lookup(owner_day.inode, f"10-00-00_{_sid(98)}", owner=False)
        assert tree.client.pages == asked


async def test_a_listing_read_by_the_kernel_has_dot_and_dot_dot(tmp_path: Path) -> None:
    async with _tree(tmp_path) as tree:
        for path, parent in [
            ((), ()),
            ((SALES,), ()),
            ((SALES, _sid(1)), (SALES,)),
            (("by-date",), ()),
            (("by-date", SALES), ("by-date",)),
            (("by-date", SALES, "2024-05-01"), ("by-date", SALES)),
            (("by-name",), ()),
        ]:
            inode = (await tree.at(*path)).inode
            handle = await tree.ns.opendir(inode)
            entries = await tree.ns.readdir(handle, 0, dots=True)
            tree.ns.releasedir(handle)
            dots = {entry.name: entry.attrs.inode for _, entry in entries[:2]}
            parent_inode = (await tree.at(*parent)).inode if path else ROOT_INODE
            assert dots == {".": inode, "..": parent_inode}, path
            assert [e.name for _, e in entries[2:]] == await tree.listing(*path), path
