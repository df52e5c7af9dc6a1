"""Readahead (amigofs.policy.readahead): what a reader of one open file gets fetched
ahead, for sequential readers, kernel-reordered ones, seekers and small files."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from amigofs.policy.readahead import (
    BACKWARD_TOLERANCE,
    FORWARD_TOLERANCE,
    KERNEL_READAHEAD,
    Readahead,
)

KiB, MiB = 1 << 10, 1 << 20


@dataclass(slots=True, frozen=True)
class Ahead:
    """A range fetched ahead, and the read that asked for it."""

    start: int
    stop: int
    read_offset: int
    read_end: int


def run(readahead: Readahead, reads: list[tuple[int, int]], file_size: int) -> list[Ahead]:
    ahead = []
    for offset, size in reads:
        got = readahead.on_read(offset, size, file_size)
        if got is not None:
            ahead.append(Ahead(*got, offset, min(offset + size, file_size)))
    return ahead


def sequential(file_size: int, read_size: int, start: int = 0) -> list[tuple[int, int]]:
    return [(offset, read_size) for offset in range(start, file_size, read_size)]


def windows(ahead: list[Ahead], file_size: int) -> list[int]:
    """How far ahead of its read each range reached, where the file's end did not cut it."""
    return [a.stop - a.read_end for a in ahead if a.stop < file_size]


def doubling(readahead: Readahead, count: int) -> list[int]:
    sizes, window = [], 0
    for _ in range(count):
        window = min(max(2 * window, readahead.initial_window), readahead.max_window)
        sizes.append(window)
    return sizes


# At most some thousand reads a file: each example runs in a millisecond or so.
file_sizes = st.integers(1, 48 * MiB)
read_sizes = st.sampled_from([32 * KiB, 128 * KiB, 1 * MiB]) | st.integers(16 * KiB, 2 * MiB)


@st.composite
def readaheads(draw: st.DrawFn) -> Readahead:
    initial = draw(st.sampled_from([1, 2, 4, 8])) * MiB
    return Readahead(
        initial_window=initial,
        max_window=initial * draw(st.sampled_from([1, 2, 4, 8])),
        ramp_after=draw(st.integers(0, 4 * MiB)),
    )


def assert_each_byte_once_and_inside(ahead: list[Ahead], file_size: int) -> None:
    fetched: list[tuple[int, int]] = []
    for a in ahead:
        assert 0 <= a.start < a.stop <= file_size, a
        for start, stop in fetched:
            assert a.stop <= start or stop <= a.start, f"{a} fetched again"
        fetched.append((a.start, a.stop))


@given(readaheads(), file_sizes, read_sizes)
def test_a_sequential_reader_gets_each_byte_ahead_once_up_to_the_end(
    readahead: Readahead, file_size: int, read_size: int
) -> None:
    ahead = run(readahead, sequential(file_size, read_size), file_size)
    assert_each_byte_once_and_inside(ahead, file_size)
    for before, then in itertools.pairwise(ahead):
        # Nothing skipped: a gap is only what a read longer than the window read itself.
        assert then.start == before.stop or then.read_offset <= before.stop < then.start
    if ahead and read_size <= readahead.initial_window:
        assert ahead[-1].stop == file_size  # ahead of the reader up to the end


@given(
    readaheads(),
    st.integers(1, 48 * MiB),
    st.lists(st.tuples(st.integers(0, 50 * MiB), read_sizes), max_size=60),
)
def test_whatever_a_reader_does_nothing_outside_the_file_is_fetched(
    readahead: Readahead, file_size: int, reads: list[tuple[int, int]]
) -> None:
    for offset, size in reads:
        ahead = readahead.on_read(min(offset, file_size), size, file_size)
        if ahead is not None:
            assert 0 <= ahead[0] < ahead[1] <= file_size


@given(readaheads(), file_sizes, read_sizes)
def test_nothing_is_fetched_ahead_before_ramp_after_sequential_bytes(
    readahead: Readahead, file_size: int, read_size: int
) -> None:
    reads = sequential(file_size, read_size)
    ahead = run(readahead, reads, file_size)
    ends = [min(offset + size, file_size) for offset, size in reads]
    # Small reads from the start are a stream sooner (tests/unit/test_readahead_stream.py).
    ramp_after = readahead.ramp_after
    if read_size < KERNEL_READAHEAD:
        ramp_after = min(ramp_after, readahead.stream_after)
    # The first read that gets there, and then at once; unless the file ends there.
    there = next(end for end in ends if end >= ramp_after or end == file_size)
    if ahead:
        assert ahead[0].read_end == there
    else:
        assert there == file_size


@given(readaheads(), st.integers(64 * MiB, 300 * MiB), st.sampled_from([512 * KiB, 1 * MiB]))
def test_the_window_doubles_up_to_max_window_as_a_reader_goes_on(
    readahead: Readahead, file_size: int, read_size: int
) -> None:
    ahead = run(readahead, sequential(file_size, read_size), file_size)
    grown = windows(ahead, file_size)
    assert grown == doubling(readahead, len(grown))


@given(readaheads(), st.sampled_from([512 * KiB, 1 * MiB]), st.integers(0, 100))
def test_a_seek_resets_the_window(readahead: Readahead, read_size: int, seek_mib: int) -> None:
    file_size = 300 * MiB
    fresh = Readahead(readahead.initial_window, readahead.max_window, readahead.ramp_after)
    first_part = sequential(100 * MiB, read_size)
    run(readahead, first_part, file_size)
    # Far ahead, past what the kernel's reordering could explain: a seek.
    seek_to = 100 * MiB + FORWARD_TOLERANCE + seek_mib * MiB + 1
    after = sequential(file_size, read_size, start=seek_to)
    assert run(readahead, after, file_size) == run(fresh, after, file_size)


@given(st.integers(1, 2 * MiB), st.integers(1, 2 * MiB))
def test_no_file_is_fetched_whole_at_its_first_read(file_size: int, first_read: int) -> None:
    # A small file too: what its first read asks is fetched, nothing ahead of it.
    assert Readahead().on_read(0, first_read, file_size) is None


@st.composite
def reordered(draw: st.DrawFn, reads: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The kernel's readahead sends neighbouring requests out of order: some pairs
    swapped, each read at most one place from its own."""
    shuffled, i = list(reads), 0
    while i < len(shuffled) - 1:
        if draw(st.booleans()):
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
            i += 1
        i += 1
    return shuffled


@given(st.data(), file_sizes, st.sampled_from([64 * KiB, 128 * KiB, 512 * KiB]))
def test_kernel_reordering_within_the_tolerances_is_not_a_seek(
    data: st.DataObject, file_size: int, read_size: int
) -> None:
    assert 2 * read_size <= BACKWARD_TOLERANCE  # a swap goes back two reads
    readahead = Readahead()
    reads = data.draw(reordered(sequential(file_size, read_size)))
    ahead = run(readahead, reads, file_size)
    assert_each_byte_once_and_inside(ahead, file_size)
    # No reset: the window only grows.
    assert windows(ahead, file_size) == doubling(readahead, len(windows(ahead, file_size)))
    if ahead:
        assert ahead[-1].stop == file_size
