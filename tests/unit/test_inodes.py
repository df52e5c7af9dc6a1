"""Inode arithmetic: every call slot has its own number, and the number gives it back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amigofs.fs.records import FILE_NAMES
from amigofs.policy.inodes import (
    CALL_INODES,
    DIR_SLOT,
    FILE_SLOTS,
    LINK_SLOT,
    ROOT_INODE,
    SLOTS,
    CallSlot,
    call_inode,
    decode,
    file_slot,
)

rows = st.integers(0, 1 << 40)
slots = st.integers(0, SLOTS - 1)


@given(rows, slots)
def test_every_call_slot_decodes_back(row_id: int, slot: int) -> None:
    assert decode(call_inode(row_id, slot)) == CallSlot(row_id, slot)


@given(rows, slots, rows, slots)
def test_two_call_slots_never_share_a_number(a: int, s: int, b: int, t: int) -> None:
    assert (call_inode(a, s) == call_inode(b, t)) == ((a, s) == (b, t))


@given(st.integers(ROOT_INODE, 1 << 31), rows, slots)
def test_a_numbered_node_never_collides_with_a_call(small: int, row_id: int, slot: int) -> None:
    assert decode(small) is None
    assert call_inode(row_id, slot) != small


def test_every_file_name_has_a_slot_apart_from_the_directory_and_the_link() -> None:
    assert len(FILE_NAMES) <= FILE_SLOTS
    file_slots = [file_slot(i) for i in range(len(FILE_NAMES))]
    assert DIR_SLOT not in file_slots and LINK_SLOT not in file_slots
    assert len(set(file_slots)) == len(FILE_NAMES)
    for position, slot in enumerate(file_slots):
        assert CallSlot(0, slot).file_position == position
    assert CallSlot(0, DIR_SLOT).file_position is None
    assert CallSlot(0, LINK_SLOT).file_position is None


def test_the_numbering_is_the_one_kept_on_disk_by_the_kernel_and_by_earlier_mounts() -> None:
    # Row 3's inbound.wav: what earlier mounts gave it (CALL_INODES + row*8 + 1 + position).
    assert call_inode(3, file_slot(0)) == CALL_INODES + 3 * 8 + 1


@pytest.mark.parametrize("row_id, slot", [(-1, 0), (0, -1), (0, SLOTS)])
def test_out_of_range_slots_have_no_number(row_id: int, slot: int) -> None:
    with pytest.raises(ValueError):
        call_inode(row_id, slot)
