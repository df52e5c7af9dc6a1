"""Read-ahead hints on a re-read after a remount (issue 22): the kernel is asked to
bring a block an earlier mount left into the page cache once, however many windows
of read-ahead cover it before the read that checks it."""

from __future__ import annotations

import random
from pathlib import Path

import trio
import trio.testing

from amigofs.cache.block_format import FileKey
from amigofs.cache.store import BlockStore, StoredFile
from tests.unit.test_block_store_disk import FakeLink, FakeWorker
from tests.unit.test_read_path_perf_safety import BLOCK, earlier_mount, open_disk

BLOCKS = 8


async def test_each_left_block_is_hinted_once(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(BLOCKS * BLOCK)
    key = FileKey("ws", "call", "a", len(data))
    earlier_mount(tmp_path, key, data)
    disk = open_disk(tmp_path)
    hinted: list[int] = []
    read_ahead = disk.read_ahead

    async def counted(key: FileKey, indexes: list[int]) -> None:
        hinted.extend(indexes)
        await read_ahead(key, indexes)

    disk.read_ahead = counted  # type: ignore[method-assign]
    worker = FakeWorker(tmp_path, {"a": data})
    # Of no version to learn: served as soon as checked.
    file = StoredFile(key, FakeLink("a"), versioned=False)
    try:
        async with trio.open_nursery() as nursery:
            store = BlockStore(disk, worker, nursery)  # type: ignore[arg-type]
            # Windows of read-ahead that overlap, as a reader going on in order asks.
            for start in range(0, BLOCKS * BLOCK, BLOCK):
                store.prefetch(file, start, min(len(data), start + 4 * BLOCK))
                await trio.testing.wait_all_tasks_blocked()
            assert sorted(hinted) == list(range(BLOCKS))
            assert bytes(await store.read(file, 0, len(data))) == data
            assert worker.fetched == {}  # all served from the blocks left
            nursery.cancel_scope.cancel()
    finally:
        disk.close()
