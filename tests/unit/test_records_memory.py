"""What the call records a mount keeps in memory weigh (issue 21, bounded memory): at most
MAX_RECORDS of them, more read again from the disk, and those fit in a few MB, so that
the mount's memory after looking up any number of calls stays within 10 MB of where it
started. Records loaded with their links (the heaviest kind) from the emulator in this
process, weighed with tracemalloc."""

from __future__ import annotations

import gc
import tracemalloc

import trio.testing

from amigofs.cache.store import BlockStore
from amigofs.daemon.mount import MAX_RECORDS
from amigofs.fs import records
from amigofs.fs.records import CallRecord, RecordingSource
from tests.unit.block_doubles import MemoryCache, MemoryFetcher
from tests.unit.inprocess import served_emulator

BLOCK = 64 << 10
WEIGHED = 16
# Deep enough to see a load's allocations down to the JSON decoder's.
FRAMES = 24
# What the records kept may weigh in all: the rest of the 10 MB is the MetaStore's
# SQLite page cache and what the heap keeps of what came and went.
RECORDS_BUDGET = 4 << 20


def _loaded_by_records() -> int:
    """Bytes allocated under amigofs.fs.records and not freed: what loads made (the
    emulator, served in this process, keeps its own)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, records.__file__, all_frames=True)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_the_records_kept_in_memory_fit_in_a_few_megabytes() -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=WEIGHED + 8) as served:
        workspace_id = served.workspace_ids[0]
        store = BlockStore(
            MemoryCache(BLOCK), MemoryFetcher({}, MemoryCache(BLOCK)), served.nursery
        )
        source = RecordingSource(served.client, store)
        sids = [r.call_sid for r in served.app.data.recordings()]
        for sid in sids[WEIGHED:]:  # the client's connections and caches, warmed up
            await source.load(workspace_id, sid, None)
        await trio.testing.wait_all_tasks_blocked()
        kept: list[CallRecord] = []
        gc.collect()
        tracemalloc.start(FRAMES)
        try:
            before = _loaded_by_records()
            for sid in sids[:WEIGHED]:
                kept.append(await source.load(workspace_id, sid, None))
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            weight = (_loaded_by_records() - before) / len(kept)
        finally:
            tracemalloc.stop()
        assert all(record.linked for record in kept)
        assert MAX_RECORDS * weight <= RECORDS_BUDGET, f"{weight:.0f} B a record"
