"""Per-open-file readahead: is the reader sequential, and how far ahead to fetch.

Modelled on what the field's best prefetchers do (mountpoint-s3): nothing is
fetched ahead until the reader has read a little sequentially, so a file
manager or ffprobe peeking at a header, or a player seeking, costs only the
blocks it touches; then the window doubles up to a cap as the reader keeps
going. "A little" is more than the kernel's own readahead (1 MiB) adds: behind it
a peek of a few hundred KiB, or ffmpeg probing before a seek, looks sequential,
and a window of 16 MiB opened at 512 KiB cost such a peek up to half of an hour's
inbound.wav. The kernel's readahead also sends requests slightly out of order, so
small jumps forward or back do not count as seeks.

A file of SMALL_FILE or less is fetched whole at its first read, in one or two
GETs, not block after block as the kernel asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKWARD_TOLERANCE = 1 << 20
FORWARD_TOLERANCE = 16 << 20
# Fetched whole at the first read: one or two GETs, not one a block.
SMALL_FILE = 1 << 20


@dataclass(slots=True)
class Readahead:
    initial_window: int = 4 << 20
    max_window: int = 32 << 20
    # Sequential bytes read since the last seek before anything is fetched ahead:
    # more than the kernel's own readahead (1 MiB, see --kernel-readahead) adds to a
    # reader, so that its readahead alone does not make a peek or a seek look like a
    # stream (ffmpeg -ss into an hour's inbound.wav fetched 7% of it at 512 KiB).
    ramp_after: int = 2 << 20
    _expected: int = 0
    _streak: int = 0
    _window: int = 0
    _horizon: int = 0

    def on_read(self, offset: int, size: int, file_size: int) -> tuple[int, int] | None:
        """Records a read; returns the range to fetch ahead of it, if any."""
        end = min(offset + size, file_size)
        if self._horizon == 0 and offset == 0 and end < file_size <= SMALL_FILE:
            self._horizon, self._expected = file_size, end
            return (0, file_size) if self.max_window > 0 else None
        if self._expected - BACKWARD_TOLERANCE <= offset <= self._expected + FORWARD_TOLERANCE:
            self._streak += max(0, end - max(offset, self._expected - size))
            self._expected = max(self._expected, end)
        else:  # a seek: start over with no window
            self._streak = end - offset
            self._window = 0
            self._horizon = end
            self._expected = end
        if self._streak < self.ramp_after or end + self._window // 2 < self._horizon:
            return None
        self._window = min(max(2 * self._window, self.initial_window), self.max_window)
        start = max(self._horizon, end)
        stop = min(file_size, end + self._window)
        self._horizon = max(self._horizon, stop)
        return (start, stop) if stop > start else None
