"""Per-open-file readahead: is the reader sequential, and how far ahead to fetch.

Modelled on what the field's best prefetchers do (mountpoint-s3): nothing is
fetched ahead until the reader has read a good way in order, so a file manager,
`file` or ffprobe peeking at a header, or a player seeking, costs only what it
reads; then the window doubles up to a cap as the reader keeps going. The kernel's
readahead also sends requests slightly out of order, so small jumps forward or back
do not count as seeks.

What the kernel sends (measured here with the mount's debug lines, 1 MiB kernel
readahead, on the link profile):
- a first read of 64 KiB at offset 0 arrives as one request of 128 KiB (the kernel's
  first readahead is twice a small read); a read of 64 KiB at the end as the pages
  under it (68 KiB when it is not page-aligned), never past the end;
- one large read() (plain `file` reads 7 MiB at the start, then 7 MiB at the end) is
  turned into readahead windows of 1 MiB, sent as requests of 1 MiB in order from the
  first one on, as fast as they are answered, and one more window past the read's end
  (8 MiB in all);
- a program making small reads from the start (tar reads 10 KiB at a time, sha256sum
  32 KiB) gets a small first request (64 or 128 KiB), then the kernel's window doubling
  as it goes on (128K, 256K, 512K), then requests of 1 MiB.
So a run from the start whose first request is smaller than the kernel's window is a
reader that goes on by small reads: once past STREAM_AFTER it gets its window (tar and
sha256sum read files of 1-30 MB whole over a link, each round trip showing). A run
whose first request is the kernel's whole window looks like one large read until it
goes on past it: the rule then waits until the run is longer than a single read by a
program that looks at a file takes (LARGE_READ, with the kernel's window past it): a
read that stops there and seeks never had a window opened for it, and a stream of
large reads gets its window a few MiB in, the kernel's own readahead carrying it until
then. A run that does not start at the file's start (a player's seek) waits so too.

The first read of a file, and each read after a seek, is not in order (`in_order`):
the store then fetches the bytes asked and no more (see amigofs.cache.store).
"""

from __future__ import annotations

from dataclasses import dataclass

BACKWARD_TOLERANCE = 1 << 20
FORWARD_TOLERANCE = 16 << 20
# The kernel's readahead past what a program reads (the mount's --kernel-readahead).
KERNEL_READAHEAD = 1 << 20
# How far ahead a read may start and still go on with the run: within the kernel's
# windows in flight, whose requests overtake one another.
RUN_REACH = 2 * KERNEL_READAHEAD
# The longest single read a program makes to look at a file: `file` reads 7 MiB at
# its start (and as much at its end), which Midnight Commander's F3 runs too.
LARGE_READ = 7 << 20
# How far a run from a file's start whose first request was smaller than the kernel's
# window (a program making small reads: see the module's docstring) goes before it is
# taken for a stream and gets its window.
STREAM_AFTER = 2 << 20
# A small first request at a file's start (`head -c 64K` reads 32 KiB at a time: the
# kernel asks [0, 32K), then at the next read its readahead [32K, 160K)) is followed
# by the kernel's readahead of about four times it. Fetched with it, that next request
# costs no round trip of its own; a first request of 64 KiB or more (`file -P
# bytes=65536` asks 128 KiB) already carries the kernel's readahead and gets nothing.
SMALL_FIRST_READ = 64 << 10
FIRST_READ_FOLLOWED_BY = 4


def first_fetch_end(start: int, end: int, file_size: int) -> int:
    """Where a fetch of the exact bytes [start, end) of a read not in order ends: past
    `end` only for a small first request at the file's start."""
    if start == 0 and end < SMALL_FIRST_READ:
        return min(file_size, end * (1 + FIRST_READ_FOLLOWED_BY))
    return end


@dataclass(slots=True)
class Readahead:
    initial_window: int = 4 << 20
    max_window: int = 32 << 20
    # Bytes read in order since the last seek before anything is fetched ahead:
    # more than one large read and the kernel's readahead past it, so that such a
    # read followed by a seek opens no window (see the module's docstring).
    ramp_after: int = LARGE_READ + 2 * KERNEL_READAHEAD
    # The same for a run from the file's start made of small reads: the kernel's
    # requests show a reader that goes on, not one large read.
    stream_after: int = STREAM_AFTER
    # Whether the latest read went on from the ones before it (not the first read,
    # not a seek): if not, only what it asks is fetched.
    in_order: bool = False
    _started: bool = False
    # Whether the run started at the file's start with a request smaller than the
    # kernel's window: small reads, ramping (see the module's docstring).
    _ramping: bool = False
    _expected: int = 0
    _streak: int = 0
    _window: int = 0
    _horizon: int = 0

    def on_read(self, offset: int, size: int, file_size: int) -> tuple[int, int] | None:
        """Records a read; returns the range to fetch ahead of it, if any."""
        end = min(offset + size, file_size)
        expected = self._expected
        # A read that starts within what was read goes on from the reads before
        # (`in_order`): its blocks are fetched. One that leaves a gap may be a jump
        # (a sniff's read of the end of a small file lands a few KiB past its first
        # read) and is fetched as asked, never a byte more, so the bytes a piece
        # already holds are not fetched again as part of a block. It goes on with the
        # run when within the kernel's windows (its requests overtake one another),
        # else the run starts over, and only a jump too far for a stream that skips a
        # little (FORWARD_TOLERANCE) closes its window.
        near = self._started and expected - BACKWARD_TOLERANCE <= offset
        self.in_order = near and offset <= expected
        if near and offset <= expected + RUN_REACH:
            # How far the run got: a request overtaking others counts theirs too.
            self._streak += max(0, end - expected)
            self._expected = max(expected, end)
        elif near and offset <= expected + FORWARD_TOLERANCE:
            self._streak = end - offset
            self._expected = end
            self._ramping = False
        else:  # the first read, or a seek: start over with no window
            self._started = True
            self._ramping = offset == 0 and size < KERNEL_READAHEAD
            self._streak = end - offset
            self._window = 0
            self._horizon = end
            self._expected = end
        ramp_after = min(self.stream_after, self.ramp_after) if self._ramping else self.ramp_after
        if self._streak < ramp_after or end + self._window // 2 < self._horizon:
            return None
        self._window = min(max(2 * self._window, self.initial_window), self.max_window)
        start = max(self._horizon, end)
        stop = min(file_size, end + self._window)
        self._horizon = max(self._horizon, stop)
        return (start, stop) if stop > start else None
