"""A file read in order from its start by a program making small reads (tar, sha256sum,
cat) gets its window a couple of MiB in, not after 9 MiB; one large read (plain `file`'s
7 MiB) still opens none (amigofs.policy.readahead).

The kernel's requests, as measured on the link profile (1 MiB kernel readahead): for a
program reading 10 KiB (tar) or 32 KiB (sha256sum) at a time from offset 0, a first
request of 64 or 128 KiB, then its window doubling as the reader goes on (128K, 256K,
512K, then 1 MiB requests); for one read() of 1 MiB or more at offset 0, requests of
1 MiB from the first one on, up to a window past the read's end."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from amigofs.policy.readahead import KERNEL_READAHEAD, LARGE_READ, STREAM_AFTER, Readahead

KiB, MiB = 1 << 10, 1 << 20


def ramping_stream(first: int, file_size: int) -> list[tuple[int, int]]:
    """The kernel's requests for a program making small reads from the start: a first
    request of `first`, then each twice the one before, up to KERNEL_READAHEAD."""
    requests, offset, size = [], 0, first
    while offset < file_size:
        requests.append((offset, min(size, file_size - offset)))
        offset += size
        size = min(2 * size, KERNEL_READAHEAD)
    return requests


def feed(
    readahead: Readahead, reads: list[tuple[int, int]], size: int
) -> list[tuple[int, int, int]]:
    """(end of the read, start, stop) of each window opened."""
    return [(o + n, *a) for o, n in reads if (a := readahead.on_read(o, n, size)) is not None]


@given(st.sampled_from([64 * KiB, 128 * KiB, 256 * KiB]), st.integers(4 * MiB, 60 * MiB))
def test_small_reads_from_the_start_get_a_window_a_few_mib_in(first: int, file_size: int) -> None:
    got = feed(Readahead(), ramping_stream(first, file_size), file_size)
    assert got, "no window for a stream"
    read_end, start, stop = got[0]
    assert STREAM_AFTER <= read_end <= STREAM_AFTER + KERNEL_READAHEAD
    assert read_end <= start < stop <= file_size


@given(st.sampled_from([64 * KiB, 128 * KiB]), st.integers(0, STREAM_AFTER - 1), st.data())
def test_small_reads_that_stop_before_the_stream_mark_then_a_seek_open_none(
    first: int, stop_at: int, data: st.DataObject
) -> None:
    file_size = 64 * MiB
    reads = [r for r in ramping_stream(first, file_size) if r[0] + r[1] <= stop_at]
    readahead = Readahead()
    assert feed(readahead, reads, file_size) == []
    seek_to = data.draw(st.integers(stop_at + 4 * MiB, file_size - 1))
    assert readahead.on_read(seek_to, 128 * KiB, file_size) is None


@given(st.integers(KERNEL_READAHEAD, LARGE_READ), st.integers(20 * MiB, 300 * MiB))
def test_one_large_read_from_the_start_is_no_stream_until_past_it(
    length: int, file_size: int
) -> None:
    # Requests of the kernel's full window from the first one on: what comes next tells.
    end = length + KERNEL_READAHEAD
    reads = [(o, min(KERNEL_READAHEAD, end - o)) for o in range(0, end, KERNEL_READAHEAD)]
    assert feed(Readahead(), reads, file_size) == []


def test_small_reads_from_the_middle_wait_as_before() -> None:
    # Only a run from the file's start is known a stream early: a jump into a file
    # (a player seeking) is no whole read.
    file_size = 64 * MiB
    start = 20 * MiB
    readahead = Readahead()
    reads = [(start + o, n) for o, n in ramping_stream(128 * KiB, 8 * MiB)]
    got = feed(readahead, reads, file_size)
    assert all(read_end - start > LARGE_READ for read_end, _, _ in got)
