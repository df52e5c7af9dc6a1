"""Presenting stored audio as WAV files.

A stored WAV file is served byte for byte. A stored headerless file (raw mu-law,
A-law or PCM16, as the vendor sometimes keeps them) is served as a RIFF/WAVE
header computed from the metadata, followed by the stored bytes unchanged, so
that ffmpeg, sox and players open it without flags.

`read_wav_header` finds where a stored WAV's samples lie (its header may carry
any chunks before them, LIST among the commonest), for call.wav, which must
know it to mix the samples themselves.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# Spellings seen for the metadata's *_format fields, by what they mean.
_CODECS: dict[str, tuple[int, int]] = {}  # name -> (WAVE format tag, bits per sample)
for _names, _codec in (
    (
        ("mulaw", "ulaw", "mu-law", "u-law", "pcm_mulaw", "g711u", "g711_ulaw", "audio/x-mulaw"),
        (7, 8),
    ),
    (("alaw", "a-law", "pcm_alaw", "g711a", "g711_alaw", "audio/x-alaw"), (6, 8)),
    (("pcm", "pcm16", "pcm_s16le", "s16le", "linear16", "lpcm", "pcm16le", "l16"), (1, 16)),
):
    for _name in _names:
        _CODECS[_name] = _codec

WAV_EXTENSIONS = (".wav", ".wave")
_MAX_RIFF = 0xFFFFFFFF


class UnknownAudioFormat(ValueError):
    """A headerless file whose format the metadata does not name in a way we know."""


class BadWavHeader(ValueError):
    """A stored WAV file whose header cannot be read as one."""


def codec_of(fmt: str) -> tuple[int, int] | None:
    """(WAVE format tag, bits per sample) of a metadata *_format value; None if unknown."""
    return _CODECS.get(fmt.strip().lower())


@dataclass(slots=True, frozen=True)
class AudioLayout:
    """How a presented .wav file is made: `header` then the stored file's bytes."""

    header: bytes
    stored_size: int

    @property
    def size(self) -> int:
        return len(self.header) + self.stored_size


def is_wav_container(stored_filename: str) -> bool:
    return stored_filename.lower().endswith(WAV_EXTENSIONS)


def audio_layout(stored_filename: str, fmt: str, sample_rate: int, stored_size: int) -> AudioLayout:
    if is_wav_container(stored_filename):
        return AudioLayout(b"", stored_size)
    codec = codec_of(fmt)
    if codec is None:
        raise UnknownAudioFormat(
            f"stored file {stored_filename} is headerless and its format {fmt!r} is not known"
        )
    tag, bits = codec
    return AudioLayout(wav_header(tag, bits, sample_rate, stored_size), stored_size)


def wav_header(
    format_tag: int, bits: int, sample_rate: int, data_size: int, channels: int = 1
) -> bytes:
    """A canonical RIFF/WAVE header for `data_size` bytes of samples.

    Non-PCM formats (mu-law, A-law) get the 18-byte fmt chunk and the 'fact'
    chunk that the WAVE spec asks of them; PCM gets the classic 44-byte header.
    """
    block_align = bits // 8 * channels
    data_size = min(data_size, _MAX_RIFF - 64)
    if format_tag == 1:
        fmt_chunk = struct.pack(
            "<4sIHHIIHH",
            b"fmt ",
            16,
            1,
            channels,
            sample_rate,
            sample_rate * block_align,
            block_align,
            bits,
        )
        extra = b""
    else:
        fmt_chunk = struct.pack(
            "<4sIHHIIHHH",
            b"fmt ",
            18,
            format_tag,
            channels,
            sample_rate,
            sample_rate * block_align,
            block_align,
            bits,
            0,
        )
        extra = struct.pack("<4sII", b"fact", 4, data_size // block_align)
    body = b"WAVE" + fmt_chunk + extra + struct.pack("<4sI", b"data", data_size)
    return struct.pack("<4sI", b"RIFF", len(body) + data_size) + body


# A stored WAV's samples are expected within this much of its start: a header
# claiming more is not believed (and would cost downloads to walk).
MAX_HEADER_BYTES = 1 << 20
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(slots=True, frozen=True)
class WavInfo:
    """What a stored WAV's header says: its format and where its samples lie."""

    format_tag: int
    channels: int
    sample_rate: int
    bits: int
    data_offset: int
    data_size: int


async def read_wav_header(read: Callable[[int, int], Awaitable[bytes]], size: int) -> WavInfo:
    """Walks a WAV file's chunks up to its data chunk; `read(start, end)` gives its
    bytes (a stored file's header lies in its first block, so this costs one).

    Any chunk may come before the data (LIST, fact, bext, JUNK...); a 'fmt ' chunk
    must. BadWavHeader if it is no RIFF/WAVE file or its chunks run out of bounds.
    """
    riff = bytes(await read(0, 12))
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise BadWavHeader("not a RIFF/WAVE file")
    position = 12
    fmt: tuple[int, int, int, int] | None = None
    while position + 8 <= min(size, MAX_HEADER_BYTES):
        head = bytes(await read(position, position + 8))
        if len(head) < 8:
            break
        chunk_id, chunk_size = head[:4], struct.unpack("<I", head[4:])[0]
        body = position + 8
        if chunk_id == b"data":
            if fmt is None:
                raise BadWavHeader("data chunk before any fmt chunk")
            return WavInfo(*fmt, data_offset=body, data_size=chunk_size)
        if chunk_id == b"fmt ":
            if chunk_size < 16:
                raise BadWavHeader(f"fmt chunk of {chunk_size} bytes")
            raw = bytes(await read(body, body + min(chunk_size, 40)))
            if len(raw) < 16:
                raise BadWavHeader("fmt chunk cut short")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", raw[:16])
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(raw) >= 26:
                tag = struct.unpack("<H", raw[24:26])[0]  # the sub-format GUID's first field
            fmt = (tag, channels, rate, bits)
        position = body + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    raise BadWavHeader(f"no data chunk within the first {min(size, MAX_HEADER_BYTES)} bytes")
