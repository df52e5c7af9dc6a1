"""The block file format of the disk cache (blocks.v2), and block numbering.

Each block of a stored file is a file ``blocks.v2/<workspace>/<call>/<stored name>.<size>/<index>``
holding a header (magic, which file and block it is, the data's length and CRC-32,
the header's own CRC) and then the block's bytes. This module owns that layout:
packing and checking headers, what a block file takes on disk, where it lies, and
how block indexes group into runs. Pure functions: no state, no I/O.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field

BLOCKS_DIR = "blocks.v2"
OLD_BLOCKS_DIR = "blocks"  # the journal-and-data-file layout before this one
MAGIC = b"AMB2"
# magic, key digest, block index, data length, data crc32, header crc32
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
    # Made once: it keys the index and is asked for several times on every read.
    relative_dir: str = field(init=False, repr=False, compare=False)
    digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Each part is a validated identifier or stored file name (no '/' or '..').
        relative = f"{BLOCKS_DIR}/{self.workspace_id}/{self.call_sid}/{self.filename}.{self.size}"
        object.__setattr__(self, "relative_dir", relative)
        object.__setattr__(self, "digest", key_digest(relative, self.validator))


def key_digest(relative_dir: str, validator: str | None = None) -> bytes:
    """What a block's header says it belongs to: a block moved or copied under another
    file's name, or of another version of the file, is not that file's. (Without a
    validator, the digest of the layout before versions: such blocks stay usable.)"""
    owner = relative_dir if validator is None else f"{relative_dir}\n{validator}"
    return hashlib.blake2b(owner.encode(), digest_size=16).digest()


def pack_header(digest: bytes, index: int, data: memoryview | bytes) -> tuple[bytes, int]:
    """A block file's header for `data`, and the data's CRC-32."""
    crc = zlib.crc32(data)
    body = struct.pack("<4s16sIII", MAGIC, digest, index, len(data), crc)
    return body + struct.pack("<I", zlib.crc32(body)), crc


def unpack_header(raw: bytes, digest: bytes, index: int) -> tuple[int, int] | None:
    """(data length, data crc32) from a block file's header, or None if it is not a
    sound header of block `index` of the file `digest` names."""
    if len(raw) != HEADER.size:
        return None
    magic, owner, found_index, length, crc, header_crc = HEADER.unpack(raw)
    if magic != MAGIC or zlib.crc32(raw[:_HEADER_BODY]) != header_crc:
        return None
    if owner != digest or found_index != index:
        return None
    return length, crc


def footprint(length: int) -> int:
    """What a block file of `length` data bytes takes on disk (whole 4 KiB pages):
    --cache-size bounds what the cache takes, not just the bytes it holds."""
    return -(-(HEADER.size + length) // PAGE) * PAGE


def relative_parts(relative_dir: str) -> tuple[str, ...]:
    """The directory levels of a key's relative dir, refusing anything but plain names."""
    parts = tuple(relative_dir.split("/"))
    if len(parts) != 4 or parts[0] != BLOCKS_DIR or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a block directory: {relative_dir!r}")
    return parts


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
