"""The pyfuse3 adapter: FUSE requests in, Namespace calls, FUSE replies out.

Thin on purpose, and stateless: handles and inodes are the namespace's. Each handler runs under a deadline, and every failure leaves
as a FUSEError carrying the errno from `amigofs.fs.errors.to_errno`: any other
exception would end `pyfuse3.main()` and with it the mount.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

import pyfuse3
import trio

from amigofs.fs.errors import to_errno
from amigofs.fs.namespace import Attributes, FileHandleT, InodeT, Namespace
from amigofs.fs.xattrs import XATTR_PREFIX_BYTES, not_ours_errno

log = logging.getLogger(__name__)

T = TypeVar("T")
N = TypeVar("N")

DIR_MODE = stat.S_IFDIR | 0o555
LINK_MODE = stat.S_IFLNK | 0o777  # a link's own mode is not used; 0777 is what ls shows
FILE_MODE = stat.S_IFREG | 0o444
PRIVATE_FILE_MODE = stat.S_IFREG | 0o400
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


class AmigoOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    # Not FUSE_POSIX_ACL: the kernel would keep an inode's ACL answers, but drops them
    # whenever a readdirplus brings the entry again (pyfuse3 makes every readdir one),
    # so `ls -l` would still ask for both ACLs of every entry, each time (measured).
    enable_acl = False

    def __init__(
        self,
        namespace: Namespace,
        *,
        handler_timeout: float,
        usage: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
        super().__init__()
        self._ns = namespace
        self._timeout = handler_timeout
        self._usage = usage  # (bytes the disk cache may hold, bytes it holds), for df
        self._uid = os.getuid()
        self._gid = os.getgid()

    async def _call(
        self,
        call: Callable[[], Awaitable[T]],
        what: str,
        name: Callable[[N], str],
        node: N,
        *args: object,
    ) -> T:
        """Runs a handler under the deadline; `what % (name(node), *args)` names it in
        the log, made only on failure: on every read it would be made for nothing (and
        the path takes a look in the call index)."""
        try:
            with trio.fail_after(self._timeout):
                return await call()
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise pyfuse3.FUSEError(to_errno(exc, what % (name(node), *args))) from None

    def _path(self, inode: int) -> str:
        """An inode's path below the mount, for a log line."""
        try:
            return self._ns.describe(InodeT(inode))
        except Exception:
            # Made in _call's except: an error here would leave the handler as other
            # than a FUSEError, and end the mount.
            return f"inode {inode}"

    def _handle_path(self, fh: int) -> str:
        """The path an open handle was opened on, for a log line."""
        try:
            return self._ns.describe_handle(FileHandleT(fh))
        except Exception:
            return f"handle {fh}"  # as in _path

    def _child_path(self, entry: tuple[int, str]) -> str:
        """The path of a name looked up in a directory, for a log line."""
        parent, name = entry
        # A program's name, not the server's: a newline in it must not make two lines.
        shown = name if name.isprintable() else repr(name)
        above = self._path(parent)
        return shown if above == "/" else f"{above}/{shown}"

    def _entry(self, attrs: Attributes) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attrs.inode
        entry.generation = 0
        entry.entry_timeout = attrs.timeout
        entry.attr_timeout = attrs.timeout
        if attrs.link is not None:
            entry.st_mode = LINK_MODE
        elif attrs.is_dir:
            entry.st_mode = DIR_MODE
        else:
            entry.st_mode = PRIVATE_FILE_MODE if attrs.private else FILE_MODE
        entry.st_nlink = attrs.nlink
        entry.st_uid = self._uid
        entry.st_gid = self._gid
        entry.st_rdev = 0
        entry.st_size = attrs.size
        entry.st_blksize = 1 << 17
        entry.st_blocks = (attrs.size + 511) // 512
        # A recording's time is its call's start: the same on every mount, so
        # rsync -a finds nothing to transfer the second time.
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = attrs.mtime_ns
        return entry

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(name)
        parent = InodeT(parent_inode)
        owner = ctx.uid in (self._uid, 0)
        attrs = await self._call(
            lambda: self._ns.lookup(parent, text, owner=owner),
            "lookup %s",
            self._child_path,
            (parent, text),
        )
        return self._entry(attrs)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = InodeT(inode)
        return self._entry(
            await self._call(lambda: self._ns.getattr(node), "getattr %s", self._path, node)
        )

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # Nothing to free: calls and days are numbered arithmetically, and the few
        # nodes numbered as met (per shown workspace) are kept for the life of the
        # mount (see amigofs.fs.inodes), however many names are looked up.
        return None

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = InodeT(inode)
        return await self._call(lambda: self._ns.opendir(node), "opendir %s", self._path, node)

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = FileHandleT(fh)
        entries = await self._call(
            lambda: self._ns.readdir(handle, start_id, dots=True),
            "readdir %s from entry %d",
            self._handle_path,
            fh,
            start_id,
        )
        for offset, entry in entries:
            if not pyfuse3.readdir_reply(
                token, os.fsencode(entry.name), self._entry(entry.attrs), offset
            ):
                break

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = InodeT(inode)
        target = await self._call(lambda: self._ns.readlink(node), "readlink %s", self._path, node)
        return os.fsencode(target)

    async def releasedir(self, fh: int) -> None:
        self._ns.releasedir(FileHandleT(fh))

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = InodeT(inode)
        fh = await self._call(lambda: self._ns.open(node), "open %s", self._path, node)
        if self._ns.direct_io(node):
            # Made at open, of a size the kernel cannot know beforehand.
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        # Recordings never change: let the kernel keep pages across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = FileHandleT(fh)
        data: bytes | bytearray | memoryview = await self._call(
            lambda: self._ns.read(handle, off, size),
            "read %s at %d+%d",
            self._handle_path,
            fh,
            off,
            size,
        )
        # pyfuse3 takes any bytes-like object; a memoryview spares a copy per read.
        return cast(bytes, data)

    async def release(self, fh: int) -> None:
        self._ns.release(FileHandleT(fh))

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(XATTR_PREFIX_BYTES):
            # A security label, an ACL: asked by `ls -l`, and never ours. Answered at
            # once: no deadline, no node, no task switch.
            raise pyfuse3.FUSEError(not_ours_errno(name))
        node, text = InodeT(inode), os.fsdecode(name)
        return await self._call(
            lambda: self._ns.getxattr(node, text), "getxattr %s %r", self._path, node, text
        )

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        # The names are known without loading anything (amigofs.fs.xattrs): no
        # deadline to keep, nothing to wait for.
        node = InodeT(inode)
        try:
            names = self._ns.xattr_names(node)
        except Exception as exc:
            raise pyfuse3.FUSEError(to_errno(exc, f"listxattr {self._path(node)}")) from None
        return [name.encode() for name in names]

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        # What df can truly say of a remote, read-only tree: the disk cache's size
        # (--cache-size) and how much of it is used. No inode counts: there are none.
        limit, used = self._usage()
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_blocks = limit // 4096
        data.f_bfree = data.f_bavail = max(limit - used, 0) // 4096
        data.f_files = data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data
