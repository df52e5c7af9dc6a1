"""call.wav: a call's two channels as one stereo WAV, caller left, agent right.

The layout, as telephony systems write dual-channel recordings (Twilio
dual-channel, FreeSWITCH stereo):

- A canonical 44-byte header, then 16-bit little-endian PCM, 2 channels, at the
  higher of the two channels' sample rates R. Frame n holds the caller's
  (inbound) sample, then the agent's (outbound) one.
- mu-law and A-law are decoded by the G.711 tables (those of the reference
  implementation, as sox, ffmpeg and Python's audioop decode); PCM16 is copied.
- Upsampling is sample-and-hold: frame n of a channel at rate r carries its
  sample floor(n * r / R). At a ratio of 2 each sample is repeated twice, so the
  even frames carry the source's samples exactly. It is deterministic and needs
  no arithmetic on samples: every read is byte slices of the sources, mapped
  independently of any other read.
- Both channels start at frame 0, the recording's start (one
  media_start_epoch_ms aligns them); the shorter one is padded with silence.
- A channel of S samples at rate r spans ceil(S * R / r) frames; the file has
  as many frames as the longer channel.

Sizes come from the metadata, never from a download: a raw source's sample
count is its size over its sample width; a stored WAV's is its duration times
its rate (how long its header is, is unknown until it is read). The first read
walks the stored headers (one block each, the same blocks inbound.wav and
outbound.wav serve) and checks them against the metadata; on any disagreement
every read is EIO with a log line, never padded or truncated audio.

Reads and prefetches map a range of call.wav to the two sources' byte ranges
under it, so a seek costs only the blocks there, and the blocks are the ones the
mono files are served from. That arithmetic (frames, spans, decoding, mixing) is
amigofs.policy.stereo's; this module owns the reads and the check of the headers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from amigofs.api import errors as api
from amigofs.cache.blocks import Fetch
from amigofs.cache.store import BlockStore, StoredFile
from amigofs.concurrency import gather
from amigofs.fs.wav import BadWavHeader, codec_of, read_wav_header, wav_header
from amigofs.policy.stereo import (
    FRAME_BYTES,
    HEADER_BYTES,
    PCM,
    Span,
    Track,
    frames_of,
    frames_under,
    mix,
    spans,
)

log = logging.getLogger(__name__)

_MAX_DATA = 0xFFFFFFFF - 36  # what a RIFF size field can describe


class StereoMismatch(api.ProtocolError):
    """A stored header that disagrees with the metadata call.wav was sized from."""


class NoStereo(ValueError):
    """A call whose channels cannot make a call.wav (an unknown format, a size that
    is no whole number of samples, too long for a WAV)."""


# --- the layout --------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Channel:
    """One source of call.wav, as the metadata describes it."""

    name: str  # presented name (inbound.wav), for messages
    stored: StoredFile
    format_tag: int  # 1 PCM16, 6 A-law, 7 mu-law
    rate: int
    samples: int  # as the metadata says: from the size (raw) or the duration (WAV)
    wav: bool  # stored in a WAV container: its header is read before its samples

    @property
    def width(self) -> int:
        return 2 if self.format_tag == PCM else 1

    @classmethod
    def of(
        cls, name: str, stored: StoredFile, fmt: str, rate: int, duration: float, wav: bool
    ) -> Channel:
        codec = codec_of(fmt)
        if codec is None:
            raise NoStereo(f"{name}: format {fmt!r} is not known")
        tag = codec[0]
        if rate <= 0:
            raise NoStereo(f"{name}: sample rate {rate}")
        width = 2 if tag == PCM else 1
        if wav:
            # How long the header is, is only known once it is read; the duration
            # is checked against it then.
            # The product, not the duration: 1e308 s is finite, its samples are not.
            samples = round(duration * rate) if math.isfinite(duration * rate) else -1
            if samples < 0:
                raise NoStereo(f"{name}: duration {duration}")
        else:
            samples, odd = divmod(stored.size, width)
            if odd:
                raise NoStereo(f"{name}: {stored.size} bytes is no whole number of samples")
        return cls(name, stored, tag, rate, samples, wav)


@dataclass(slots=True)
class _Source:
    """Where a channel's samples lie in its stored file, once known."""

    channel: Channel
    offset: int | None  # of the first sample; None until a WAV's header is read
    samples: int


class StereoView:
    """call.wav of one call: its size, and its bytes read from the two sources."""

    def __init__(self, left: Channel, right: Channel) -> None:
        self.rate = max(left.rate, right.rate)
        self.channels = (left, right)
        self.frames = max(frames_of(c.samples, c.rate, self.rate) for c in self.channels)
        if self.frames * FRAME_BYTES > _MAX_DATA:
            raise NoStereo(f"{self.frames} frames do not fit in a WAV file")
        self.header = wav_header(PCM, 16, self.rate, self.frames * FRAME_BYTES, channels=2)
        assert len(self.header) == HEADER_BYTES
        self.size = HEADER_BYTES + self.frames * FRAME_BYTES
        self._sources = [_Source(c, None if c.wav else 0, c.samples) for c in self.channels]
        self._checked = all(not c.wav for c in self.channels)
        self._failure: StereoMismatch | None = None
        self._checking = trio.Lock()

    @property
    def stored_files(self) -> tuple[StoredFile, StoredFile]:
        return self.channels[0].stored, self.channels[1].stored

    # --- reading -----------------------------------------------------------------

    async def read(self, store: BlockStore, offset: int, size: int) -> bytes | memoryview:
        """Bytes [offset, offset+size) of call.wav, clipped to its end."""
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        if end <= HEADER_BYTES:
            return self.header[offset:end]
        await self._check(store)
        start = max(offset, HEADER_BYTES) - HEADER_BYTES
        first, stop = frames_under(offset, end)
        frames = await self._mix(store, first, stop)
        skip = start - first * FRAME_BYTES
        data = memoryview(frames)[skip : skip + end - HEADER_BYTES - start]
        if offset >= HEADER_BYTES:
            return data
        return self.header[offset:] + bytes(data)

    def prefetch(self, store: BlockStore, offset: int, end: int) -> list[Fetch]:
        """Starts fetching the sources' blocks under [offset, end) of call.wav; returns
        the downloads started."""
        first, stop = frames_under(offset, min(end, self.size))
        launched: list[Fetch] = []
        for span in spans(self._tracks(), self.rate, first, stop):
            source, lo, hi = self._sources[span.track], span.lo, span.hi
            base = source.offset
            if base is None:  # not read yet: a consistent file's header is what is left
                channel = source.channel
                base = max(0, channel.stored.size - channel.samples * channel.width)
            width = source.channel.width
            launched += store.prefetch(source.channel.stored, base + lo * width, base + hi * width)
        return launched

    def _tracks(self) -> list[Track]:
        return [Track(s.channel.format_tag, s.channel.rate, s.samples) for s in self._sources]

    async def _mix(self, store: BlockStore, first: int, stop: int) -> bytearray:
        """Frames [first, stop), from the sources' samples under them."""
        tracks = self._tracks()
        under = spans(tracks, self.rate, first, stop)

        def fetch(span: Span) -> Callable[[], Awaitable[bytes | bytearray]]:
            source = self._sources[span.track]
            width, base = source.channel.width, source.offset
            assert base is not None
            return lambda: store.read(
                source.channel.stored, base + span.lo * width, base + span.hi * width
            )

        pieces = await gather(*(fetch(span) for span in under))
        for span, piece in zip(under, pieces, strict=True):
            channel = self._sources[span.track].channel
            if len(piece) != (span.hi - span.lo) * channel.width:
                raise api.ProtocolError(f"{channel.name}: stored file ends early")
        return mix(tracks, self.rate, first, stop, list(zip(under, pieces, strict=True)))

    # --- the check at first read ---------------------------------------------------

    async def _check(self, store: BlockStore) -> None:
        """Reads the stored WAV headers once, checking them against the metadata."""
        if self._checked:
            return
        async with self._checking:
            if self._failure is not None:
                raise self._failure
            if self._checked:
                return
            wavs = [s for s in self._sources if s.channel.wav]
            try:
                found = await gather(*(lambda s=s: self._locate(store, s.channel) for s in wavs))
                for source, (offset, samples) in zip(wavs, found, strict=True):
                    source.offset, source.samples = offset, samples
                frames = [frames_of(s.samples, s.channel.rate, self.rate) for s in self._sources]
                if max(frames) != self.frames:
                    raise StereoMismatch(
                        "call.wav: the stored headers give "
                        + " and ".join(f"{s.channel.name} {s.samples} samples"
                                       for s in self._sources)
                        + f": {max(frames)} frames, where the metadata (duration and sizes) "
                        f"gives {self.frames}"
                    )  # fmt: skip
            except StereoMismatch as exc:
                # The stored files do not change: every later read gets the same answer.
                self._failure = exc
                log.error("%s/%s: %s", *self._where(), exc)
                raise
            self._checked = True

    async def _locate(self, store: BlockStore, channel: Channel) -> tuple[int, int]:
        """(offset of the first sample, samples) of a stored WAV, from its header."""
        stored = channel.stored

        async def read(start: int, end: int) -> bytes:
            return bytes(await store.read(stored, start, end))

        def mismatch(what: str) -> StereoMismatch:
            stored_as = "" if stored.key.filename == channel.name else f" ({stored.key.filename})"
            return StereoMismatch(f"call.wav: stored {channel.name}{stored_as}: {what}")

        try:
            info = await read_wav_header(read, stored.size)
        except BadWavHeader as exc:
            raise mismatch(str(exc)) from None
        if info.channels != 1:
            raise mismatch(f"the header says {info.channels} channels, the metadata one")
        if info.sample_rate != channel.rate:
            raise mismatch(f"the header says {info.sample_rate} Hz, the metadata {channel.rate}")
        if info.format_tag != channel.format_tag or info.bits != channel.width * 8:
            raise mismatch(
                f"the header says format {info.format_tag} of {info.bits} bits, "
                f"the metadata format {channel.format_tag} of {channel.width * 8}"
            )
        end = info.data_offset + info.data_size + (info.data_size & 1)
        if end != stored.size:
            raise mismatch(
                f"the header puts {info.data_size} bytes of samples after {info.data_offset} "
                f"bytes of header, {end} bytes in all; the metadata says {stored.size}"
            )
        if info.data_size % channel.width:
            raise mismatch(f"{info.data_size} bytes of samples is no whole number of samples")
        return info.data_offset, info.data_size // channel.width

    def _where(self) -> tuple[str, str]:
        key = self.channels[0].stored.key
        return key.workspace_id, key.call_sid
