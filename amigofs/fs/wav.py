"""Presenting stored audio as WAV files.

A stored WAV file is served byte for byte. A stored headerless file (raw mu-law,
A-law or PCM16, as the vendor sometimes keeps them) is served as a RIFF/WAVE
header computed from the metadata, followed by the stored bytes unchanged, so
that ffmpeg, sox and players open it without flags.
"""

from __future__ import annotations

import struct
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
    codec = _CODECS.get(fmt.strip().lower())
    if codec is None:
        raise UnknownAudioFormat(
            f"stored file {stored_filename} is headerless and its format {fmt!r} is not known"
        )
    tag, bits = codec
    return AudioLayout(wav_header(tag, bits, sample_rate, stored_size), stored_size)


def wav_header(format_tag: int, bits: int, sample_rate: int, data_size: int) -> bytes:
    """A canonical mono RIFF/WAVE header for `data_size` bytes of samples.

    Non-PCM formats (mu-law, A-law) get the 18-byte fmt chunk and the 'fact'
    chunk that the WAVE spec asks of them; PCM gets the classic 44-byte header.
    """
    block_align = bits // 8
    data_size = min(data_size, _MAX_RIFF - 64)
    if format_tag == 1:
        fmt_chunk = struct.pack(
            "<4sIHHIIHH",
            b"fmt ",
            16,
            1,
            1,
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
            1,
            sample_rate,
            sample_rate * block_align,
            block_align,
            bits,
            0,
        )
        extra = struct.pack("<4sII", b"fact", 4, data_size // block_align)
    body = b"WAVE" + fmt_chunk + extra + struct.pack("<4sI", b"data", data_size)
    return struct.pack("<4sI", b"RIFF", len(body) + data_size) + body
