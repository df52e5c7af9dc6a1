"""The inode table: every inode number of the mount, and the node it names.

The one owner of inode state. The root and the nodes met by name (workspaces, the
views' directories and links, the control file) are numbered as they are met and kept
for the life of the mount (a few per shown workspace: a name no listing has is never
numbered). A call and its files are numbered from the call's row in the index, a day
of by-date from its workspace's row and its date (amigofs.policy.inodes): nothing is
kept per call or per day but a bounded cache of the rows last met, so that a number
the kernel gives back finds its call without a query. So nothing grows with the names
looked up, and the kernel's forget has nothing to free.
"""

from __future__ import annotations

import datetime as dt
import errno
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import cachetools

from amigofs.cache.index import CallIndex, CallRow
from amigofs.fs.attributes import InodeT
from amigofs.fs.errors import FsError
from amigofs.policy import inodes as numbering

ROOT_INODE = InodeT(numbering.ROOT_INODE)
# Rows of calls last met (listed, looked up), by row id.
ROWS_KEPT = 20_000

N = TypeVar("N", bound=Hashable)


class InodeTable(Generic[N]):
    """Numbers nodes and finds them again. `call_node` makes the node of a call's
    slot from its row (None: a slot that names nothing), `day_node` the node of a day
    of a workspace."""

    def __init__(
        self,
        index: CallIndex,
        root: N,
        call_node: Callable[[CallRow, numbering.CallSlot], N | None],
        day_node: Callable[[str, dt.date], N],
    ) -> None:
        self._index = index
        self._call_node = call_node
        self._day_node = day_node
        self._numbers: dict[N, InodeT] = {root: ROOT_INODE}
        self._nodes: dict[InodeT, N] = {ROOT_INODE: root}
        self._rows: cachetools.LRUCache[int, CallRow] = cachetools.LRUCache(ROWS_KEPT)
        # The workspaces days were numbered in, by row: one entry per shown workspace.
        self._day_workspaces: dict[int, str] = {}

    def number(self, node: N) -> InodeT:
        """The inode of a node numbered as met (the next number the first time)."""
        inode = self._numbers.get(node)
        if inode is None:
            inode = self._numbers[node] = InodeT(len(self._numbers) + 1)
            self._nodes[inode] = node
        return inode

    def call(self, row: CallRow, slot: int) -> InodeT:
        """The inode of one slot of a call (see amigofs.policy.inodes)."""
        self._rows[row.row_id] = row
        return InodeT(numbering.call_inode(row.row_id, slot))

    def day(self, workspace_id: str, day: dt.date) -> InodeT:
        """The inode of a day of a workspace's by-date (see amigofs.policy.inodes)."""
        row = self._index.workspace_row(workspace_id)
        self._day_workspaces[row] = workspace_id
        return InodeT(numbering.day_inode(row, day.toordinal()))

    def remember(self, row: CallRow) -> None:
        """Keeps a row met in a listing, for the numbers the kernel will give back."""
        self._rows[row.row_id] = row

    def numbered(self, inode: InodeT) -> N | None:
        """The node of an inode numbered as met, without a look in the index."""
        return self._nodes.get(inode)

    def node(self, inode: InodeT) -> N:
        """The node an inode names; ENOENT when it names nothing (any more)."""
        slot = numbering.decode(inode)
        day = numbering.decode_day(inode)
        if day is not None:
            workspace_id = self._day_workspaces.get(day.workspace_row)
            node = None if workspace_id is None else self._day_node(
                workspace_id, dt.date.fromordinal(day.ordinal)
            )  # fmt: skip
        elif slot is None:
            node = self._nodes.get(inode)
        else:
            row = self._rows.get(slot.row_id) or self._index.by_id(slot.row_id)
            node = None
            if row is not None:
                self._rows[slot.row_id] = row
                node = self._call_node(row, slot)
        if node is None:
            raise FsError(errno.ENOENT)
        return node
