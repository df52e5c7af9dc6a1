"""The layout of call.wav: which samples of each channel make which frames, and how.

call.wav is a canonical 44-byte header, then 16-bit PCM frames of two channels at the
higher of the two rates R: frame n holds the caller's (left, inbound) sample, then
the agent's (right, outbound) one. A channel at rate r is upsampled by sample and
hold (frame n carries its sample floor(n * r / R)), decoded by the G.711 tables if it
is mu-law or A-law, and padded with silence after its end. Every range of call.wav is
byte slices of the two sources' ranges under it, independent of any other read.

This module owns that arithmetic, as plain functions of plain values: the frames
under a byte range, the source samples under those frames (`spans`), and the frames
made of those samples (`mix`). amigofs.fs.stereo reads the samples and checks the
stored headers; the README's "call.wav" section describes the format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HEADER_BYTES = 44
FRAME_BYTES = 4  # two 16-bit samples
MULAW, ALAW, PCM = 7, 6, 1  # WAV format tags


@dataclass(slots=True, frozen=True)
class Track:
    """One channel as the layout needs it: its coding, its rate and its length."""

    format_tag: int  # PCM (16-bit little-endian), ALAW or MULAW
    rate: int
    samples: int

    @property
    def width(self) -> int:
        return 2 if self.format_tag == PCM else 1


@dataclass(slots=True, frozen=True)
class Span:
    """Samples [lo, hi) of track `track` (0 left, 1 right): all of it under frames
    [first, last) of call.wav."""

    track: int
    lo: int
    hi: int
    first: int
    last: int


# --- G.711 -------------------------------------------------------------------------


def ulaw_to_linear(code: int) -> int:
    """G.711 mu-law: one byte to a signed 16-bit sample (the reference decoder)."""
    code = ~code & 0xFF
    magnitude = ((((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)) - 0x84
    return -magnitude if code & 0x80 else magnitude


def alaw_to_linear(code: int) -> int:
    """G.711 A-law: one byte to a signed 16-bit sample (the reference decoder)."""
    code ^= 0x55
    segment = (code & 0x70) >> 4
    magnitude = (code & 0x0F) << 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def _byte_tables(decode: Callable[[int], int]) -> tuple[bytes, bytes]:
    """bytes.translate tables giving the low and the high byte of each code's sample."""
    samples = [decode(code) & 0xFFFF for code in range(256)]
    return bytes(s & 0xFF for s in samples), bytes(s >> 8 for s in samples)


_TABLES = {MULAW: _byte_tables(ulaw_to_linear), ALAW: _byte_tables(alaw_to_linear)}


def decoded(piece: bytes | bytearray, format_tag: int) -> tuple[bytes | bytearray, ...]:
    """The low bytes and the high bytes of a piece's 16-bit samples."""
    if format_tag == PCM:
        return piece[0::2], piece[1::2]
    table_low, table_high = _TABLES[format_tag]
    return piece.translate(table_low), piece.translate(table_high)


# --- the layout --------------------------------------------------------------------


def frames_of(samples: int, rate: int, out_rate: int) -> int:
    """Frames a channel of `samples` at `rate` spans at `out_rate`: ceil(S * R / r)."""
    return -(-samples * out_rate // rate)


def frames_under(offset: int, end: int) -> tuple[int, int]:
    """Frames [first, stop) under bytes [offset, end) of call.wav (the header's bytes
    are under none)."""
    first = max(0, offset - HEADER_BYTES) // FRAME_BYTES
    stop = -(-max(0, end - HEADER_BYTES) // FRAME_BYTES)
    return first, stop


def spans(tracks: Sequence[Track], out_rate: int, first: int, stop: int) -> list[Span]:
    """For each track with samples under frames [first, stop): which ones."""
    found = []
    for index, track in enumerate(tracks):
        rate = track.rate
        last = min(stop, frames_of(track.samples, rate, out_rate))
        if first < last:
            lo, hi = first * rate // out_rate, (last - 1) * rate // out_rate + 1
            found.append(Span(index, lo, hi, first, last))
    return found


def mix(
    tracks: Sequence[Track],
    out_rate: int,
    first: int,
    stop: int,
    laid: Sequence[tuple[Span, bytes | bytearray]],
) -> bytearray:
    """Frames [first, stop): silence, with each span's samples (its stored bytes,
    `(hi - lo) * width` of them) laid in on its side."""
    out = bytearray((stop - first) * FRAME_BYTES)
    for span, piece in laid:
        track = tracks[span.track]
        low, high = decoded(piece, track.format_tag)
        side = 2 * span.track  # the byte of a frame its sample starts at
        _lay(out, first, span.last, track.rate, out_rate, span.lo, low, high, side)
    return out


def _lay(
    out: bytearray,
    first: int,
    last: int,
    rate: int,
    out_rate: int,
    lo: int,
    low: bytes | bytearray,
    high: bytes | bytearray,
    side: int,
) -> None:
    """Writes frames [first, last) of one channel (samples from `lo` on) into `out`.

    floor(n * rate / R) repeats with a period of R/g frames (g = gcd), advancing
    rate/g samples a period: each phase of the period is one strided slice
    assignment, done in C, however long the range.
    """
    g = math.gcd(rate, out_rate)
    period, advance = out_rate // g, rate // g
    for phase in range(period):
        n = first + (phase - first) % period  # first frame >= first in this phase
        if n >= last:
            continue
        count = (last - 1 - n) // period + 1
        source = n * rate // out_rate - lo
        dest = (n - first) * FRAME_BYTES + side
        stride = FRAME_BYTES * period
        taken = slice(source, source + advance * (count - 1) + 1, advance)
        out[dest : dest + stride * (count - 1) + 1 : stride] = low[taken]
        out[dest + 1 : dest + 1 + stride * (count - 1) + 1 : stride] = high[taken]
