"""Inode numbers: which numbers name the few fixed nodes, and how a call's number encodes it.

The root and the nodes met by name (workspaces, views, the control file) are numbered
from 1 up as they are met, and stay far below CALL_INODES. A call and its files are
numbered from the call's row in the index, SLOTS numbers apiece: the call directory
(DIR_SLOT), its files in the order of the file names (which only grows at its end),
and its entry in by-date (LINK_SLOT). The same row gives the same numbers on every
mount, and nothing is kept in memory per call to find a call from its number.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT_INODE = 1
CALL_INODES = 1 << 32
SLOTS = 8
DIR_SLOT = 0
LINK_SLOT = SLOTS - 1  # the call's entry in by-date
# Slots 1 .. FILE_SLOTS: a call's files, by their position in the list of file names.
FILE_SLOTS = LINK_SLOT - 1


@dataclass(slots=True, frozen=True)
class CallSlot:
    """What a call inode names: the call's row in the index and one of its slots."""

    row_id: int
    slot: int

    @property
    def file_position(self) -> int | None:
        """The position of the file it names in the file names; None if not a file."""
        return self.slot - 1 if 1 <= self.slot <= FILE_SLOTS else None


def call_inode(row_id: int, slot: int) -> int:
    """The inode of one slot of the call at `row_id` (a row id of the index: >= 0)."""
    if row_id < 0 or not 0 <= slot < SLOTS:
        raise ValueError(f"no call inode for row {row_id}, slot {slot}")
    return CALL_INODES + row_id * SLOTS + slot


def file_slot(position: int) -> int:
    """The slot of the file at `position` in the list of a call's file names."""
    if not 0 <= position < FILE_SLOTS:
        raise ValueError(f"no slot for file {position}: a call has {FILE_SLOTS} at most")
    return 1 + position


def decode(inode: int) -> CallSlot | None:
    """The call slot an inode names; None for the numbers below CALL_INODES."""
    if inode < CALL_INODES:
        return None
    row_id, slot = divmod(inode - CALL_INODES, SLOTS)
    return CallSlot(row_id, slot)
