"""The fetch worker's memory: download buffers reused across jobs of any size, and a heap
that keeps freed memory, so a cold read does not pay a page fault for every page its
bytes pass through (the worker's largest cost after the disk writes)."""

from __future__ import annotations

import contextlib
import resource

import pytest

from amigofs.cache.worker import POOL_BUFFERS, BufferPool, steady_heap

MIB = 1 << 20


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _churn(rounds: int = 20) -> None:
    """What the worker does with each body chunk: a fresh 1 MiB object, copied, freed."""
    for _ in range(rounds):
        chunk = bytes(MIB)
        copy = chunk[1:]
        del chunk, copy


def test_freed_chunks_are_reused_without_page_faults() -> None:
    if not steady_heap():
        pytest.skip("not glibc: no mallopt")
    _churn()  # the heap grows once
    before = _faults()
    _churn()
    # 20 rounds touch 40 MiB (10,240 pages); from the kept heap, next to none fault.
    assert _faults() - before < 1000


def test_a_smaller_job_gets_a_larger_free_buffer() -> None:
    pool = BufferPool()
    with pool.lend(3 * MIB) as first:
        first[0:4] = b"seen"
    with pool.lend(MIB) as second:
        # The 4 MiB buffer the first job touched, not a new mapping to fault in.
        assert len(second) == MIB
        assert bytes(second[0:4]) == b"seen"


def test_jobs_at_once_get_buffers_of_their_own() -> None:
    pool = BufferPool()
    with pool.lend(MIB) as first, pool.lend(MIB) as second:
        first[0:1] = b"a"
        second[0:1] = b"b"
        assert bytes(first[0:1]) == b"a"


def test_the_smallest_buffer_that_holds_a_job_is_lent() -> None:
    pool = BufferPool()
    with pool.lend(4 * MIB) as big, pool.lend(MIB) as small:
        big[0:3] = b"big"
        small[0:5] = b"small"
    with pool.lend(100_000) as job:
        assert bytes(job[0:5]) == b"small"
    with pool.lend(2 * MIB) as job:
        assert bytes(job[0:3]) == b"big"


def test_the_pool_keeps_a_bounded_number_of_buffers() -> None:
    pool = BufferPool()
    with contextlib.ExitStack() as lent:
        views = [lent.enter_context(pool.lend(4096 * (i + 1))) for i in range(POOL_BUFFERS + 5)]
        for i, view in enumerate(views):
            view[0:1] = bytes([i % 256])
    # The largest are kept: a job as big as the largest still finds its buffer.
    with pool.lend(4096 * (POOL_BUFFERS + 5)) as job:
        assert job[0] in range(POOL_BUFFERS, POOL_BUFFERS + 5)  # one of the largest
    assert len(pool) == POOL_BUFFERS
