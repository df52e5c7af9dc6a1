"""Each block's state machine (amigofs.cache.blocks): one owner of what a block is."""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st

from amigofs.cache.block_format import footprint
from amigofs.cache.blocks import BlockFile, BlockState, BlockTable, Fetch

REL = "blocks.v2/ws/call/a.wav.1000"


def file(length: int = 100, *, verified: bool = True) -> BlockFile:
    return BlockFile(length, 0, verified=verified, served=False)


async def test_a_block_goes_from_absent_through_fetching_to_ready_and_back() -> None:
    table = BlockTable()
    where = (REL, 0)
    assert table.state(where) is BlockState.ABSENT
    fetch = Fetch(0, 2)
    table.fetching(REL, fetch)
    assert table.state(where) is table.state((REL, 1)) is BlockState.FETCHING
    table.stored(where, file())
    assert table.state(where) is BlockState.READY and table.available(where)
    table.fetched(REL, fetch)
    assert table.state((REL, 1)) is BlockState.ABSENT  # the fetch ended without it
    table.lost(where)
    assert table.state(where) is BlockState.ABSENT and len(table) == 0


async def test_a_left_block_is_unchecked_then_checking_then_ready() -> None:
    table = BlockTable()
    where = (REL, 3)
    left = file(verified=False)
    table.stored(where, left)
    assert table.state(where) is BlockState.UNCHECKED and table.available(where)
    table.checking(where, trio.Event())
    assert table.state(where) is BlockState.CHECKING
    left.verified = True
    table.checked(where)
    assert table.state(where) is BlockState.READY


def test_pins_hold_a_block_until_the_last_reader_lets_go() -> None:
    table = BlockTable()
    table.stored((REL, 0), file())
    table.pin(REL, 0, 2, 1)
    table.pin(REL, 0, 2, 1)
    table.pin(REL, 0, 2, -1)
    assert [pinned for _w, _f, pinned in table.files()] == [True]
    table.pin(REL, 0, 2, -1)
    assert [pinned for _w, _f, pinned in table.files()] == [False]
    assert len(table) == 1  # block 1 (pinned while absent) is gone with its pins


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 300_000), st.booleans())))
def test_the_table_counts_what_its_files_take_on_disk(
    steps: list[tuple[int, int, bool]],
) -> None:
    table = BlockTable()
    expected: dict[int, int] = {}
    for index, length, store in steps:
        if store:
            table.stored((REL, index), file(length))
            expected[index] = length
        else:
            table.lost((REL, index))
            expected.pop(index, None)
    assert table.file_bytes == sum(footprint(n) for n in expected.values())
    assert sorted(w[1] for w, _f, _p in table.files()) == sorted(expected)


def test_blocks_held_in_memory_are_bounded_and_released_with_their_file() -> None:
    table = BlockTable(memory_blocks=3)
    for index in range(5):
        table.hold((REL, index), bytes([index]))
    assert [table.memory_of((REL, i)) for i in range(5)] == [None, None, b"\2", b"\3", b"\4"]
    table.hold(("other", 0), b"x")  # evicts the least recently used: block 2
    assert table.memory_of((REL, 2)) is None
    table.release_memory(REL)
    assert not any(table.available((REL, i)) for i in range(5))
    assert table.memory_of(("other", 0)) == b"x" and table.holds_memory
