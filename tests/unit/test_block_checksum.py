"""The block checksum (issue 22): a block's data is checked with CRC32C, the checksum
storage systems compute in hardware, and a block written in the format before it (CRC-32,
magic AMB2) is refused as foreign and fetched again, never served unchecked.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import crc32c
from hypothesis import given
from hypothesis import strategies as st

from amigofs.cache.block_format import HEADER, FileKey, data_checksum, pack_header, unpack_header
from amigofs.cache.block_reader import Unchecked
from tests.unit.block_doubles import block_file
from tests.unit.test_read_path_perf_safety import BLOCK, drop_from_page_cache, open_disk

KEY = FileKey("ws", "call", "inbound.wav", 3 * BLOCK)


def test_the_checksum_is_crc32c() -> None:
    # The check value of CRC-32C (Castagnoli), as RFC 3720 and every CRC catalogue give it.
    assert data_checksum(b"123456789") == 0xE3069283
    _header, crc = pack_header(KEY.digest, 0, b"123456789")
    assert crc == 0xE3069283


@given(st.binary(max_size=4096), st.integers(0, 4096))
def test_the_checksum_runs_on_across_pieces(data: bytes, cut: int) -> None:
    # A block read in pieces (header, before, the answer, after) is checked piece by piece.
    cut = min(cut, len(data))
    assert data_checksum(data[cut:], data_checksum(data[:cut])) == crc32c.crc32c(data)


def old_format_block(key: FileKey, index: int, data: bytes) -> bytes:
    """A block file as the format before CRC32C wrote it (magic AMB2, zlib's CRC-32)."""
    body = struct.pack("<4s16sIII", b"AMB2", key.digest, index, len(data), zlib.crc32(data))
    return body + struct.pack("<I", zlib.crc32(body)) + data


def test_an_old_format_header_is_not_a_header_of_this_format() -> None:
    raw = old_format_block(KEY, 2, b"bytes")[: HEADER.size]
    assert unpack_header(raw, KEY.digest, 2) is None


def write_old_blocks(root: Path, data: bytes) -> None:
    open_disk(root).close()  # the layout's directories
    for index in range(3):
        path = root / f"{KEY.relative_dir}.{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(old_format_block(KEY, index, data[index * BLOCK : (index + 1) * BLOCK]))


def test_a_block_of_the_old_format_is_refused_and_not_served(tmp_path: Path) -> None:
    data = random.Random(22).randbytes(3 * BLOCK)
    write_old_blocks(tmp_path, data)
    disk = open_disk(tmp_path)
    try:
        assert disk.copy(KEY, 0, BLOCK) is None
        assert not disk.has(KEY, 0)  # forgotten: to be fetched again
        assert disk.damaged_blocks == 1
    finally:
        disk.close()


def test_a_block_of_the_old_format_checked_in_a_thread_is_refused(tmp_path: Path) -> None:
    data = random.Random(23).randbytes(3 * BLOCK)
    write_old_blocks(tmp_path, data)
    for index in range(3):
        drop_from_page_cache(block_file(tmp_path / KEY.relative_dir, index))
    disk = open_disk(tmp_path)
    try:
        got = disk.copy(KEY, 0, 3 * BLOCK)
        if isinstance(got, Unchecked):  # not in the page cache: the thread's check
            blocks = disk.unverified(KEY, got.indexes)
            assert disk.apply_checks(KEY, disk.check_blocks(KEY, blocks)) == len(blocks)
        else:
            assert got is None
        assert disk.copy(KEY, 0, 3 * BLOCK) is None
        assert not any(disk.has(KEY, index) for index in range(3))
    finally:
        disk.close()
