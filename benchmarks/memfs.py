"""The ceiling: a minimal pyfuse3 filesystem serving the emulator's files from memory.

    python -m benchmarks.memfs MOUNTPOINT --knobs '{"calls_per_workspace": 5, ...}' \
        [--preload outbound.wav]...

It shows the same tree and the same bytes as amigofs over an emulator with those knobs
(MOUNT/<workspace_id>/<call_sid>/{inbound.wav,outbound.wav,metadata.json}), each file's bytes
computed once from the emulator's Dataset into one buffer and served as memoryview slices, so a
read costs what pyfuse3 and the kernel cost and nothing else. Files named by --preload are built
before mounting (the mount showing in /proc/mounts means they are ready); other files are built
on their first open, which listing benchmarks never do. It runs until unmounted.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pyfuse3
import trio

from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.data import Dataset, Recording
from amigofs.fs.wav import audio_layout

log = logging.getLogger(__name__)

FILE_NAMES = ("inbound.wav", "outbound.wav", "metadata.json")
TIMEOUT = 3600.0  # recordings are immutable: let the kernel keep entries and attributes


@dataclass(slots=True, frozen=True)
class PresentedFile:
    """A file as amigofs presents it: a synthesized WAV header (raw storage) then stored bytes."""

    workspace_id: str
    call_sid: str
    name: str
    header: bytes
    stored_name: str
    stored_size: int
    content: bytes | None  # metadata.json

    @property
    def size(self) -> int:
        if self.content is not None:
            return len(self.content)
        return len(self.header) + self.stored_size

    @property
    def stored_path(self) -> str:
        """The emulator's download path of the stored file (as /__stats counts it)."""
        return f"/v1/{self.workspace_id}/recordings/{self.call_sid}/download/{self.stored_name}"

    def build(self, data: Dataset) -> bytearray:
        """The whole presented file in one buffer."""
        buffer = bytearray(self.size)
        if self.content is not None:
            buffer[:] = self.content
            return buffer
        buffer[: len(self.header)] = self.header
        position = len(self.header)
        obj = data.open(self.workspace_id, self.call_sid, self.stored_name)
        for piece in cast(Any, obj).pieces(0, obj.size):
            buffer[position : position + len(piece)] = piece
            position += len(piece)
        assert position == len(buffer)
        return buffer

    def read(self, data: Dataset, start: int, end: int) -> bytes:
        """Bytes [start, end) of the presented file, without building all of it."""
        if self.content is not None:
            return self.content[start:end]
        header = self.header[start:end]
        stored_start = max(start - len(self.header), 0)
        stored_end = max(end - len(self.header), 0)
        body = data.read_range(
            self.workspace_id, self.call_sid, self.stored_name, stored_start, stored_end
        )
        return header + body


def presented_file(data: Dataset, rec: Recording, name: str) -> PresentedFile:
    if name == "metadata.json":
        return PresentedFile(rec.workspace_id, rec.call_sid, name, b"", name, 0, rec.metadata_bytes)
    channel = name.split(".")[0]
    stored_name = rec.inbound_filename if channel == "inbound" else rec.outbound_filename
    stored_size = data.file_size(rec.workspace_id, rec.call_sid, stored_name)
    layout = audio_layout(
        stored_name,
        str(rec.metadata[f"{channel}_format"]),
        int(cast(int, rec.metadata[f"{channel}_sample_rate"])),
        stored_size,
    )
    return PresentedFile(
        rec.workspace_id, rec.call_sid, name, layout.header, stored_name, stored_size, None
    )


FLOAT_KNOBS = frozenset({"long_duration", "min_duration", "max_duration", "latency"})


def config_from_knobs(knobs: dict[str, Any]) -> EmulatorConfig:
    """The config the emulator builds from these knobs as flags; it parses durations as floats,
    and a float shows as 1200.0 in the metadata where an int would show as 1200."""
    typed: dict[str, Any] = {k: float(v) if k in FLOAT_KNOBS else v for k, v in knobs.items()}
    return EmulatorConfig(api_key="unused", **typed)


def recordings(data: Dataset) -> Iterator[Recording]:
    for workspace in data.workspaces:
        for call in data.calls(workspace.id):
            if call.recording is not None:
                yield call.recording


# --- the filesystem ------------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    inode: int
    name: bytes
    mtime_ns: int
    file: PresentedFile | None = None  # None for a directory
    children: dict[bytes, int] = field(default_factory=dict)


class MemOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, data: Dataset, preload: set[str]) -> None:
        super().__init__()
        self._data = data
        self._nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: Node(pyfuse3.ROOT_INODE, b"", 0)}
        self._buffers: dict[int, memoryview] = {}
        self._uid, self._gid = os.getuid(), os.getgid()
        for rec in recordings(data):
            call = data.call(rec.workspace_id, rec.call_sid)
            assert call is not None
            mtime_ns = int(call.started_at.timestamp() * 1e9)
            ws = self._child(pyfuse3.ROOT_INODE, rec.workspace_id, mtime_ns)
            call_dir = self._child(ws.inode, rec.call_sid, mtime_ns)
            for name in FILE_NAMES:
                node = self._child(call_dir.inode, name, mtime_ns, presented_file(data, rec, name))
                if name in preload:
                    self._buffer(node)

    def _child(
        self, parent: int, name: str, mtime_ns: int, file: PresentedFile | None = None
    ) -> Node:
        key = os.fsencode(name)
        siblings = self._nodes[parent].children
        if key in siblings:
            node = self._nodes[siblings[key]]
            node.mtime_ns = max(node.mtime_ns, mtime_ns)
            return node
        node = Node(len(self._nodes) + 1, key, mtime_ns, file)
        self._nodes[node.inode] = node
        siblings[key] = node.inode
        return node

    def _buffer(self, node: Node) -> memoryview:
        view = self._buffers.get(node.inode)
        if view is None:
            assert node.file is not None
            view = memoryview(node.file.build(self._data))
            self._buffers[node.inode] = view
        return view

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = pyfuse3.InodeT(node.inode)
        if node.file is None:
            attrs.st_mode = stat.S_IFDIR | 0o555
            attrs.st_nlink = 2
            attrs.st_size = 0
        else:
            attrs.st_mode = stat.S_IFREG | 0o444
            attrs.st_nlink = 1
            attrs.st_size = node.file.size
        attrs.st_uid, attrs.st_gid = self._uid, self._gid
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = node.mtime_ns
        attrs.st_blksize = 1 << 20
        attrs.st_blocks = (attrs.st_size + 511) // 512
        attrs.entry_timeout = attrs.attr_timeout = TIMEOUT
        return attrs

    def _node(self, inode: int) -> Node:
        node = self._nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(self._node(inode))

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        child = self._node(parent_inode).children.get(name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(self._nodes[child])

    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        if self._node(inode).file is not None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return pyfuse3.FileHandleT(inode)

    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        # The children never change, so their order is a stable offset.
        children = list(self._nodes[fh].children.items())
        for index in range(start_id, len(children)):
            name, inode = children[index]
            if not pyfuse3.readdir_reply(token, name, self._attrs(self._nodes[inode]), index + 1):
                break

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        return None

    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.file is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        self._buffer(node)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(inode), keep_cache=True)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> memoryview:  # type: ignore[override]
        return self._buffers[fh][off : off + size]

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memfs", description=__doc__)
    parser.add_argument("mountpoint")
    parser.add_argument("--knobs", default="{}", help="EmulatorConfig fields as a JSON object")
    parser.add_argument(
        "--preload", action="append", default=[], help="build files of this name before mounting"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="memfs: %(levelname)s %(message)s")
    data = Dataset(config_from_knobs(json.loads(args.knobs)))
    operations = MemOperations(data, set(args.preload))
    options = set(pyfuse3.default_options) | {"fsname=benchmemfs", "ro"}
    pyfuse3.init(operations, args.mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
