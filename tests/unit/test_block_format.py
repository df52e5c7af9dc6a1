"""The block file format (blocks.v3) and block numbering: pure functions."""

from __future__ import annotations

import itertools
import re

from hypothesis import given
from hypothesis import strategies as st

from amigofs.cache.block_format import (
    HEADER,
    FileKey,
    block_path,
    block_range,
    footprint,
    key_digest,
    pack_header,
    parse_block_path,
    runs,
    unpack_header,
)

KEY = FileKey("ws", "call", "a.wav", 1000)


@given(st.binary(max_size=600), st.integers(0, 2**32 - 1))
def test_a_header_says_which_block_it_is_and_its_length_and_crc(data: bytes, index: int) -> None:
    header, crc = pack_header(KEY.digest, index, data)
    assert len(header) == HEADER.size
    assert unpack_header(header, KEY.digest, index) == (len(data), crc)


@given(st.integers(0, HEADER.size - 1), st.integers(1, 255))
def test_any_damaged_header_byte_is_found(position: int, flip: int) -> None:
    header, _crc = pack_header(KEY.digest, 7, b"block bytes")
    damaged = bytearray(header)
    damaged[position] ^= flip
    assert unpack_header(bytes(damaged), KEY.digest, 7) is None


def test_a_block_under_another_name_or_index_is_not_that_block() -> None:
    header, _crc = pack_header(KEY.digest, 3, b"x" * 10)
    other = FileKey("ws", "call", "a.wav", 1001)  # the same name, another size
    assert unpack_header(header, other.digest, 3) is None
    assert unpack_header(header, KEY.digest, 4) is None
    assert unpack_header(header[:-1], KEY.digest, 3) is None
    assert KEY.digest == key_digest(KEY.relative_dir)
    # No directory per call: 256 directories of files named by a hash of the file.
    assert re.fullmatch(r"blocks\.v3/([0-9a-f]{2})/\1[0-9a-f]{30}", KEY.relative_dir)
    assert block_path(KEY.relative_dir, 3) == f"{KEY.relative_dir}.3"
    assert parse_block_path(block_path(KEY.relative_dir, 3)) == (KEY.relative_dir, 3)
    assert parse_block_path("blocks.v3/00/../x.3") is None
    assert other.relative_dir != KEY.relative_dir


@given(st.integers(0, 1 << 24))
def test_a_block_file_takes_whole_pages_holding_header_and_data(length: int) -> None:
    taken = footprint(length)
    assert taken % 4096 == 0
    assert HEADER.size + length <= taken < HEADER.size + length + 4096


@given(st.integers(0, 10_000), st.integers(1, 10_000), st.integers(1, 4096))
def test_block_range_covers_exactly_the_bytes(start: int, length: int, block: int) -> None:
    first, stop = block_range(start, start + length, block)
    assert first * block <= start < (first + 1) * block
    assert (stop - 1) * block < start + length <= stop * block


@given(st.sets(st.integers(0, 200)), st.integers(1, 10))
def test_runs_cover_the_indexes_in_adjacent_runs_no_longer_than_asked(
    indexes: set[int], longest: int
) -> None:
    found = runs(sorted(indexes), longest)
    assert [i for first, stop in found for i in range(first, stop)] == sorted(indexes)
    assert all(0 < stop - first <= longest for first, stop in found)
    # Runs split only where they must: at a gap or at the length bound.
    for (before, stop), (first, _after) in itertools.pairwise(found):
        assert first > stop or stop - before == longest
