"""The emulator's synthetic dataset: workspaces, calls and the bytes of their stored files.

Everything is derived from the config's seed (never from the wall clock or the global RNG), so
two processes with the same config serve byte-identical data and tests can compute the expected
bytes of any range without asking the server.

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
import bisect
import contextlib
import hashlib
import json
import math
import random
import struct
import sys
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal, Protocol, overload

from amigofs.emulator.config import METADATA_FAULTS, SIZE_FAULTS, URL_FAULTS, EmulatorConfig

INBOUND_RATE = 8000
OUTBOUND_RATE = 16000
INBOUND_FORMAT = "mulaw"
OUTBOUND_FORMAT = "pcm_s16le"
METADATA_FILENAME = "metadata.json"
WAV_FILENAMES = ("inbound.wav", "outbound.wav")
RAW_FILENAMES = ("inbound.ulaw", "outbound.pcm")

BLOCK_BYTES = 64 * 1024
"""Size of the data-region blocks; even, so blocks are sample-aligned for 8- and 16-bit audio."""

BASE_PERIOD_SECONDS = 2
"""Length of the periodic base signal. Tone frequencies are multiples of 1/period so it loops."""

HISTORY_DAYS = 10
"""Calls start within this many days before the dataset's epoch."""

_EPOCH_ORIGIN = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)

SIZE_FAULT_SAMPLES = 4000
"""Samples a "shorter" or "longer" stored file lacks or has in excess of what the metadata says."""
SIZE_FAULT_CUT_BYTES = 3000
"""A "cut_short" stored file's bodies end this many bytes before the size the server claims."""
ABSURD_SIZE = 1 << 62
"""The size an "absurd_size" metadata document claims (4 EiB)."""
NOT_JSON_METADATA = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"

HOSTILE_CALL_SIDS: tuple[object, ...] = (
    12345,
    True,
    1.5,
    ["CA0"],
    {"sid": "CA0"},
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "/etc",
    "CA%2F..%2Fx",
    "CA\x00nul",
    "CA\nWARNING forged log line",
    "CA\x1b[31mred",
    "CA\x7fdel",
    "CA with spaces",
    "CA\u00e9\u00e8\u00ea",
    "x" * 10_000,
)
"""Invalid call_sid values added to every list-calls page under hostile_listing, besides
entries that are not objects at all and a duplicate of a valid call (see hostile_call_items)."""

HOSTILE_WORKSPACE_IDS: tuple[object, ...] = (
    42,
    None,
    ["x"],
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "ws%2F..",
    "ws\x00nul",
    "ws\nWARNING forged log line",
    "ws\x1b[31mred",
    "w" * 10_000,
)
"""Invalid workspace ids added to every list-workspaces page under hostile_listing."""

HOSTILE_NON_OBJECTS: tuple[object, ...] = (None, "CA" + "0" * 32, 7, [])
"""List entries that are not JSON objects at all."""

Channel = Literal["inbound", "outbound"]
Storage = Literal["wav", "raw"]

_WORKSPACE_NAMES = (
    "Acme Health",
    "Northwind Clinics",
    "Globex Support",
    "Initech Billing",
    "Umbrella Pharmacy",
    "Stark Dental",
    "Wayne Care",
    "Hooli Helpdesk",
)
_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
_TTS_PROVIDERS = ("elevenlabs", "cartesia", "azure", "openai")
_FINAL_STATES = ("goodbye", "appointment_booked", "handoff", "faq_answered", "callback_scheduled")
_COMPLETION_REASONS = ("completed", "caller_hangup", "transferred", "escalated", "voicemail")


def _rng(seed: int, *parts: object) -> random.Random:
    # A str seed is hashed with SHA-512 by random.Random, so it is stable across processes
    # (unlike hash(), which is randomized per process).
    return random.Random(":".join(["amigofs-emulator", str(seed), *map(str, parts)]))


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def dataset_epoch(seed: int) -> datetime:
    """The fixed moment the dataset's calls precede; depends on the seed only."""
    return _EPOCH_ORIGIN + timedelta(days=_rng(seed, "epoch").randrange(60))


# --- audio -------------------------------------------------------------------------------------

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
    rng = _rng(0, "voice", channel, voice)
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


@dataclass(slots=True, frozen=True)
class Workspace:
    id: str
    slug: str
    name: str
    environment: str
    region: str
    backend_org_id: str | None
    connector_type: str | None
    provisioned_at: str | None
    created_at: str
    updated_at: str
    recording_configured: bool

    def to_json(self) -> dict[str, object]:
        """The WorkspaceResponse document."""
        return {
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "environment": self.environment,
            "backend_org_id": self.backend_org_id,
            "region": self.region,
            "connector_type": self.connector_type,
            "provisioned_at": self.provisioned_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True, frozen=True)
class Recording:
    """The stored files of one recorded call."""

    workspace_id: str
    call_sid: str
    storage: Storage
    inbound_filename: str
    outbound_filename: str
    inbound_samples: int
    outbound_samples: int
    metadata: dict[str, object]
    metadata_bytes: bytes
    """The metadata document exactly as served, both by the endpoint and as metadata.json."""
    archived: bool
    """Whether the call starts in the archive (the app can restore or archive at run time)."""
    metadata_fault: str | None = None
    """How the metadata is broken (config.METADATA_FAULTS), or None."""
    size_fault: str | None = None
    """How the stored audio disagrees with the metadata (config.SIZE_FAULTS), or None."""
    url_fault: str | None = None
    """Where the download links point instead of this call's folder (config.URL_FAULTS), or None."""

    @property
    def filenames(self) -> tuple[str, str, str]:
        return (self.inbound_filename, self.outbound_filename, METADATA_FILENAME)


@dataclass(slots=True, frozen=True)
class Call:
    workspace_id: str
    call_sid: str | None
    started_at: datetime
    duration_seconds: float
    summary: dict[str, object]
    """The CallSummary document."""
    recording: Recording | None


EAGER_CALLS = 10_000
"""Workspaces of at most this many recorded calls are built up front, as they always were (their
bytes stay what earlier versions served); larger ones are made call by call (_LazyOriginals)."""

NEW_CALL_GAP_MAX = 60
"""Seconds between the start times of calls added at run time, at most (see _gap_seconds)."""

_MASK64 = (1 << 64) - 1
_SID_MAGIC = 0x616D69676F667321  # b"amigofs!": what a decrypted SID of ours starts with
_SID_WORKSPACE_BITS = 24
_SID_SERIAL_BITS = 40


class SidCodec:
    """The invertible map between (workspace index, serial) and a call SID.

    The SID is ``CA`` and 32 hex digits, the 128-bit block (magic, workspace, serial) enciphered
    by a four-round Feistel network keyed by the seed: SIDs look random and differ between seeds,
    yet any SID maps back to its call in microseconds, and one that is not ours (a random or
    mistyped SID) fails the magic check. Serials count a workspace's calls oldest first, the
    calls added at run time after the seeded ones.
    """

    __slots__ = ("_keys",)

    def __init__(self, seed: int) -> None:
        self._keys = [
            hashlib.blake2b(f"amigofs-emulator:{seed}:sid:{r}".encode(), digest_size=16).digest()
            for r in range(4)
        ]

    def _round(self, r: int, half: int) -> int:
        digest = hashlib.blake2b(half.to_bytes(8, "little"), key=self._keys[r], digest_size=8)
        return int.from_bytes(digest.digest(), "little")

    def encode(self, workspace: int, serial: int) -> str:
        assert 0 <= workspace < 1 << _SID_WORKSPACE_BITS and 0 <= serial < 1 << _SID_SERIAL_BITS
        left, right = _SID_MAGIC, (workspace << _SID_SERIAL_BITS) | serial
        for r in range(4):
            left, right = right, left ^ self._round(r, right)
        return f"CA{(left << 64) | right:032x}"

    def decode(self, sid: str) -> tuple[int, int] | None:
        """(workspace index, serial) of a SID this codec made, else None."""
        if len(sid) != 34 or not sid.startswith("CA"):
            return None
        try:
            block = int(sid[2:], 16)
        except ValueError:
            return None
        if sid != f"CA{block:032x}":  # only the canonical spelling names the call
            return None
        left, right = block >> 64, block & _MASK64
        for r in reversed(range(4)):
            left, right = right ^ self._round(r, left), left
        if left != _SID_MAGIC:
            return None
        return right >> _SID_SERIAL_BITS, right & ((1 << _SID_SERIAL_BITS) - 1)


def _gap_seconds(count: int) -> int:
    """Mean seconds between the start times of a lazy workspace's calls: its calls span about
    HISTORY_DAYS, but never closer than 2 s (start times are whole seconds, and a gap of G with
    a jitter below G keeps them strictly decreasing)."""
    return max(2, HISTORY_DAYS * 86400 // max(count, 1))


def _jitter(seed: int, workspace_id: str, what: str, index: int, gap: int) -> int:
    """A seeded value in [0, gap) for one call: cheaper than a Random per call."""
    key = f"{seed}:{workspace_id}:{what}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % gap


class _Originals(Protocol):
    """The calls a workspace starts with, newest first (position q = 0 is the newest)."""

    count: int

    def call(self, q: int) -> Call: ...

    def started(self, q: int) -> datetime: ...

    def find(self, sid: str) -> int | None: ...

    def archived_sids(self) -> Iterator[str]: ...


class _EagerOriginals:
    """A small workspace's calls, built once (Dataset._make_calls)."""

    __slots__ = ("_by_sid", "_calls", "count")

    def __init__(self, calls: list[Call]) -> None:
        self._calls = calls
        self.count = len(calls)
        self._by_sid = {c.call_sid: q for q, c in enumerate(calls) if c.call_sid is not None}

    def call(self, q: int) -> Call:
        return self._calls[q]

    def started(self, q: int) -> datetime:
        return self._calls[q].started_at

    def find(self, sid: str) -> int | None:
        return self._by_sid.get(sid)

    def archived_sids(self) -> Iterator[str]:
        for call in self._calls:
            if call.recording is not None and call.recording.archived:
                yield call.recording.call_sid


_CACHE_CALLS = 1024
"""Lazily made calls kept per workspace: a request touches one call several times, and a client
reads a call's three files soon after listing it."""


class _LazyOriginals:
    """A large workspace's calls, each made from its position and the seed when asked for.

    Position q (0 the newest) starts at ``epoch - lead - q * gap - jitter(q)`` with the jitter
    in [0, gap): strictly decreasing, computable from q alone, so a date is a binary search over
    positions. Its serial is ``count - 1 - q`` and its SID encodes that (SidCodec). The few
    calls without a SID or recording sit at seeded positions (a sorted list); the recorded
    calls' rank (q minus the specials before it) places the archived ones oldest, the broken
    ones newest and the long ones at a seeded sample of ranks, as the eager path does.
    """

    __slots__ = (
        "_cache",
        "_data",
        "_gap",
        "_kinds",
        "_lead",
        "_long",
        "_long_listed",
        "_service_ids",
        "_service_number",
        "_specials",
        "_ws",
        "_ws_index",
        "count",
        "recorded",
    )

    def __init__(self, data: Dataset, config: EmulatorConfig, ws: Workspace, index: int) -> None:
        self._data = data
        self._ws = ws
        self._ws_index = index
        self.recorded = config.calls_per_workspace
        special = config.null_sid_calls + config.no_recording_calls
        self.count = self.recorded + special
        rng = _rng(config.seed, "lazy-calls", ws.id)
        self._service_ids = [_uuid4(rng) for _ in range(2)]
        self._service_number = f"+1415555{rng.randrange(10000):04d}"
        positions = rng.sample(range(self.count), special)
        self._kinds = {
            q: "null_sid" if n < config.null_sid_calls else "no_recording"
            for n, q in enumerate(positions)
        }
        self._specials = sorted(positions)
        # The seeded sample of long ranks, or of short ones when those are fewer (benchmarks ask
        # for every call long): a set of at most half the calls.
        self._long_listed = config.long_calls <= self.recorded // 2
        listed = config.long_calls if self._long_listed else self.recorded - config.long_calls
        self._long = set(rng.sample(range(self.recorded), listed))
        self._gap = _gap_seconds(self.count)
        longest = config.long_duration if config.long_calls else config.max_duration
        # Every call ends before the epoch, as in the eager path.
        self._lead = math.ceil(longest) + 60
        self._cache: OrderedDict[int, Call] = OrderedDict()

    def started(self, q: int) -> datetime:
        seconds = self._lead + q * self._gap + self._jitter(q)
        return self._data.epoch - timedelta(seconds=seconds)

    def _jitter(self, q: int) -> int:
        return _jitter(self._data.seed, self._ws.id, "start", self.count - 1 - q, self._gap)

    def find(self, sid: str) -> int | None:
        decoded = self._data.sid_codec.decode(sid)
        if decoded is None or decoded[0] != self._ws_index or decoded[1] >= self.count:
            return None
        q = self.count - 1 - decoded[1]
        return None if self._kinds.get(q) == "null_sid" else q

    def _rank(self, q: int) -> int:
        """Recorded calls newer than position q (q's rank among the recorded, newest 0)."""
        return q - bisect.bisect_left(self._specials, q)

    def archived_sids(self) -> Iterator[str]:
        archived = self._data.config.archived_calls
        q = self.count
        while archived > 0 and q > 0:
            q -= 1
            if q not in self._kinds:
                archived -= 1
                yield self._data.sid_codec.encode(self._ws_index, self.count - 1 - q)

    def call(self, q: int) -> Call:
        if not 0 <= q < self.count:
            raise IndexError(q)
        call = self._cache.get(q)
        if call is not None:
            # Tests read the ground truth from threads too: another may just have evicted it.
            with contextlib.suppress(KeyError):
                self._cache.move_to_end(q)
            return call
        call = self._make(q)
        self._cache[q] = call
        if len(self._cache) > _CACHE_CALLS:
            self._cache.popitem(last=False)
        return call

    def _make(self, q: int) -> Call:
        config = self._data.config
        kind = self._kinds.get(q, "recorded")
        serial = self.count - 1 - q
        sid = None if kind == "null_sid" else self._data.sid_codec.encode(self._ws_index, serial)
        rng = _rng(config.seed, "call", self._ws.id, serial)
        rank = self._rank(q) if kind == "recorded" else -1
        if rank >= 0 and (rank in self._long) == self._long_listed:
            duration = config.long_duration
        else:
            duration = round(rng.uniform(config.min_duration, config.max_duration), 3)
        call = self._data._make_call(
            self._ws,
            rng,
            kind,
            sid,
            self.started(q),
            duration,
            kind == "recorded" and rank >= self.recorded - config.archived_calls,
            self._service_ids,
            self._service_number,
        )
        plan = _fault_plan(config)
        if call.recording is not None and 0 <= rank < len(plan):
            call = _with_fault(call, *plan[rank])
        return call


def _fault_plan(config: EmulatorConfig) -> list[tuple[str, str]]:
    """The faults of the newest recorded (not archived) calls, newest first."""
    return (
        [("metadata_fault", METADATA_FAULTS[i % len(METADATA_FAULTS)])
         for i in range(config.bad_metadata)]
        + [("size_fault", SIZE_FAULTS[i % len(SIZE_FAULTS)])
           for i in range(config.size_mismatch)]
        + [("url_fault", URL_FAULTS[i % len(URL_FAULTS)]) for i in range(config.evil_urls)]
    )  # fmt: skip


def _with_fault(call: Call, field_name: str, kind: str) -> Call:
    rec = call.recording
    assert rec is not None
    rec = replace(rec, **{field_name: kind})  # type: ignore[arg-type]
    if field_name == "metadata_fault":
        rec = _break_metadata(rec)
    return replace(call, recording=rec)


class CallList(Sequence[Call]):
    """A workspace's calls in listing order, newest first: those added at run time (Dataset.
    add_calls), then the ones it started with. Indexing makes calls on demand for large
    workspaces, so iterate a million-call list only if you mean it."""

    __slots__ = ("_added_cache", "_data", "_gap", "_index", "_newest", "_originals", "_ws", "added")

    def __init__(self, data: Dataset, ws: Workspace, index: int, originals: _Originals) -> None:
        self._data = data
        self._ws = ws
        self._index = index
        self._originals = originals
        self.added = 0
        self._newest = originals.started(0) if originals.count else data.epoch
        self._gap = min(NEW_CALL_GAP_MAX, _gap_seconds(originals.count))
        self._added_cache: OrderedDict[int, Call] = OrderedDict()

    def __len__(self) -> int:
        return self.added + self._originals.count

    @overload
    def __getitem__(self, position: int) -> Call: ...

    @overload
    def __getitem__(self, position: slice) -> list[Call]: ...

    def __getitem__(self, position: int | slice) -> Call | list[Call]:
        if isinstance(position, slice):
            return [self[p] for p in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(position)
        if position < self.added:
            return self._added_call(self.added - 1 - position)
        return self._originals.call(position - self.added)

    def __iter__(self) -> Iterator[Call]:
        for position in range(len(self)):
            yield self[position]

    def started(self, position: int) -> datetime:
        """The start time of the call at a position, without making the call."""
        if position < self.added:
            return self._added_start(self.added - 1 - position)
        return self._originals.started(position - self.added)

    def first_before(self, moment: datetime) -> int:
        """The first position whose call started before ``moment`` (start times only decrease
        along the list): a binary search, so a date filter costs a few dozen start times."""
        return bisect.bisect_left(range(len(self)), True, key=lambda p: self.started(p) < moment)

    def find(self, sid: str) -> int | None:
        """The position of the call with this SID, or None."""
        q = self._originals.find(sid)
        if q is not None:
            return self.added + q
        decoded = self._data.sid_codec.decode(sid)
        if decoded is None or decoded[0] != self._index:
            return None
        k = decoded[1] - self._originals.count
        return self.added - 1 - k if 0 <= k < self.added else None

    def archived_sids(self) -> Iterator[str]:
        """The SIDs of the calls that start archived (never one added at run time)."""
        return self._originals.archived_sids()

    def _added_start(self, k: int) -> datetime:
        # After every original call and strictly increasing with k (jitter < gap).
        jitter = _jitter(self._data.seed, self._ws.id, "new-start", k, self._gap)
        return self._newest + timedelta(seconds=(k + 1) * self._gap - jitter)

    def _added_call(self, k: int) -> Call:
        call = self._added_cache.get(k)
        if call is not None:
            return call
        config = self._data.config
        rng = _rng(config.seed, "new-call", self._ws.id, k)
        service_rng = _rng(config.seed, "new-call-service", self._ws.id)
        service_ids = [_uuid4(service_rng) for _ in range(2)]
        service_number = f"+1415555{service_rng.randrange(10000):04d}"
        call = self._data._make_call(
            self._ws,
            rng,
            "recorded",
            self._data.sid_codec.encode(self._index, self._originals.count + k),
            self._added_start(k),
            round(rng.uniform(config.min_duration, config.max_duration), 3),
            False,
            service_ids,
            service_number,
        )
        self._added_cache[k] = call
        if len(self._added_cache) > _CACHE_CALLS:
            self._added_cache.popitem(last=False)
        return call


class Dataset:
    """All workspaces and calls of an emulator config, and the bytes of every stored file.

    Workspaces are made up front. Their calls are too when there are at most EAGER_CALLS of
    them; larger workspaces (up to a million calls and beyond) are made call by call, with
    memory and start-up time independent of the count. ``add_calls`` puts new calls at the
    head of a workspace, as the emulator does at run time.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = replace(config)
        self.seed = config.seed
        self.epoch = dataset_epoch(config.seed)
        self.sid_codec = SidCodec(config.seed)
        rng = _rng(config.seed, "workspaces")
        self.workspaces: list[Workspace] = [
            self._make_workspace(
                rng, index, configured=index < config.workspaces - config.not_configured_workspaces
            )
            for index in range(config.workspaces)
        ]
        self.evil_host = config.evil_host
        self.foreign_workspace_id: str = _uuid4(_rng(config.seed, "foreign"))
        """A workspace that exists but that the emulator's key does not own (403)."""
        self._workspaces = {ws.id: ws for ws in self.workspaces}
        self.lazy = config.calls_per_workspace > EAGER_CALLS
        self._calls: dict[str, CallList] = {}
        for index, ws in enumerate(self.workspaces):
            originals: _Originals
            if self.lazy:
                originals = _LazyOriginals(self, config, ws, index)
            else:
                originals = _EagerOriginals(self._make_calls(config, ws))
            self._calls[ws.id] = CallList(self, ws, index, originals)

    # workspaces and calls

    def workspace(self, workspace_id: str) -> Workspace | None:
        return self._workspaces.get(workspace_id)

    def calls(self, workspace_id: str) -> Sequence[Call]:
        """Every call of a workspace, newest first (the listing order)."""
        return self._calls.get(workspace_id, ())

    def call_list(self, workspace_id: str) -> CallList | None:
        return self._calls.get(workspace_id)

    def call(self, workspace_id: str, call_sid: str) -> Call | None:
        calls = self._calls.get(workspace_id)
        if calls is None:
            return None
        position = calls.find(call_sid)
        return None if position is None else calls[position]

    def recording(self, workspace_id: str, call_sid: str) -> Recording | None:
        call = self.call(workspace_id, call_sid)
        return None if call is None else call.recording

    def find_recording(self, call_sid: str) -> Recording | None:
        """The recording with this SID in any workspace."""
        for workspace_id in self._calls:
            rec = self.recording(workspace_id, call_sid)
            if rec is not None:
                return rec
        return None

    def add_calls(self, count: int, workspace_id: str | None = None) -> None:
        """Add ``count`` new recorded calls at the head of one workspace (or of every one), with
        start times after every call it holds: listing offsets shift by ``count``."""
        if count < 0:
            raise ValueError("count must be >= 0")
        for ws_id, calls in self._calls.items():
            if workspace_id is None or ws_id == workspace_id:
                calls.added += count

    def added_calls(self) -> dict[str, int]:
        """Calls added to each workspace since the start."""
        return {ws_id: calls.added for ws_id, calls in self._calls.items()}

    def archived_sids(self) -> Iterator[str]:
        """The SIDs of the recordings that start in the archive."""
        for calls in self._calls.values():
            yield from calls.archived_sids()

    def recordings(self) -> Iterator[Recording]:
        for calls in self._calls.values():
            for call in calls:
                if call.recording is not None:
                    yield call.recording

    def faulty(self, kind: Literal["metadata", "size", "url"]) -> list[Recording]:
        """The recordings with a metadata, size or url fault, in listing order."""
        attr = f"{kind}_fault"
        return [r for r in self.recordings() if getattr(r, attr) is not None]

    def sound(self) -> list[Recording]:
        """Recordings without any injected fault (archived ones included)."""
        return list(self._sound())

    def _sound(self) -> Iterator[Recording]:
        for r in self.recordings():
            if r.metadata_fault is None and r.size_fault is None and r.url_fault is None:
                yield r

    def _sound_in(self, workspace_id: str) -> Iterator[Recording]:
        for call in self.calls(workspace_id):
            r = call.recording
            if r is not None and r.metadata_fault is r.size_fault is r.url_fault is None:
                yield r

    # hostile listings

    def hostile_call_items(self, page: list[dict[str, object]]) -> list[object]:
        """What hostile_listing adds to a list-calls page: every HOSTILE_CALL_SIDS value in an
        otherwise valid summary, the HOSTILE_NON_OBJECTS, and a later duplicate of the page's
        first call claiming another start time (a client must keep the first)."""
        template: dict[str, object] = dict(page[0]) if page else {"has_recording": True}
        items: list[object] = [{**template, "call_sid": sid} for sid in HOSTILE_CALL_SIDS]
        items += HOSTILE_NON_OBJECTS
        if page and isinstance(page[0].get("call_sid"), str):
            items.append({**template, "started_at": _iso_z(self.epoch + timedelta(days=1))})
        return items

    def hostile_workspace_items(self, page: list[dict[str, object]]) -> list[object]:
        """What hostile_listing adds to a list-workspaces page, as hostile_call_items does."""
        template: dict[str, object] = dict(page[0]) if page else {"name": "x"}
        items: list[object] = [{**template, "id": ws_id} for ws_id in HOSTILE_WORKSPACE_IDS]
        items += HOSTILE_NON_OBJECTS
        if page:
            items.append({**template, "name": "Duplicate of " + str(template.get("name"))})
        return items

    # stored files

    def open(self, workspace_id: str, call_sid: str, filename: str) -> StoredObject:
        """The stored file of a call; FileNotFoundError if the call or file does not exist."""
        rec = self.recording(workspace_id, call_sid)
        if rec is None or filename not in rec.filenames:
            raise FileNotFoundError(f"{workspace_id}/{call_sid}/{filename}")
        if filename == METADATA_FILENAME:
            return BytesObject(rec.metadata_bytes, "application/json")
        channel: Channel = "inbound" if filename == rec.inbound_filename else "outbound"
        samples = rec.inbound_samples if channel == "inbound" else rec.outbound_samples
        if rec.size_fault == "shorter":
            samples -= min(SIZE_FAULT_SAMPLES, samples // 2)
        elif rec.size_fault == "longer":
            samples += SIZE_FAULT_SAMPLES
        return AudioObject(
            seed=self.seed,
            workspace_id=workspace_id,
            call_sid=call_sid,
            channel=channel,
            samples=samples,
            wav=rec.storage == "wav",
        )

    def body_limit(self, workspace_id: str, call_sid: str, filename: str) -> int | None:
        """For a "cut_short" recording's audio, the offset where every body of it ends (the
        connection closes there, short of what the headers promised); None otherwise."""
        rec = self.recording(workspace_id, call_sid)
        if rec is None or rec.size_fault != "cut_short" or filename == METADATA_FILENAME:
            return None
        size = self.open(workspace_id, call_sid, filename).size
        return max(1, size - SIZE_FAULT_CUT_BYTES)

    def download_links(
        self, workspace_id: str, call_sid: str, own_host: str
    ) -> tuple[str, str, str] | None:
        """The inbound, outbound and metadata links an evil_urls recording hands out instead
        of its own download paths (None for other recordings). ``own_host`` is the emulator's
        host:port as the client addressed it."""
        rec = self.recording(workspace_id, call_sid)
        if rec is None or rec.url_fault is None:
            return None
        other = next(
            (r for r in self._sound_in(workspace_id) if r.call_sid != call_sid and not r.archived),
            None,
        )
        other_sid = other.call_sid if other is not None else "CA" + "0" * 32
        evil_netloc = self.evil_host.split("://", 1)[1]
        links = []
        for index, name in enumerate(rec.filenames):
            other_name = other.filenames[index] if other is not None else name
            own = f"/v1/{workspace_id}/recordings/{call_sid}/download/{name}"
            link = {
                "other_host": f"{self.evil_host}{own}",
                "scheme_relative": f"//{evil_netloc}{own}",
                "userinfo": f"http://{own_host}@{evil_netloc}{own}",
                "other_call": f"/v1/{workspace_id}/recordings/{other_sid}/download/{other_name}",
                "dot_segments": f"{own[: -len(name)]}../../{other_sid}/download/{other_name}",
                "encoded_slash": f"{own[: -len(name)]}..%2F..%2F{other_sid}%2Fdownload%2F{other_name}",
                "foreign_workspace": f"/v1/{self.foreign_workspace_id}/recordings/{call_sid}/download/{name}",
            }[rec.url_fault]
            links.append(link)
        return links[0], links[1], links[2]

    def file_size(self, workspace_id: str, call_sid: str, filename: str) -> int:
        return self.open(workspace_id, call_sid, filename).size

    def read_range(
        self, workspace_id: str, call_sid: str, filename: str, start: int, end: int
    ) -> bytes:
        """Bytes [start, end) of a stored file (end exclusive, clipped to the size)."""
        return self.open(workspace_id, call_sid, filename).read(start, end)

    def iter_range(
        self,
        workspace_id: str,
        call_sid: str,
        filename: str,
        start: int,
        end: int,
        chunk_size: int = 1024 * 1024,
    ) -> Iterator[bytes]:
        """Bytes [start, end) of a stored file as chunks of at most chunk_size bytes."""
        obj = self.open(workspace_id, call_sid, filename)
        end = min(end, obj.size)
        for position in range(start, end, chunk_size):
            yield obj.read(position, min(position + chunk_size, end))

    # generation

    def _make_workspace(self, rng: random.Random, index: int, *, configured: bool) -> Workspace:
        name = _WORKSPACE_NAMES[index % len(_WORKSPACE_NAMES)]
        if index >= len(_WORKSPACE_NAMES):
            name = f"{name} {index // len(_WORKSPACE_NAMES) + 1}"
        created = self.epoch - timedelta(days=rng.randrange(90, 700), seconds=rng.randrange(86400))
        provisioned = created + timedelta(minutes=rng.randrange(1, 120))
        updated = self.epoch - timedelta(days=rng.randrange(11, 60), seconds=rng.randrange(86400))
        return Workspace(
            id=_uuid4(rng),
            slug=name.lower().replace(" ", "-"),
            name=name,
            environment=rng.choice(("production", "production", "staging")),
            region=rng.choice(_REGIONS),
            backend_org_id=f"org_{rng.getrandbits(64):016x}",
            connector_type=rng.choice(("twilio", "twilio", None)),
            provisioned_at=_iso_z(provisioned),
            created_at=_iso_z(created),
            updated_at=_iso_z(updated),
            recording_configured=configured,
        )

    def _make_calls(self, config: EmulatorConfig, ws: Workspace) -> list[Call]:
        rng = _rng(config.seed, "calls", ws.id)
        service_ids = [_uuid4(rng) for _ in range(2)]
        service_number = f"+1415555{rng.randrange(10000):04d}"
        kinds = (
            ["recorded"] * config.calls_per_workspace
            + ["null_sid"] * config.null_sid_calls
            + ["no_recording"] * config.no_recording_calls
        )
        long_indices = set(rng.sample(range(config.calls_per_workspace), config.long_calls))
        drafts: list[tuple[str, datetime, float]] = []
        for index, kind in enumerate(kinds):
            if kind == "recorded" and index in long_indices:
                duration = config.long_duration
            else:
                # Whole milliseconds: sample counts round(duration * rate) are then exact and even.
                duration = round(rng.uniform(config.min_duration, config.max_duration), 3)
            latest = HISTORY_DAYS * 86400 - math.ceil(duration) - 60
            started = self.epoch - timedelta(
                seconds=HISTORY_DAYS * 86400 - rng.randrange(max(latest, 1))
            )
            drafts.append((kind, started, duration))
        # The oldest recorded calls are the archived ones, as the vendor archives by age.
        recorded_oldest_first = sorted(
            (i for i, draft in enumerate(drafts) if draft[0] == "recorded"),
            key=lambda i: drafts[i][1],
        )
        archived = set(recorded_oldest_first[: config.archived_calls])
        calls = []
        for index, (kind, started, duration) in enumerate(drafts):
            # The SID is the call's first draw, as it always was: the same seed, the same SIDs.
            sid = None if kind == "null_sid" else f"CA{rng.getrandbits(128):032x}"
            call = self._make_call(
                ws, rng, kind, sid, started, duration, index in archived, service_ids,
                service_number,
            )  # fmt: skip
            calls.append(call)
        calls.sort(key=lambda c: (c.started_at, c.summary["entity_id"]), reverse=True)
        return self._inject_faults(config, calls)

    @staticmethod
    def _inject_faults(config: EmulatorConfig, calls: list[Call]) -> list[Call]:
        """Breaks the newest recorded (not archived) calls as bad_metadata, size_mismatch and
        evil_urls ask, in that order and in listing order, so tests can find them."""
        plan = _fault_plan(config)
        if not plan:
            return calls
        result = []
        for call in calls:
            rec = call.recording
            if rec is not None and not rec.archived and plan:
                call = _with_fault(call, *plan.pop(0))
            result.append(call)
        return result

    def _make_call(
        self,
        ws: Workspace,
        rng: random.Random,
        kind: str,
        call_sid: str | None,
        started: datetime,
        duration: float,
        archived: bool,
        service_ids: list[str],
        service_number: str,
    ) -> Call:
        direction = rng.choice(("inbound", "inbound", "outbound"))
        service_id = rng.choice(service_ids)
        caller = f"+1{rng.randrange(200, 999)}{rng.randrange(10**7):07d}"
        completion = rng.choice(_COMPLETION_REASONS)
        summary: dict[str, object] = {
            "entity_id": _uuid4(rng),
            "call_sid": call_sid,
            "direction": direction,
            "phone_number": service_number if direction == "inbound" else caller,
            "caller_id": caller if direction == "inbound" else service_number,
            "started_at": _iso_z(started),
            "duration_seconds": duration,
            "status": "completed",
            "escalation_status": "escalated" if completion == "escalated" else None,
            "turns": max(1, int(duration / rng.uniform(6, 14))),
            # A null-SID call still claims a recording: clients must check the SID too.
            "has_recording": kind != "no_recording",
            "quality_score": round(rng.uniform(0.55, 0.99), 2),
            "final_state": rng.choice(_FINAL_STATES),
            "completion_reason": completion,
            "service_id": service_id,
            "source": "real",
            "run_id": None,
            "parent_session_id": None,
            "fork_turn_index": None,
        }
        recording = None
        if kind == "recorded" and call_sid is not None:
            recording = self._make_recording(
                rng, ws, call_sid, started, duration, direction, service_id, archived
            )
        return Call(
            workspace_id=ws.id,
            call_sid=call_sid,
            started_at=started,
            duration_seconds=duration,
            summary=summary,
            recording=recording,
        )

    def _make_recording(
        self,
        rng: random.Random,
        ws: Workspace,
        call_sid: str,
        started: datetime,
        duration: float,
        direction: str,
        service_id: str,
        archived: bool,
    ) -> Recording:
        storage: Storage = "wav" if rng.random() < 0.5 else "raw"
        inbound_name, outbound_name = WAV_FILENAMES if storage == "wav" else RAW_FILENAMES
        inbound_samples = round(duration * INBOUND_RATE)
        outbound_samples = round(duration * OUTBOUND_RATE)
        wav = storage == "wav"
        channels: tuple[tuple[Channel, int], ...] = (
            ("inbound", inbound_samples),
            ("outbound", outbound_samples),
        )
        sizes = [
            AudioObject(
                seed=self.seed,
                workspace_id=ws.id,
                call_sid=call_sid,
                channel=channel,
                samples=samples,
                wav=wav,
            ).size
            for channel, samples in channels
        ]
        ended = started + timedelta(seconds=duration)
        metadata: dict[str, object] = {
            "call_sid": call_sid,
            "workspace_id": ws.id,
            "service_id": service_id,
            "direction": direction,
            "duration_seconds": duration,
            "inbound_format": INBOUND_FORMAT,
            "inbound_sample_rate": INBOUND_RATE,
            "outbound_format": OUTBOUND_FORMAT,
            "outbound_sample_rate": OUTBOUND_RATE,
            "tts_provider": rng.choice(_TTS_PROVIDERS),
            "call_start_iso": started.isoformat(timespec="milliseconds"),
            "call_end_iso": ended.isoformat(timespec="milliseconds"),
            "inbound_size_bytes": sizes[0],
            "outbound_size_bytes": sizes[1],
            # The media stream starts a moment after the call is set up.
            "media_start_epoch_ms": int(started.timestamp() * 1000) + rng.randrange(50, 900),
        }
        return Recording(
            workspace_id=ws.id,
            call_sid=call_sid,
            storage=storage,
            inbound_filename=inbound_name,
            outbound_filename=outbound_name,
            inbound_samples=inbound_samples,
            outbound_samples=outbound_samples,
            metadata=metadata,
            metadata_bytes=_metadata_document(metadata),
            archived=archived,
        )


def _metadata_document(metadata: dict[str, object]) -> bytes:
    """metadata.json as the platform stores it: ``json.dumps(indent=2, sort_keys=True)``."""
    # The same bytes for a flat document, without the pure-Python encoder indent= needs: a
    # million-call workspace makes one per call it lists.
    lines = []
    for key in sorted(metadata):
        text = _scalar_json(metadata[key])
        if text is None:
            return (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()
        lines.append(f"  {_json_string(key)}: {text}")
    if not lines:
        return b"{}\n"
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


_json_string = json.encoder.encode_basestring_ascii


def _scalar_json(value: object) -> str | None:
    """``json.dumps(value)`` for a string, None, bool, int or finite float; None otherwise."""
    if isinstance(value, str):
        return _json_string(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float) and math.isfinite(value):
        return float.__repr__(value)
    return None


def _break_metadata(rec: Recording) -> Recording:
    metadata = dict(rec.metadata)
    body = rec.metadata_bytes
    if rec.metadata_fault == "truncated":
        body = body[: len(body) // 2]
    elif rec.metadata_fault == "not_json":
        body = NOT_JSON_METADATA
    else:
        if rec.metadata_fault == "negative_size":
            metadata["inbound_size_bytes"] = -int(str(metadata["inbound_size_bytes"]))
        else:
            metadata["outbound_size_bytes"] = ABSURD_SIZE
        body = _metadata_document(metadata)
    return replace(rec, metadata=metadata, metadata_bytes=body)


def parse_date(text: str) -> date:
    """A YYYY-MM-DD date, as the list-calls filters take; ValueError otherwise."""
    if len(text) != 10:
        raise ValueError(text)
    return date.fromisoformat(text)
