"""Fetching what programs read: the readahead rule that tells a sniff and one large
read from a stream (amigofs.policy.readahead), and the store's pieces, the exact
bytes of a read not in order (amigofs.cache.store)."""

from __future__ import annotations

import random

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from amigofs.cache.store import BlockStore, StoredFile, exact_reads
from amigofs.policy.readahead import (
    KERNEL_READAHEAD,
    LARGE_READ,
    RUN_REACH,
    SMALL_FIRST_READ,
    Readahead,
    first_fetch_end,
)
from tests.unit.block_doubles import MemoryCache, MemoryFetcher
from tests.unit.test_block_store import BLOCK, NAME, run_with_store, stored

KiB, MiB = 1 << 10, 1 << 20
PAGE = 4096


def kernel_requests(offset: int, length: int, file_size: int) -> list[tuple[int, int]]:
    """What the kernel sends for one read() of `length` at `offset` (measured on the
    link profile, 1 MiB kernel readahead): for a read of the kernel's window or more,
    requests of the window over it and one window past it, in order; for a smaller
    one, one request of up to four times it (its first readahead), and nothing more
    once the reader stops."""
    if length < KERNEL_READAHEAD:
        return [(offset, min(file_size - offset, KERNEL_READAHEAD, 4 * length))]
    end = min(file_size, offset + length + KERNEL_READAHEAD)
    return [(o, min(KERNEL_READAHEAD, end - o)) for o in range(offset, end, KERNEL_READAHEAD)]


def feed(readahead: Readahead, reads: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    return [a for o, n in reads if (a := readahead.on_read(o, n, size)) is not None]


# --- the rule ----------------------------------------------------------------------


@given(st.integers(1, 300 * MiB), st.integers(0, 300 * MiB), st.integers(1, 2 * MiB))
def test_a_files_first_read_is_not_in_order_wherever_it_is(
    file_size: int, offset: int, size: int
) -> None:
    readahead = Readahead()
    assert readahead.on_read(min(offset, file_size - 1), size, file_size) is None
    assert not readahead.in_order


@given(st.integers(20 * MiB, 300 * MiB), st.integers(1, LARGE_READ), st.data())
def test_one_large_read_then_a_seek_opens_no_window(
    file_size: int, length: int, data: st.DataObject
) -> None:
    # Plain `file`: 7 MiB from the start, then 7 MiB from the end; each read as the
    # kernel sends it, with its own readahead past it.
    readahead = Readahead()
    assert feed(readahead, kernel_requests(0, length, file_size), file_size) == []
    # Further than the kernel's windows in flight could put a request.
    seek_to = data.draw(st.integers(length + KERNEL_READAHEAD + RUN_REACH + 1, file_size - 1))
    after = kernel_requests(seek_to, min(length, file_size - seek_to), file_size)
    first = after[0]
    assert readahead.on_read(*first, file_size) is None
    assert not readahead.in_order  # a jump: only what it asks is fetched
    assert feed(readahead, after[1:], file_size) == []


@given(st.integers(LARGE_READ + 4 * KERNEL_READAHEAD, 300 * MiB))
def test_a_stream_gets_a_window_once_past_a_large_read_and_the_kernels_window(
    file_size: int,
) -> None:
    # Requests of the kernel's whole window from the first one on, as for one large
    # read: only going on past it tells a stream (small reads from the start are told
    # sooner: tests/unit/test_readahead_stream.py).
    readahead = Readahead()
    reads = [(o, KERNEL_READAHEAD) for o in range(0, file_size, KERNEL_READAHEAD)]
    got: list[tuple[int, int, int]] = []
    for offset, size in reads:
        ahead = readahead.on_read(offset, size, file_size)
        if ahead is not None:
            got.append((offset + size, *ahead))
    assert got, "no window for a stream"
    read_end, start, stop = got[0]
    assert read_end > LARGE_READ + KERNEL_READAHEAD  # not within one large read
    assert read_end <= start < stop <= file_size


@given(st.integers(LARGE_READ + 8 * MiB, 300 * MiB), st.data())
def test_a_stream_whose_requests_overtake_one_another_still_gets_its_window(
    file_size: int, data: st.DataObject
) -> None:
    # Requests of 256 KiB, neighbours swapped: each swapped one jumps ahead further
    # than the reads before it (fetched as asked), but within the kernel's windows: the
    # run goes on.
    reads = [(o, 256 * KiB) for o in range(0, file_size, 256 * KiB)]
    i = 0
    while i < len(reads) - 1:
        if data.draw(st.booleans()):
            reads[i], reads[i + 1] = reads[i + 1], reads[i]
            i += 1
        i += 1
    readahead = Readahead()
    got = []
    for offset, size in reads:
        ahead = readahead.on_read(offset, size, file_size)
        if ahead is not None:
            got.append((offset, ahead))
    assert got, "no window for a stream"
    assert got[0][0] <= readahead.ramp_after + 2 * MiB


def test_a_sniff_at_start_and_end_is_two_reads_not_in_order_and_nothing_ahead() -> None:
    size = 19_200_044
    readahead = Readahead()
    assert readahead.on_read(0, 128 * KiB, size) is None
    assert not readahead.in_order
    assert readahead.on_read(size - 68 * KiB, 68 * KiB, size) is None
    assert not readahead.in_order


@given(st.integers(128 * KiB + 1, 320 * KiB))
def test_a_sniff_of_a_small_file_s_end_past_its_first_read_is_not_in_order(size: int) -> None:
    # `file -P bytes=65536` of a file of 60-320 KiB: the kernel asks [0, 128K), then
    # the pages under the last 64 KiB, a few KiB past the first read. In order, the
    # store would fetch whole blocks, the first 128 KiB (held as a piece) again.
    readahead = Readahead()
    assert readahead.on_read(0, 128 * KiB, size) is None
    end_read = max(128 * KiB + PAGE, (size - 64 * KiB) // PAGE * PAGE)
    if end_read >= size:
        return
    assert readahead.on_read(end_read, size - end_read, size) is None
    assert not readahead.in_order


@given(st.integers(4 * MiB, 100 * MiB), st.sampled_from([64 * KiB, 128 * KiB, 256 * KiB]))
def test_reads_going_on_in_order_are_in_order(file_size: int, read_size: int) -> None:
    readahead = Readahead()
    flags = []
    for offset in range(0, file_size, read_size):
        readahead.on_read(offset, read_size, file_size)
        flags.append(readahead.in_order)
    assert flags == [False] + [True] * (len(flags) - 1)


# --- the store's pieces --------------------------------------------------------------


def file_of(data: bytes) -> StoredFile:
    return stored(len(data))


def test_a_read_not_in_order_fetches_the_bytes_it_asks_and_no_block() -> None:
    data = random.Random(1).randbytes(20 * BLOCK)
    file = file_of(data)

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        with exact_reads():
            assert bytes(await store.read(file, 10, 30)) == data[10:30]
            assert bytes(await store.read(file, 1270, 1280)) == data[1270:1280]
            assert bytes(await store.read(file, 12, 20)) == data[12:20]  # the piece's
        assert fetcher.requests == [(NAME, 10, 30), (NAME, 1270, 1280)]
        assert fetcher.fetched == {}  # no block
        store.forget(file.key)  # closed: its pieces go; a read in order gets blocks
        assert bytes(await store.read(file, 12, 20)) == data[12:20]
        assert fetcher.requests[2:] == [(NAME, 0, BLOCK)]

    run_with_store(data, scenario)


@given(
    start=st.integers(0, 4 * MiB),
    length=st.integers(1, 2 * MiB),
    file_size=st.integers(1, 8 * MiB),
)
def test_only_a_small_first_request_at_the_start_is_fetched_with_what_follows(
    start: int, length: int, file_size: int
) -> None:
    end = min(start + length, file_size)
    got = first_fetch_end(start, end, file_size)
    assert end <= got <= file_size
    if start != 0 or end >= SMALL_FIRST_READ:
        assert got == end
    else:  # the kernel's readahead after it, four times it: never more than 5x read
        assert got == min(file_size, 5 * end)


def test_head_c_64k_costs_one_fetch_not_two() -> None:
    # head asks [0, 32K) then, its next read, the kernel's readahead [32K, 160K): the
    # second is served from the first fetch (one round trip, not two).
    data = random.Random(2).randbytes(2 * MiB)
    file = file_of(data)

    async def main() -> None:
        cache = MemoryCache(256 * KiB)  # the mount's block size
        fetcher = MemoryFetcher({NAME: data}, cache)
        async with trio.open_nursery() as nursery:
            store = BlockStore(cache, fetcher, nursery, client=fetcher)
            with exact_reads():
                assert bytes(await store.read(file, 0, 32 * KiB)) == data[: 32 * KiB]
            second = await store.read(file, 32 * KiB, 160 * KiB)
            assert bytes(second) == data[32 * KiB : 160 * KiB]
            assert fetcher.requests == [(NAME, 0, 160 * KiB)]
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_the_kernels_next_request_waits_for_the_first_fetch_it_is_in() -> None:
    # [32K, 160K) asked while the fetch of [0, 160K) is still on its way: one fetch.
    data = random.Random(3).randbytes(2 * MiB)
    file = file_of(data)

    async def main() -> None:
        cache = MemoryCache(256 * KiB)
        fetcher = MemoryFetcher({NAME: data}, cache)
        async with trio.open_nursery() as nursery:
            store = BlockStore(cache, fetcher, nursery, client=fetcher)

            async def first() -> None:
                with exact_reads():
                    assert bytes(await store.read(file, 0, 32 * KiB)) == data[: 32 * KiB]

            async def second() -> None:
                got = await store.read(file, 32 * KiB, 160 * KiB)
                assert bytes(got) == data[32 * KiB : 160 * KiB]

            fetcher.gate = trio.Event()  # the first fetch on its way until both are in
            async with trio.open_nursery() as readers:
                readers.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                readers.start_soon(second)
                await trio.testing.wait_all_tasks_blocked()
                fetcher.gate.set()
            assert fetcher.requests == [(NAME, 0, 160 * KiB)]
            nursery.cancel_scope.cancel()

    trio.run(main)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 1100),
    reads=st.lists(
        st.tuples(st.integers(0, 1200), st.integers(1, 300), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    together=st.booleans(),
)
def test_pieces_and_blocks_mixed_serve_exactly_the_source_bytes(
    size: int, reads: list[tuple[int, int, bool]], together: bool
) -> None:
    data = random.Random(size).randbytes(size)
    file = file_of(data)

    async def read(store: BlockStore, start: int, length: int, exact: bool) -> None:
        with exact_reads(exact):
            got = await store.read(file, start, start + length)
        assert bytes(got) == data[start : start + length]

    async def scenario(store: BlockStore, _fetcher: MemoryFetcher) -> None:
        if together:
            async with trio.open_nursery() as readers:
                for start, length, exact in reads:
                    readers.start_soon(read, store, start, length, exact)
        else:
            for start, length, exact in reads:
                await read(store, start, length, exact)

    run_with_store(data, scenario)
