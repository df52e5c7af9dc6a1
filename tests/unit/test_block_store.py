"""BlockStore in-process, against in-memory and failure-injecting stand-ins for its
data cache and fetcher (tests/unit/block_doubles.py): what a reader gets, and what
is fetched for it."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from amigofs.api import errors
from amigofs.api.models import DownloadPath
from amigofs.cache.block_format import FileKey
from amigofs.cache.store import BlockStore, LinkExpired, StoredFile
from tests.unit.block_doubles import FailingFetcher, MemoryCache, MemoryFetcher

BLOCK = 64
NAME = "a.wav"


class Link:
    def __init__(self, target: str = "/download/a") -> None:
        self.path = DownloadPath("ws", "call", NAME, target)


def source_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def stored(size: int, link: Link | None = None) -> StoredFile:
    return StoredFile(FileKey("ws", "call", NAME, size), link or Link())


def run_with_store(
    data: bytes,
    scenario: Callable[[BlockStore, MemoryFetcher], Awaitable[None]],
    *,
    room: bool = True,
    failing: bool = False,
) -> None:
    """Runs `scenario` against a store over `data` (as NAME), in a fresh trio run."""

    async def main() -> None:
        cache = MemoryCache(BLOCK, room=room)
        fetcher = (FailingFetcher if failing else MemoryFetcher)({NAME: data}, cache)
        async with trio.open_nursery() as nursery:
            store = BlockStore(
                cache, fetcher, nursery, client=fetcher,
                min_chunk_bytes=2 * BLOCK, max_chunk_bytes=8 * BLOCK,
                max_prefetch_bytes=1 << 20,
            )  # fmt: skip
            await scenario(store, fetcher)
            nursery.cancel_scope.cancel()

    trio.run(main)


reads = st.lists(st.tuples(st.integers(0, 1200), st.integers(1, 300)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 1100), reads=reads, room=st.booleans(), together=st.booleans())
def test_random_reads_return_exactly_the_source_bytes(
    size: int, reads: list[tuple[int, int]], room: bool, together: bool
) -> None:
    data = source_bytes(size, seed=size)
    file = stored(size)

    async def read(store: BlockStore, start: int, length: int) -> None:
        got = await store.read(file, start, start + length)
        assert bytes(got) == data[start : start + length]

    async def scenario(store: BlockStore, _fetcher: MemoryFetcher) -> None:
        if together:  # concurrent readers, some fetching ahead
            async with trio.open_nursery() as readers:
                for start, length in reads:
                    store.prefetch(file, start + length, start + 4 * length)
                    readers.start_soon(read, store, start, length)
        else:
            for start, length in reads:
                await read(store, start, length)

    run_with_store(data, scenario, room=room)


def test_concurrent_readers_of_one_block_share_one_fetch() -> None:
    data = source_bytes(10 * BLOCK)
    file = stored(len(data))

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        fetcher.gate = trio.Event()
        got: list[bytes] = []

        async def read(start: int) -> None:
            got.append(bytes(await store.read(file, start, start + 10)))

        async with trio.open_nursery() as readers:
            for start in range(0, BLOCK - 10, 5):
                readers.start_soon(read, start)
            await trio.testing.wait_all_tasks_blocked()
            fetcher.gate.set()
        assert sorted(got) == sorted(data[s : s + 10] for s in range(0, BLOCK - 10, 5))
        assert fetcher.requests == [(NAME, 0, BLOCK)]

    run_with_store(data, scenario)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 3000),
    read_size=st.integers(1, 400),
    ahead=st.integers(0, 1000),
)
def test_a_sequential_read_with_prefetch_fetches_every_byte_once(
    size: int, read_size: int, ahead: int
) -> None:
    data = source_bytes(size, seed=read_size)
    file = stored(size)

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        out = bytearray()
        for offset in range(0, size, read_size):
            store.prefetch(file, offset + read_size, offset + read_size + ahead)
            out += await store.read(file, offset, offset + read_size)
        assert out == data
        blocks = -(-size // BLOCK)
        assert fetcher.fetched == {(NAME, i): 1 for i in range(blocks)}

    run_with_store(data, scenario)


@pytest.mark.parametrize(
    "error",
    [errors.TransportError("connection reset"), errors.ServerError("503", status=503)],
)
def test_a_failing_fetch_is_the_readers_error_and_a_later_read_tries_again(
    error: Exception,
) -> None:
    data = source_bytes(4 * BLOCK)
    file = stored(len(data))

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        assert isinstance(fetcher, FailingFetcher)
        fetcher.errors[1] = error
        with pytest.raises(type(error)):
            await store.read(file, 10, BLOCK - 10)
        assert bytes(await store.read(file, 10, 2 * BLOCK)) == data[10 : 2 * BLOCK]
        assert store.stats.fetch_errors == 1

    run_with_store(data, scenario, failing=True)


def test_a_failing_prefetch_costs_the_reader_no_error() -> None:
    data = source_bytes(8 * BLOCK)
    file = stored(len(data))

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        assert isinstance(fetcher, FailingFetcher)
        fetcher.errors[1] = errors.TransportError("timed out")
        store.prefetch(file, 0, 8 * BLOCK)
        await trio.testing.wait_all_tasks_blocked()
        assert bytes(await store.read(file, 0, 8 * BLOCK)) == data

    run_with_store(data, scenario, failing=True)


def test_a_short_answer_is_fetched_again_never_served_as_zeros() -> None:
    data = source_bytes(3 * BLOCK + 5)
    file = stored(len(data))

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        assert isinstance(fetcher, FailingFetcher)
        fetcher.short = {1}
        assert bytes(await store.read(file, 0, len(data))) == data
        fetcher.short = None  # from now on every answer ends early
        other = stored(len(data), Link("/download/b"))
        other = StoredFile(FileKey("ws", "call2", NAME, len(data)), other.link)
        with pytest.raises(errors.ProtocolError):
            await store.read(other, 0, BLOCK)

    run_with_store(data, scenario, failing=True)


def test_a_refused_download_is_link_expired_and_the_renewed_link_is_read() -> None:
    data = source_bytes(5 * BLOCK)
    link = Link("/download/old")
    file = stored(len(data), link)

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        assert isinstance(fetcher, FailingFetcher)
        refused = errors.AuthError("403 link expired", status=403)
        fetcher.refused["/download/old"] = refused
        with pytest.raises(LinkExpired) as caught:
            await store.read(file, 0, 2 * BLOCK)
        assert caught.value.stale == link.path and caught.value.error is refused
        assert caught.value.link is link and caught.value.key == file.key
        assert store.stats.fetch_errors == 0  # renewing is the records layer's
        link.path = DownloadPath("ws", "call", NAME, "/download/new")
        assert bytes(await store.read(file, 0, 2 * BLOCK)) == data[: 2 * BLOCK]

    run_with_store(data, scenario, failing=True)


def test_without_room_reads_are_served_from_memory_and_forgotten_on_close() -> None:
    data = source_bytes(6 * BLOCK)
    file = stored(len(data))

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        assert bytes(await store.read(file, 0, 3 * BLOCK)) == data[: 3 * BLOCK]
        assert fetcher.direct_bytes == 3 * BLOCK
        assert bytes(await store.read(file, 5, BLOCK + 7)) == data[5 : BLOCK + 7]
        assert fetcher.direct_bytes == 3 * BLOCK  # held in memory for the next reads
        store.forget(file.key)
        assert bytes(await store.read(file, 5, BLOCK + 7)) == data[5 : BLOCK + 7]
        assert fetcher.direct_bytes == 5 * BLOCK

    run_with_store(data, scenario, room=False)
