"""call.wav's layout (amigofs.policy.stereo) against a stereo file computed the plain
way, sample by sample, from two mono channels in memory: caller (inbound) left,
agent (outbound) right, the lower rate held, the shorter channel padded with silence.

The G.711 decoding of the ground truth is the emulator's (amigofs.emulator.data),
written apart from amigofs's tables; its header is Python's `wave` module's."""

from __future__ import annotations

import io
import random
import struct
import warnings
import wave
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amigofs.emulator.audio import ulaw2lin
from amigofs.policy.stereo import (
    ALAW,
    FRAME_BYTES,
    HEADER_BYTES,
    MULAW,
    PCM,
    Track,
    frames_of,
    frames_under,
    mix,
    spans,
)

RATES = [8000, 11025, 16000, 22050, 24000, 44100, 48000]


@dataclass(slots=True, frozen=True)
class Mono:
    """One channel as stored: its bytes, how they are coded, its rate."""

    track: Track
    stored: bytes

    def sample(self, i: int) -> int:
        if self.track.format_tag == MULAW:
            return ulaw2lin(self.stored[i])
        value: int = struct.unpack_from("<h", self.stored, 2 * i)[0]
        return value


@st.composite
def monos(draw: st.DrawFn, format_tag: int) -> Mono:
    rate = draw(st.sampled_from(RATES))
    samples = draw(st.integers(0, 1500))
    width = 2 if format_tag == PCM else 1
    stored = random.Random(draw(st.integers(0, 2**32))).randbytes(samples * width)
    return Mono(Track(format_tag, rate, samples), stored)


def plain_stereo(left: Mono, right: Mono) -> bytes:
    """call.wav, the obvious way: frame n of a channel at rate r holds its sample
    floor(n * r / R), or silence past its end."""
    rate = max(left.track.rate, right.track.rate)
    frames = []
    n = 0
    while True:
        held = [(n * m.track.rate // rate, m) for m in (left, right)]
        if all(i >= m.track.samples for i, m in held):
            break
        frames.append(
            struct.pack("<hh", *(m.sample(i) if i < m.track.samples else 0 for i, m in held))
        )
        n += 1
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"".join(frames))
    return out.getvalue()


def laid_out(left: Mono, right: Mono, first: int, stop: int) -> bytes:
    """Frames [first, stop) as amigofs makes them: the spans under them, sliced from
    the stored bytes, mixed."""
    tracks = [left.track, right.track]
    rate = max(t.rate for t in tracks)
    under = spans(tracks, rate, first, stop)
    stored = [left.stored, right.stored]
    pieces = [
        stored[s.track][s.lo * tracks[s.track].width : s.hi * tracks[s.track].width] for s in under
    ]
    return bytes(mix(tracks, rate, first, stop, list(zip(under, pieces, strict=True))))


@given(monos(MULAW), monos(PCM), st.data())
def test_any_range_of_call_wav_is_the_plain_stereo_file_caller_left(
    inbound: Mono, outbound: Mono, data: st.DataObject
) -> None:
    expected = plain_stereo(inbound, outbound)
    rate = max(inbound.track.rate, outbound.track.rate)
    frames = max(frames_of(m.track.samples, m.track.rate, rate) for m in (inbound, outbound))
    assert HEADER_BYTES + frames * FRAME_BYTES == len(expected)
    reads = st.tuples(st.integers(0, len(expected) + 8), st.integers(1, len(expected) + 8))
    for offset, size in data.draw(st.lists(reads, min_size=1, max_size=8)):
        end = min(offset + size, len(expected))
        first, stop = frames_under(offset, end)
        if end <= max(offset, HEADER_BYTES):
            assert first >= stop  # the header alone, or nothing: no frame needed
            continue
        # The frames under exactly the bytes asked for: none more.
        start = HEADER_BYTES + first * FRAME_BYTES
        assert start <= max(offset, HEADER_BYTES) < start + FRAME_BYTES
        assert end <= HEADER_BYTES + stop * FRAME_BYTES < end + FRAME_BYTES
        assert (
            laid_out(inbound, outbound, first, stop)
            == expected[start : HEADER_BYTES + stop * FRAME_BYTES]
        )


@given(monos(PCM), monos(MULAW), st.integers(0, 12_000), st.integers(1, 3_000))
def test_the_spans_are_the_samples_held_in_those_frames_and_no_others(
    left: Mono, right: Mono, first: int, count: int
) -> None:
    tracks = [left.track, right.track]
    rate = max(t.rate for t in tracks)
    stop = first + count
    found = {s.track: s for s in spans(tracks, rate, first, stop)}
    for index, track in enumerate(tracks):
        held = {
            n * track.rate // rate
            for n in range(first, stop)
            if n * track.rate // rate < track.samples
        }
        if not held:
            assert index not in found
            continue
        span = found[index]
        assert (span.lo, span.hi) == (min(held), max(held) + 1)
        assert span.first == first
        assert span.last == min(stop, frames_of(track.samples, track.rate, rate))


def left_samples(codes: bytes, format_tag: int) -> list[int]:
    """The left channel of call.wav of one channel of `codes` at 8 kHz, as samples."""
    mono, silent = Mono(Track(format_tag, 8000, len(codes)), codes), Mono(Track(PCM, 8000, 0), b"")
    laid = laid_out(mono, silent, 0, len(codes))
    return [sample for sample, _silence in struct.iter_unpack("<hh", laid)]


def test_mulaw_decodes_as_the_emulator_does() -> None:
    codes = bytes(range(256))
    assert left_samples(codes, MULAW) == [ulaw2lin(c) for c in codes]


def test_a_call_with_no_samples_is_a_header_alone() -> None:
    silent = Mono(Track(PCM, 16000, 0), b"")
    assert frames_of(0, 16000, 16000) == 0
    assert spans([silent.track, silent.track], 16000, 0, 10) == []
    assert len(plain_stereo(silent, silent)) == HEADER_BYTES


def test_alaw_decodes_as_python_audioop_does() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in Python 3.13
    codes = bytes(range(256))
    pcm = audioop.alaw2lin(codes, 2)
    assert left_samples(codes, ALAW) == list(struct.unpack(f"<{len(codes)}h", pcm))
