"""The blocks a reader waits for, over a link that throttles each response, come in
GETs side by side, each crossing it within about a round trip; on a fast link, one GET
(amigofs.cache.store)."""

from __future__ import annotations

import random

from amigofs.cache.store import READER_GET_SECONDS, BlockStore
from tests.unit.block_doubles import MemoryFetcher
from tests.unit.test_block_store import BLOCK, NAME, run_with_store, stored


def _requests_for_four_blocks(speed: float) -> list[tuple[str, int, int]]:
    data = random.Random(3).randbytes(16 * BLOCK)
    file = stored(len(data))
    got: list[tuple[str, int, int]] = []

    async def scenario(store: BlockStore, fetcher: MemoryFetcher) -> None:
        store.speed = speed  # as measured from earlier responses
        # In order (not exact): the kernel's request over four blocks.
        assert bytes(await store.read(file, 4 * BLOCK, 8 * BLOCK)) == data[4 * BLOCK : 8 * BLOCK]
        got.extend(fetcher.requests)

    run_with_store(data, scenario)
    return got


def test_a_slow_response_splits_a_readers_blocks_into_gets_side_by_side() -> None:
    # One block a round trip's time per response (3 MB/s and 256 KiB blocks, say).
    requests = _requests_for_four_blocks(BLOCK / READER_GET_SECONDS)
    assert sorted(requests) == [(NAME, i * BLOCK, (i + 1) * BLOCK) for i in range(4, 8)]


def test_a_fast_response_takes_a_readers_blocks_in_one_get() -> None:
    requests = _requests_for_four_blocks(100 * BLOCK / READER_GET_SECONDS)
    assert requests == [(NAME, 4 * BLOCK, 8 * BLOCK)]
