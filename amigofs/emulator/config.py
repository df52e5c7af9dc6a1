"""The emulator's knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

FAULT_KINDS: tuple[str, ...] = ("500", "503", "429", "drop", "stall", "ignore_range")
"""Every fault the emulator can inject. The last three only apply to downloads."""

BODY_FAULT_KINDS: frozenset[str] = frozenset({"drop", "stall", "ignore_range"})

METADATA_FAULTS: tuple[str, ...] = ("truncated", "not_json", "negative_size", "absurd_size")
"""How a call's metadata is broken under ``bad_metadata``, assigned in this order."""

SIZE_FAULTS: tuple[str, ...] = ("shorter", "longer", "cut_short")
"""How a call's stored audio disagrees with its metadata under ``size_mismatch``: the stored
files hold fewer or more bytes than the metadata says, or the server claims the metadata's size
but closes every body before the end."""

URL_FAULTS: tuple[str, ...] = (
    "other_host",
    "scheme_relative",
    "userinfo",
    "other_call",
    "dot_segments",
    "encoded_slash",
    "foreign_workspace",
)
"""Where ``evil_urls`` calls' download links point instead of their own download folder."""


@dataclass(slots=True)
class EmulatorConfig:
    """What the emulator serves and how it misbehaves.

    The dataset depends only on the first group of fields, so two emulators with the same values
    serve byte-identical data. The second group (faults, pacing, link expiry) can be changed at run
    time through ``POST /__control``.
    """

    api_key: str
    seed: int = 1
    workspaces: int = 2
    calls_per_workspace: int = 25
    min_duration: float = 5.0
    max_duration: float = 120.0
    long_calls: int = 0
    long_duration: float = 3600.0
    null_sid_calls: int = 2
    no_recording_calls: int = 2
    archived_calls: int = 0
    not_configured_workspaces: int = 0
    hostile_listing: bool = False
    """Every list-calls and list-workspaces page also carries invalid entries (data.HOSTILE_*)."""
    bad_metadata: int = 0
    """Recorded calls per workspace whose metadata is broken (kinds: METADATA_FAULTS)."""
    size_mismatch: int = 0
    """Recorded calls per workspace whose stored audio disagrees with the metadata (SIZE_FAULTS)."""
    evil_urls: int = 0
    """Recorded calls per workspace whose download links point elsewhere (URL_FAULTS)."""
    evil_host: str = "http://127.0.0.2:9"
    """The foreign server that "other_host" style links point at."""

    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = field(default=FAULT_KINDS)
    retry_after: int = 1
    stall_seconds: float = 120.0
    latency: float = 0.0
    bandwidth: int | None = None
    url_ttl: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for values the emulator cannot serve."""
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        for name in (
            "workspaces",
            "calls_per_workspace",
            "long_calls",
            "null_sid_calls",
            "no_recording_calls",
            "archived_calls",
            "not_configured_workspaces",
            "bad_metadata",
            "size_mismatch",
            "evil_urls",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.long_calls > self.calls_per_workspace:
            raise ValueError("long_calls must be <= calls_per_workspace")
        if self.archived_calls > self.calls_per_workspace:
            raise ValueError("archived_calls must be <= calls_per_workspace")
        special = self.archived_calls + self.bad_metadata + self.size_mismatch + self.evil_urls
        if special > self.calls_per_workspace:
            raise ValueError(
                "archived + bad_metadata + size_mismatch + evil_urls must be <= calls_per_workspace"
            )
        if not self.evil_host.startswith(("http://", "https://")) or self.evil_host.endswith("/"):
            raise ValueError("evil_host must be an http(s) URL without a trailing slash")
        if self.not_configured_workspaces > self.workspaces:
            raise ValueError("not_configured_workspaces must be <= workspaces")
        if not 0 < self.min_duration <= self.max_duration:
            raise ValueError("need 0 < min_duration <= max_duration")
        if self.long_duration <= 0:
            raise ValueError("long_duration must be > 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be within [0, 1]")
        self.fault_kinds = tuple(self.fault_kinds)
        unknown = sorted(set(self.fault_kinds) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {list(FAULT_KINDS)}")
        if self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if self.stall_seconds < 0 or self.latency < 0:
            raise ValueError("stall_seconds and latency must be >= 0")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be > 0 (or None for unlimited)")
        if self.url_ttl is not None and self.url_ttl <= 0:
            raise ValueError("url_ttl must be > 0 (or None for links that never expire)")
