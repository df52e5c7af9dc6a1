"""Workspaces, calls and recordings as the emulator serves them (`Workspace`, `Call`,
`Recording`), and how they are made from the config's seed (`CallMaker`), metadata document
included."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from amigofs.emulator import audio, seeded
from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.sids import SidCodec

METADATA_FILENAME = "metadata.json"
WAV_FILENAMES = ("inbound.wav", "outbound.wav")
RAW_FILENAMES = ("inbound.ulaw", "outbound.pcm")

HISTORY_DAYS = 10
"""Calls start within this many days before the dataset's epoch."""

_EPOCH_ORIGIN = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)

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


def dataset_epoch(seed: int) -> datetime:
    """The fixed moment the dataset's calls precede; depends on the seed only."""
    return _EPOCH_ORIGIN + timedelta(days=seeded.rng(seed, "epoch").randrange(60))


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
    row_fault: str | None = None
    """Which of the call's fields is out of any sane range (config.ROW_FAULTS), or None."""

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


class CallMaker:
    """Makes the workspaces, calls and recordings of a config, each from the seed and what
    it is (never from what was made before it, but for the draws of one eager workspace)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.epoch = dataset_epoch(config.seed)
        self.sid_codec = SidCodec(config.seed)

    def workspace(self, rng: random.Random, index: int, *, configured: bool) -> Workspace:
        """The workspace at `index`, the next draw of `rng`."""
        name = _WORKSPACE_NAMES[index % len(_WORKSPACE_NAMES)]
        if index >= len(_WORKSPACE_NAMES):
            name = f"{name} {index // len(_WORKSPACE_NAMES) + 1}"
        created = self.epoch - timedelta(days=rng.randrange(90, 700), seconds=rng.randrange(86400))
        provisioned = created + timedelta(minutes=rng.randrange(1, 120))
        updated = self.epoch - timedelta(days=rng.randrange(11, 60), seconds=rng.randrange(86400))
        return Workspace(
            id=seeded.uuid4(rng),
            slug=name.lower().replace(" ", "-"),
            name=name,
            environment=rng.choice(("production", "production", "staging")),
            region=rng.choice(_REGIONS),
            backend_org_id=f"org_{rng.getrandbits(64):016x}",
            connector_type=rng.choice(("twilio", "twilio", None)),
            provisioned_at=seeded.iso_z(provisioned),
            created_at=seeded.iso_z(created),
            updated_at=seeded.iso_z(updated),
            recording_configured=configured,
        )

    def eager_calls(self, ws: Workspace) -> list[Call]:
        """Every call of a small workspace, newest first, made at once (faults not yet
        injected: faults.inject_faults)."""
        config = self.config
        rng = seeded.rng(config.seed, "calls", ws.id)
        service_ids = [seeded.uuid4(rng) for _ in range(2)]
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
            call = self.call(
                ws, rng, kind, sid, started, duration, index in archived, service_ids,
                service_number,
            )  # fmt: skip
            calls.append(call)
        calls.sort(key=lambda c: (c.started_at, c.summary["entity_id"]), reverse=True)
        return calls

    def call(
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
            "entity_id": seeded.uuid4(rng),
            "call_sid": call_sid,
            "direction": direction,
            "phone_number": service_number if direction == "inbound" else caller,
            "caller_id": caller if direction == "inbound" else service_number,
            "started_at": seeded.iso_z(started),
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
            recording = self._recording(
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

    def _recording(
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
        inbound_samples = round(duration * audio.INBOUND_RATE)
        outbound_samples = round(duration * audio.OUTBOUND_RATE)
        wav = storage == "wav"
        channels: tuple[tuple[audio.Channel, int], ...] = (
            ("inbound", inbound_samples),
            ("outbound", outbound_samples),
        )
        sizes = [
            # Through the module: a test substitutes the stored files' shape there.
            audio.AudioObject(
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
            "inbound_format": audio.INBOUND_FORMAT,
            "inbound_sample_rate": audio.INBOUND_RATE,
            "outbound_format": audio.OUTBOUND_FORMAT,
            "outbound_sample_rate": audio.OUTBOUND_RATE,
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
            metadata_bytes=metadata_document(metadata),
            archived=archived,
        )


def metadata_document(metadata: dict[str, object]) -> bytes:
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
