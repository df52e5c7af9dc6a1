"""The block file format of the disk cache (blocks.v3), and block numbering.

Each block of a stored file is a file ``blocks.v3/<xx>/<hash>.<index>``, where
<hash> names the file (its workspace, call, stored name and size) and <xx> is the
hash's first two hex digits: 256 directories for the whole cache, none per call (a
directory per call cost two inodes and 8 KiB of disk for a one-block
metadata.json). It holds a header (magic, which file and block it is, the data's
length and CRC32C, the header's own CRC32C) and then the block's bytes. CRC32C
(Castagnoli, computed in hardware by SSE 4.2 and ARMv8: ~25 GB/s against zlib's
CRC-32 at ~5 GB/s) is what storage systems check blocks with; a block of the format
before it (magic AMB2, CRC-32) does not pass as one of this format, and is fetched
again, never served unchecked. Block files
are written in ``blocks.v3/tmp/`` and renamed into place. This module owns that
layout: packing and checking headers, what a block file takes on disk, where it
lies, and how block indexes group into runs. Pure functions: no state, no I/O.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import crc32c

BLOCKS_DIR = "blocks.v3"
# Layouts before this one, removed when a cache is opened: the journal-and-data-file
# layout, and blocks.v2's directory per call.
OLD_BLOCKS_DIRS = ("blocks", "blocks.v2")
TMP_DIR = "tmp"  # under BLOCKS_DIR: blocks being written (no hex name clashes with it)
_HASH_BYTES = 16
# The format's version: AMB2 was the same layout with zlib's CRC-32.
MAGIC = b"AMB3"
# magic, key digest, block index, data length, data crc32c, header crc32c
HEADER = struct.Struct("<4s16sIIII")
_HEADER_BODY = HEADER.size - 4
PAGE = 4096


@dataclass(slots=True, frozen=True)
class FileKey:
    """Which stored file a block belongs to; the size is part of it so that a
    file that changed size on the server never mixes with its old blocks. The
    version (`validator`: ETag, else Last-Modified) is part of the digest in each
    block's header, not of the path: a block of another version of the file, left
    by an earlier mount, fails its check and is fetched again, never served."""

    workspace_id: str
    call_sid: str
    filename: str
    size: int
    validator: str | None = None
    # Made once: it keys the index and is asked for several times on every read. The
    # prefix of its block files' paths (`block_path`), relative to the cache directory.
    relative_dir: str = field(init=False, repr=False, compare=False)
    digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Each part is a validated identifier or stored file name (no '/').
        name = f"{self.workspace_id}/{self.call_sid}/{self.filename}.{self.size}"
        named = hashlib.blake2b(name.encode(), digest_size=_HASH_BYTES).hexdigest()
        relative = f"{BLOCKS_DIR}/{named[:2]}/{named}"
        object.__setattr__(self, "relative_dir", relative)
        object.__setattr__(self, "digest", key_digest(relative, self.validator))


def key_digest(relative_dir: str, validator: str | None = None) -> bytes:
    """What a block's header says it belongs to: a block moved or copied under another
    file's name, or of another version of the file, is not that file's. (Without a
    validator, the digest of the layout before versions: such blocks stay usable.)"""
    owner = relative_dir if validator is None else f"{relative_dir}\n{validator}"
    return hashlib.blake2b(owner.encode(), digest_size=16).digest()


def data_checksum(data: memoryview | bytes | bytearray, running: int = 0) -> int:
    """The CRC32C of `data`, run on from `running` (the CRC32C of the bytes before it),
    so a block read in pieces is checked piece by piece."""
    return crc32c.crc32c(data, running)


def pack_header(digest: bytes, index: int, data: memoryview | bytes) -> tuple[bytes, int]:
    """A block file's header for `data`, and the data's CRC32C."""
    crc = data_checksum(data)
    body = struct.pack("<4s16sIII", MAGIC, digest, index, len(data), crc)
    return body + struct.pack("<I", data_checksum(body)), crc


def unpack_header(raw: bytes, digest: bytes, index: int) -> tuple[int, int] | None:
    """(data length, data crc32c) from a block file's header, or None if it is not a
    sound header of block `index` of the file `digest` names."""
    if len(raw) != HEADER.size:
        return None
    magic, owner, found_index, length, crc, header_crc = HEADER.unpack(raw)
    if magic != MAGIC or data_checksum(raw[:_HEADER_BODY]) != header_crc:
        return None
    if owner != digest or found_index != index:
        return None
    return length, crc


def footprint(length: int) -> int:
    """What a block file of `length` data bytes takes on disk (whole 4 KiB pages):
    --cache-size bounds what the cache takes, not just the bytes it holds."""
    return -(-(HEADER.size + length) // PAGE) * PAGE


def relative_parts(relative_dir: str) -> tuple[str, str, str]:
    """(BLOCKS_DIR, the hash's directory, the hash) of a key's relative dir, refusing
    anything but the layout's own names."""
    parts = relative_dir.split("/")
    if (
        len(parts) != 3
        or parts[0] != BLOCKS_DIR
        or not _is_hex(parts[2], 2 * _HASH_BYTES)
        or parts[1] != parts[2][:2]
    ):
        raise ValueError(f"not a block file prefix: {relative_dir!r}")
    return parts[0], parts[1], parts[2]


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def block_path(relative_dir: str, index: int) -> str:
    """Where block `index` of the file `relative_dir` names lies, relative to the cache
    directory."""
    return f"{relative_dir}.{index}"


def block_name(relative_dir: str, index: int) -> str:
    """A block file's name in its directory (BLOCKS_DIR/<xx>/)."""
    return f"{relative_dir.rsplit('/', 1)[-1]}.{index}"


def parse_block_path(path: str) -> tuple[str, int] | None:
    """(relative_dir, index) of a block file's path relative to the cache directory,
    or None if it is not one of the layout's."""
    prefix, dot, index = path.rpartition(".")
    if not dot or not index.isdigit() or len(index) > 10:
        return None
    try:
        relative_parts(prefix)
    except ValueError:
        return None
    return prefix, int(index)


def block_range(start: int, end: int, block_size: int) -> tuple[int, int]:
    """The blocks [first, stop) under bytes [start, end) (end > start)."""
    return start // block_size, (end - 1) // block_size + 1


def runs(indexes: list[int], longest: int) -> list[tuple[int, int]]:
    """Sorted block indexes as [first, stop) runs of adjacent ones, each at most `longest`."""
    found: list[tuple[int, int]] = []
    for index in indexes:
        if found and found[-1][1] == index and index - found[-1][0] < longest:
            found[-1] = (found[-1][0], index + 1)
        else:
            found.append((index, index + 1))
    return found
