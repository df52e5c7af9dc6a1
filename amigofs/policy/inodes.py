"""Inode numbers: which numbers name the few fixed nodes, and how a call's or a day's
number encodes it.

The root and the nodes met by name (workspaces, views, the control file) are numbered
from 1 up as they are met, and stay far below CALL_INODES. A call and its files are
numbered from the call's row in the index, SLOTS numbers apiece: the call directory
(DIR_SLOT), its files in the order of the file names (which only grows at its end),
and its entry in by-date (LINK_SLOT). The same row gives the same numbers on every
mount, and nothing is kept in memory per call to find a call from its number.

A day of by-date (by-date/<workspace>/<YYYY-MM-DD>) is numbered from its workspace's
row in the index and the date's ordinal, from DAY_INODES up: any of the 3.65 million
valid dates of a workspace may be looked up (by anyone a mount with --allow-other lets
in), so a day's number is arithmetic, like a call's, and looking days up makes
nothing that would have to be freed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

ROOT_INODE = 1
CALL_INODES = 1 << 32
SLOTS = 8
DIR_SLOT = 0
LINK_SLOT = SLOTS - 1  # the call's entry in by-date
# Slots 1 .. FILE_SLOTS: a call's files, by their position in the list of file names.
FILE_SLOTS = LINK_SLOT - 1
# Days: above every call (a call would need row 2**59 to reach them) and below 2**63,
# so that programs that read an inode as a signed 64-bit number see it whole.
DAY_INODES = 1 << 62
# Numbers per workspace: date ordinals run from 1 (0001-01-01) to 3,652,059 (9999-12-31).
LAST_ORDINAL = dt.date.max.toordinal()
DAYS_PER_WORKSPACE = 1 << 22
WORKSPACE_ROWS = 1 << 40  # workspace rows with days: (2**63 - DAY_INODES) / DAYS_PER_WORKSPACE


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
    inode = CALL_INODES + row_id * SLOTS + slot
    if row_id < 0 or not 0 <= slot < SLOTS or inode >= DAY_INODES:
        raise ValueError(f"no call inode for row {row_id}, slot {slot}")
    return inode


def file_slot(position: int) -> int:
    """The slot of the file at `position` in the list of a call's file names."""
    if not 0 <= position < FILE_SLOTS:
        raise ValueError(f"no slot for file {position}: a call has {FILE_SLOTS} at most")
    return 1 + position


def decode(inode: int) -> CallSlot | None:
    """The call slot an inode names; None for the numbers of other nodes."""
    if not CALL_INODES <= inode < DAY_INODES:
        return None
    row_id, slot = divmod(inode - CALL_INODES, SLOTS)
    return CallSlot(row_id, slot)


@dataclass(slots=True, frozen=True)
class DaySlot:
    """What a day inode names: its workspace's row in the index and the date's ordinal
    (datetime.date.toordinal)."""

    workspace_row: int
    ordinal: int


def day_inode(workspace_row: int, ordinal: int) -> int:
    """The inode of the day `ordinal` of the workspace at `workspace_row` (>= 0)."""
    if not 0 <= workspace_row < WORKSPACE_ROWS or not 0 < ordinal <= LAST_ORDINAL:
        raise ValueError(f"no day inode for workspace row {workspace_row}, day {ordinal}")
    return DAY_INODES + workspace_row * DAYS_PER_WORKSPACE + ordinal


def decode_day(inode: int) -> DaySlot | None:
    """The day an inode names; None for the numbers of other nodes."""
    if inode < DAY_INODES:
        return None
    workspace_row, ordinal = divmod(inode - DAY_INODES, DAYS_PER_WORKSPACE)
    if workspace_row >= WORKSPACE_ROWS or not 0 < ordinal <= LAST_ORDINAL:
        return None
    return DaySlot(workspace_row, ordinal)
