"""The fetch worker's announcements of stored blocks (issue 22, CPU): a fast download
announces its blocks a few at a time, not one line per block (each line costs both
processes a wake-up, a JSON line and the stats), while a slow one still announces
each block as soon as it is stored; and whatever ends a download, every block stored
is announced, once.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from amigofs.api import errors
from amigofs.api.models import DownloadPath
from amigofs.api.ranges import Sink, Version
from amigofs.cache.worker import ANNOUNCE_EVERY, _download_blocks

BLOCK = 64 << 10
SIZE = 64 * BLOCK
DATA = random.Random(22).randbytes(SIZE)
PATH = DownloadPath("", "", "outbound.wav", "/x")


class StreamingClient:
    """Delivers a body `chunk` bytes at a time, one chunk every `gap` seconds (of the
    test's clock); fails with TransportError once `fail_after` bytes are in."""

    def __init__(self, chunk: int, gap: float, fail_after: int | None = None) -> None:
        self.chunk, self.gap, self.fail_after = chunk, gap, fail_after

    async def download_into(
        self, path: DownloadPath, start: int, sink: Sink, *, total: int, version: Version
    ) -> None:
        got = 0
        while len(sink):
            await trio.sleep(self.gap)
            n = min(self.chunk, len(sink))
            sink.take(DATA[start + got : start + got + n])
            got += n
            if self.fail_after is not None and got >= self.fail_after:
                raise errors.TransportError("the connection was cut")


class Recorder:
    """The block writer and the announcement line, as the worker's job hands them."""

    def __init__(self) -> None:
        self.written: dict[int, bytes] = {}
        self.lines: list[list[int]] = []

    def write(self, at: int, data: memoryview) -> list[tuple[int, int, int]]:
        stored = []
        for offset in range(0, len(data), BLOCK):
            index = (at + offset) // BLOCK
            self.written[index] = bytes(data[offset : offset + BLOCK])
            stored.append((index, len(self.written[index]), 0))
        return stored

    async def announce(self, blocks: list[tuple[int, int, int]]) -> None:
        self.lines.append([index for index, _length, _crc in blocks])

    def announced(self) -> list[int]:
        return [index for line in self.lines for index in line]


async def download(client: StreamingClient, recorder: Recorder) -> None:
    last = await _download_blocks(
        client,  # type: ignore[arg-type]
        PATH, 0, SIZE, lambda: memoryview(bytearray(BLOCK)), SIZE, recorder.write, recorder.announce,
        Version(None, True),
    )  # fmt: skip
    if last:  # the job's last line ("done") carries the blocks stored since its last line
        await recorder.announce(last)


async def test_a_fast_download_announces_blocks_a_few_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    # 16 KiB every 50 us: a block every 200 us, ~330 MB/s.
    await download(StreamingClient(16 << 10, 50e-6), recorder)
    assert recorder.announced() == list(range(64))
    assert all(recorder.written[i] == DATA[i * BLOCK : (i + 1) * BLOCK] for i in range(64))
    assert len(recorder.lines) <= 64 // 4


async def test_a_slow_download_announces_each_block_when_it_is_stored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    announced_at: list[float] = []

    async def announce(blocks: list[tuple[int, int, int]]) -> None:
        announced_at.append(trio.current_time())
        await Recorder.announce(recorder, blocks)

    recorder.announce = announce  # type: ignore[method-assign]
    gap = 4 * ANNOUNCE_EVERY  # a block lands every 16 intervals
    started = trio.current_time()
    await download(StreamingClient(16 << 10, gap), recorder)
    assert recorder.lines == [[i] for i in range(64)]
    # Each as soon as it was whole: block i is in after 4 (i + 1) chunks.
    for i, at in enumerate(announced_at):
        assert at - started == pytest.approx(4 * (i + 1) * gap)


async def test_a_failed_download_announces_every_block_it_stored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    with pytest.raises(errors.TransportError):
        await download(StreamingClient(16 << 10, 50e-6, fail_after=20 * BLOCK + 16384), recorder)
    assert recorder.announced() == sorted(recorder.written) == list(range(20))


async def test_a_cancelled_download_announces_every_block_it_stored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    with trio.move_on_after(40 * 200e-6 + 1e-6):  # about 40 blocks in
        await download(StreamingClient(16 << 10, 50e-6), recorder)
    assert 10 < len(recorder.written) < 64
    assert recorder.announced() == sorted(recorder.written)
