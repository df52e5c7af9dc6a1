"""The stored audio files: G.711 mu-law and 16-bit PCM made from a few seeded "voices",
with their WAV headers, read by byte range without ever being materialized.

This is the emulator's own G.711 and WAV code, written apart from amigofs.fs.wav and
amigofs.fs.stereo on purpose: it is the ground truth those are tested against.

Audio is real audio but never materialized as a whole file: an hour of outbound PCM is 115 MB
and benchmarks pull GB/s through the emulator. A few "voices" per channel (a couple of seconds of
harmonic tones under a syllable-rate envelope, periodic) are generated once per process; each
(call, channel) picks one, and the data region of a file is a sequence of fixed-size,
sample-aligned blocks, block k being a slice of the voice starting at a pseudo-random phase derived
from (seed, workspace, call, channel, k). Any byte range is
then a few slices of a cached buffer, and every byte depends on its position, so a client that
reads the wrong offset gets different bytes.
"""

from __future__ import annotations

import array
import hashlib
import math
import random
import struct
import sys
from collections.abc import Iterator
from functools import lru_cache
from typing import Literal, Protocol

from amigofs.emulator import seeded

INBOUND_RATE = 8000
OUTBOUND_RATE = 16000
INBOUND_FORMAT = "mulaw"
OUTBOUND_FORMAT = "pcm_s16le"

BLOCK_BYTES = 64 * 1024
"""Size of the data-region blocks; even, so blocks are sample-aligned for 8- and 16-bit audio."""

BASE_PERIOD_SECONDS = 2
"""Length of the periodic base signal. Tone frequencies are multiples of 1/period so it loops."""

Channel = Literal["inbound", "outbound"]

_ULAW_BIAS = 0x84
_ULAW_CLIP_14BIT = 8159


def lin2ulaw(sample: int) -> int:
    """G.711 mu-law encoding of one signed 16-bit sample.

    Quantizes to 14 bits first, as the reference implementation (and so sox, ffmpeg and
    Python's old audioop) does, so the bytes match what those tools produce.
    """
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value = -value
        mask = 0x7F
    value = min(value, _ULAW_CLIP_14BIT) + (_ULAW_BIAS >> 2)
    segment = max(value.bit_length() - 6, 0)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def ulaw2lin(code: int) -> int:
    """G.711 mu-law decoding of one byte to a signed 16-bit sample."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code >> 4) & 0x07)
    magnitude -= _ULAW_BIAS
    return -magnitude if code & 0x80 else magnitude


def _speech_like(rng: random.Random, rate: int) -> list[int]:
    """One period of a voiced, syllable-paced signal: harmonics of a pitch, gated into words."""
    n = rate * BASE_PERIOD_SECONDS
    # Whole cycles per period, so the period loops without a click.
    cycles = round(rng.uniform(95, 230) * BASE_PERIOD_SECONDS)
    harmonics = [(h, rng.uniform(0.4, 1.0) / h) for h in range(1, 6) if cycles * h < n / 2]
    norm = sum(weight for _, weight in harmonics)
    # One cycle of the harmonic mix, read as a wavetable: far cheaper than sin() per harmonic.
    table_size = 4096
    table = [
        sum(w * math.sin(2 * math.pi * h * k / table_size) for h, w in harmonics) / norm
        for k in range(table_size)
    ]
    syllables = rng.choice((6, 7, 8, 9, 10))  # 3 to 5 syllables a second
    # Which syllables are voiced: a word pattern with pauses, as speech has.
    voiced = [rng.random() < 0.75 for _ in range(syllables)]
    voiced[0] = True
    loudness = rng.uniform(0.35, 0.6) * 32767
    noise = [rng.uniform(-0.02, 0.02) for _ in range(1024)]
    samples_per_syllable = n / syllables
    samples: list[int] = []
    for i in range(n):
        syllable, into = divmod(i / samples_per_syllable, 1.0)
        envelope = math.sin(math.pi * into) ** 2 if voiced[int(syllable)] else 0.0
        tone = table[(i * cycles * table_size // n) % table_size]
        samples.append(int(loudness * (envelope * tone + noise[i % 1021])))
    return samples


VOICES = 16
"""Distinct base signals per channel. Calls share them, but each block's phase depends on the
call, so the bytes at a given offset still differ between calls (and between seeds)."""


@lru_cache(maxsize=2 * VOICES)
def _voice(channel: Channel, voice: int) -> bytes:
    """The periodic base of a voice, repeated so any block-long slice from any phase fits."""
    rng = seeded.rng(0, "voice", channel, voice)
    if channel == "inbound":
        samples = _speech_like(rng, INBOUND_RATE)
        period = bytes(lin2ulaw(s) for s in samples)
    else:
        samples = _speech_like(rng, OUTBOUND_RATE)
        pcm = array.array("h", samples)
        if sys.byteorder != "little":
            pcm.byteswap()
        period = pcm.tobytes()
    return period * (BLOCK_BYTES // len(period) + 2)


def _pcm_wav_header(data_bytes: int, rate: int) -> bytes:
    return b"".join(
        (
            struct.pack("<4sI4s", b"RIFF", 36 + data_bytes, b"WAVE"),
            struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16),
            struct.pack("<4sI", b"data", data_bytes),
        )
    )


def _ulaw_wav_header(samples: int, rate: int) -> bytes:
    # Non-PCM WAV needs the extended fmt chunk (cbSize) and a fact chunk with the sample count.
    padded = samples + (samples & 1)
    return b"".join(
        (
            struct.pack("<4sI4s", b"RIFF", 4 + 26 + 12 + 8 + padded, b"WAVE"),
            struct.pack("<4sIHHIIHHH", b"fmt ", 18, 7, 1, rate, rate, 1, 8, 0),
            struct.pack("<4sII", b"fact", 4, samples),
            struct.pack("<4sI", b"data", samples),
        )
    )


class StoredObject(Protocol):
    """One stored file of a call, read by byte range."""

    @property
    def size(self) -> int: ...

    @property
    def content_type(self) -> str: ...

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) clipped to the object."""
        ...


class BytesObject:
    """A small stored file held in memory (the metadata document)."""

    __slots__ = ("_body", "content_type")

    def __init__(self, body: bytes, content_type: str) -> None:
        self._body = body
        self.content_type = content_type

    @property
    def size(self) -> int:
        return len(self._body)

    def read(self, start: int, end: int) -> bytes:
        return self._body[start:end]


class AudioObject:
    """An audio file: optional WAV header, a data region of phase-shifted blocks, RIFF pad byte."""

    __slots__ = (
        "_data_bytes",
        "_end_of_data",
        "_header",
        "_key",
        "_period_samples",
        "_sample_bytes",
        "_seed",
        "_source",
        "content_type",
        "size",
    )

    def __init__(
        self,
        *,
        seed: int,
        workspace_id: str,
        call_sid: str,
        channel: Channel,
        samples: int,
        wav: bool,
    ) -> None:
        self._seed = seed
        self._key = f"{seed}:{workspace_id}:{call_sid}:{channel}".encode()
        voice = hashlib.blake2b(self._key + b":voice", digest_size=8).digest()
        self._source = (channel, int.from_bytes(voice, "little") % VOICES)
        if channel == "inbound":
            self._sample_bytes = 1
            self._period_samples = INBOUND_RATE * BASE_PERIOD_SECONDS
            self._header = _ulaw_wav_header(samples, INBOUND_RATE) if wav else b""
        else:
            self._sample_bytes = 2
            self._period_samples = OUTBOUND_RATE * BASE_PERIOD_SECONDS
            self._header = _pcm_wav_header(samples * 2, OUTBOUND_RATE) if wav else b""
        self._data_bytes = samples * self._sample_bytes
        self._end_of_data = len(self._header) + self._data_bytes
        # RIFF chunks are word-aligned: an odd-sized data chunk is followed by a zero pad byte.
        pad = self._data_bytes & 1 if wav else 0
        self.size = self._end_of_data + pad
        self.content_type = "audio/wav" if wav else "application/octet-stream"

    def _block_phase(self, block: int) -> int:
        digest = hashlib.blake2b(self._key + block.to_bytes(8, "little"), digest_size=8).digest()
        return (int.from_bytes(digest, "little") % self._period_samples) * self._sample_bytes

    def pieces(self, start: int, end: int) -> Iterator[bytes | memoryview]:
        """The bytes [start, end) as consecutive buffers, without copying the base."""
        start = max(start, 0)
        end = min(end, self.size)
        header_len = len(self._header)
        if start < header_len:
            yield self._header[start : min(end, header_len)]
        position = max(start, header_len) - header_len
        stop = min(end, self._end_of_data) - header_len
        if position < stop:
            base = memoryview(_voice(*self._source))
            while position < stop:
                block, offset = divmod(position, BLOCK_BYTES)
                length = min(BLOCK_BYTES - offset, stop - position)
                begin = self._block_phase(block) + offset
                yield base[begin : begin + length]
                position += length
        if end > self._end_of_data:
            yield bytes(end - max(start, self._end_of_data))

    def read(self, start: int, end: int) -> bytes:
        return b"".join(self.pieces(start, end))


# --- workspaces and calls ----------------------------------------------------------------------
