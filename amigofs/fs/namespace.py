"""The tree: MOUNT/<workspace_id>/<call_sid>/{inbound.wav, outbound.wav, metadata.json}.

The entry points the FUSE adapter calls, by inode and by handle: each finds its node
in the inode table (amigofs.fs.inodes) and asks it (amigofs.fs.nodes), or its handle
in the handle table (amigofs.fs.handles). Knows nothing of pyfuse3: the adapter turns
its answers into FUSE replies.

A workspace's calls live in the call index on disk (amigofs.cache.index), filled
by a sync the mount owns (amigofs.fs.listing): a workspace directory lists from
the index as the sync fills it, never waiting for the whole listing, and a call
looked up by its SID costs that call's own requests only. A call's inode numbers
come from its row in the index (stable across remounts); nothing grows in memory
with the number of calls.

Tasks started in the background (listing refreshes, loading ahead) log what
goes wrong, a bug with its traceback, and end: none may end the mount.
"""

from __future__ import annotations

import errno
import logging
import os
import time

import trio

from amigofs.api import errors as api
from amigofs.api.client import PlatformClient
from amigofs.cache.index import CallIndex
from amigofs.cache.meta import MetaStore
from amigofs.cache.store import exact_reads
from amigofs.fs.attributes import Attributes, DirEntry, InodeT
from amigofs.fs.calls import Calls
from amigofs.fs.date_range import DateRanges, api_pages
from amigofs.fs.errors import FsError
from amigofs.fs.handles import FileHandleT, HandleTable, OpenDir, OpenFile
from amigofs.fs.inodes import ROOT_INODE, InodeTable
from amigofs.fs.nodes import CONTROL_NAME, NamespaceConfig, Node, Root, Tree
from amigofs.fs.records import RecordingSource
from amigofs.fs.views import Days
from amigofs.fs.walk import WalkPrefetch
from amigofs.fs.workspaces import Workspaces
from amigofs.fs.xattrs import XATTR_PREFIX, not_ours_errno

__all__ = [
    "CONTROL_NAME",
    "ROOT_INODE",
    "Attributes",
    "DirEntry",
    "FileHandleT",
    "InodeT",
    "Namespace",
    "NamespaceConfig",
]

log = logging.getLogger(__name__)


class Namespace:
    def __init__(
        self,
        client: PlatformClient,
        source: RecordingSource,
        nursery: trio.Nursery,
        config: NamespaceConfig,
        meta: MetaStore | None = None,
        *,
        index: CallIndex,
    ) -> None:
        self._source = source
        days = Days.named(config.timezone)
        self._calls = Calls(
            client,
            source,
            nursery,
            index,
            days,
            listing_ttl=config.listing_ttl,
            negative_ttl=config.negative_ttl,
            failure_memory=config.failure_memory,
            max_records=config.max_records,
            records_in_flight=config.records_in_flight,
        )
        self._workspaces = Workspaces(
            client,
            nursery,
            index,
            meta,
            listed=config.workspaces,
            identity=config.identity,
            listing_ttl=config.listing_ttl,
            mount_time_ns=time.time_ns(),
        )
        self._date_ranges = DateRanges(
            api_pages(client, source.access.checked),
            index,
            self._calls.wait_complete,
            listing_ttl=config.listing_ttl,
        )
        tree = Tree(config, index, self._calls, self._workspaces, days, self._date_ranges)
        self._inodes: InodeTable[Node] = InodeTable(index, Root(tree), tree.node_of, tree.day_node)
        tree.inodes = self._inodes
        # A stored file replaced on the server: the kernel's pages of its call's audio
        # files go (see RecordingSource.on_stale_pages).
        source.inodes_of = lambda key: tree.audio_inodes(key.workspace_id, key.call_sid)
        self._handles = HandleTable()
        self.walk: WalkPrefetch | None = None
        if config.walk_room is not None:
            self.walk = WalkPrefetch(
                index,
                lambda ws, sid: self._calls.record(ws, sid, ahead=True),
                self._calls.prefetch_stored,
                nursery,
                room=config.walk_room,
            )

    # --- nodes ---------------------------------------------------------------------

    async def lookup(self, parent: InodeT, name: str, *, owner: bool = True) -> Attributes:
        """`owner`: asked by the mount's owner. Others (with --allow-other) get only the
        calls the listing has, and the days by-date lists (its span of calls): a lookup
        of an unlisted call or of any day costs requests on the owner's key and rate
        limit, and made-up names must not run those up. (Whoever asks, a name that does not
        exist leaves nothing behind: see amigofs.fs.inodes.)"""
        return await self._inodes.node(parent).lookup(name, owner=owner)

    async def getattr(self, inode: InodeT) -> Attributes:
        return await self._inodes.node(inode).attrs()

    async def readlink(self, inode: InodeT) -> str:
        attrs = await self.getattr(inode)
        if attrs.link is None:
            raise FsError(errno.EINVAL)
        return attrs.link

    def xattr_names(self, inode: InodeT) -> tuple[str, ...]:
        """The full names of an inode's extended attributes: user.amigo.* of a call
        directory or audio file, none elsewhere. Known without loading anything (see
        amigofs.fs.xattrs): coreutils >= 9.6 lists them for every entry `ls -l` shows."""
        return self._inodes.node(inode).xattr_names()

    async def getxattr(self, inode: InodeT, name: str) -> bytes:
        """One attribute's value, from the call's metadata (loaded once per mount, as
        listing the directory does). Only our names cost a look at it: the kernel asks
        for ACLs and security labels on every `ls -l`, and those must stay free."""
        if not name.startswith(XATTR_PREFIX):
            raise FsError(not_ours_errno(os.fsencode(name)))
        found = await self._inodes.node(inode).xattr(name)
        if found is None:
            raise FsError(errno.ENODATA)
        return found

    def direct_io(self, inode: InodeT) -> bool:
        """Whether the kernel must not cache the file's pages nor trust its size:
        the control file's content is made anew at each open."""
        node = self._inodes.numbered(inode)
        return node is not None and node.direct_io

    def describe(self, inode: InodeT) -> str:
        """The path of an inode below the mount, for log lines ("ws/call/inbound.wav");
        its number when it names nothing (any more)."""
        try:
            node: Node = self._inodes.node(inode)
        except FsError:
            return f"inode {inode}"
        return node.path

    def describe_handle(self, handle: FileHandleT) -> str:
        """The path an open handle was opened on, for log lines."""
        inode = self._handles.inode(handle)
        return f"handle {handle}" if inode is None else self.describe(inode)

    def drop_listings(self) -> None:
        """Makes the next access list workspaces and calls again (SIGHUP)."""
        self._workspaces.invalidate()
        self._calls.drop_listings()
        self._date_ranges.drop()

    # --- directory handles -------------------------------------------------------------

    async def opendir(self, inode: InodeT) -> FileHandleT:
        node = self._inodes.node(inode)
        listing = await node.opendir()
        parent = self._inodes.number(node.parent)
        return self._handles.open_dir(OpenDir(inode, listing, parent))

    async def readdir(
        self, handle: FileHandleT, start: int, *, dots: bool = False
    ) -> list[tuple[int, DirEntry]]:
        """Entries after offset `start`, each with its own offset; `dots`: with `.` and
        `..` first, as a directory read through the kernel has them."""
        opened = self._handles.dir(handle)
        return await (opened.read_with_dots(start) if dots else opened.listing.read(start))

    def releasedir(self, handle: FileHandleT) -> None:
        self._handles.release_dir(handle)

    # --- file handles ------------------------------------------------------------------

    async def open(self, inode: InodeT) -> FileHandleT:
        return self._handles.open_file(await self._inodes.node(inode).open(inode))

    async def read(
        self, handle: FileHandleT, offset: int, size: int
    ) -> bytes | bytearray | memoryview:
        opened = self._handles.file(handle)
        if opened.record is not None and self._calls.revoked(opened.record.workspace_id):
            await self._calls.allowed(opened.record.workspace_id)
        # When a read fails for want of the server, the kernel at once asks again,
        # through the same handle, for the page it could not get; the same answer
        # keeps the program's read(2) within one deadline, not two.
        failed = opened.failed.recent(trio.current_time())
        if failed is not None:
            raise failed
        ahead = opened.readahead.on_read(offset, size, opened.file.size)
        if ahead is not None:
            self._source.prefetch(opened.file, *ahead)
        if opened.whole is not None:
            opened.whole.begin()
        try:
            # A first read or a seek fetches what it asks, not blocks: a program
            # looking at the file (`file`, a preview) may read no more. Not call.wav's:
            # its reads take the two files' bytes in pieces of their own, which the
            # files' readers would fetch again as blocks.
            exact = not opened.readahead.in_order and opened.file.stereo is None
            with exact_reads(exact):
                data = await self._source.read_checked(opened, offset, size, self._calls.reload)
        except (api.TransportError, api.ServerError, api.RateLimited) as exc:
            opened.failed.remember(exc, trio.current_time())
            raise
        except trio.Cancelled:
            # The request's own deadline ran out.
            deadline = api.DeadlineExceeded("no answer in time")
            opened.failed.remember(deadline, trio.current_time())
            raise
        if opened.whole is not None and opened.whole.on_read(offset, offset + len(data)):
            self._read_whole(opened)
        return data

    def _read_whole(self, opened: OpenFile) -> None:
        assert self.walk is not None and opened.record is not None
        workspace_id = opened.record.workspace_id
        others = any(
            other.whole is not None
            and other.whole.in_progress
            and other.record is not None
            and other.record.workspace_id == workspace_id
            for other in self._handles.files()
        )
        if others:
            self.walk.interleaved(workspace_id)
        else:
            self.walk.read_whole(
                workspace_id, opened.record.call_sid, opened.file.name, opened.file.size
            )

    def release(self, handle: FileHandleT) -> None:
        opened = self._handles.file(handle) if self._handles.inode(handle) is not None else None
        if (
            self.walk is not None
            and opened is not None
            and opened.record is not None
            and opened.whole is not None
            and opened.whole.in_progress
        ):
            # Read in part and closed: a look at the file (`file`, a preview, head),
            # not a walk's whole read; a walk going on is over, fetching no further.
            self.walk.interleaved(opened.record.workspace_id)
        closed = self._handles.release_file(handle)
        if closed is not None:
            self._source.closed(closed)
