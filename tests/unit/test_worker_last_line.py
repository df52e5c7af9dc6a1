"""The fetch worker's last line of a job (issue 22, CPU): the blocks a download stores
at its end go with the job's "done" line, not on a line of their own just before it,
so a job costs both processes one wake-up less. (A download that fails or is cancelled
still announces every block it stored: tests/unit/test_worker_announcements.py.)"""

from __future__ import annotations

import trio
import trio.testing

from amigofs.api.ranges import Version
from amigofs.cache.worker import _download_blocks
from tests.unit.test_worker_announcements import (
    BLOCK,
    DATA,
    PATH,
    SIZE,
    Recorder,
    StreamingClient,
)


async def run(client: StreamingClient, recorder: Recorder) -> list[tuple[int, int, int]]:
    return await _download_blocks(
        client,  # type: ignore[arg-type]
        PATH, 0, SIZE, lambda: memoryview(bytearray(BLOCK)), SIZE, recorder.write, recorder.announce,
        Version(None, True),
    )  # fmt: skip


async def test_the_last_blocks_of_a_download_go_with_its_last_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    last = await run(StreamingClient(16 << 10, 50e-6), recorder)
    # The final block is stored as the body ends: it is handed back for the "done"
    # line, and no line of its own was sent for it.
    assert [index for index, _length, _crc in last][-1] == SIZE // BLOCK - 1
    assert recorder.announced() + [index for index, _length, _crc in last] == list(
        range(SIZE // BLOCK)
    )
    assert all(recorder.written[i] == DATA[i * BLOCK : (i + 1) * BLOCK] for i in range(64))
