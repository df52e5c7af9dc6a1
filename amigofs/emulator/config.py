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

ROW_FAULTS: tuple[str, ...] = ("zero_time", "far_future", "absurd_duration")
"""How a call's fields are out of any sane range under ``bad_rows``, assigned in this order: its
listing entry starts at Go's zero time (0001-01-01T00:00:00Z) or in 2300 (both outside what
nanoseconds since 1970 in a signed 64-bit integer hold), or its metadata says
``duration_seconds: 1e308``. Its stored files stay sound."""

MAX_CALLS = 1_000_000_000
"""Calls a workspace can hold (besides those added at run time)."""
MAX_WORKSPACES = 1 << 20

DOWNLOAD_FRAMINGS: tuple[str, ...] = ("length", "chunked", "unknown_total")
"""How downloads say their length: "length" (206 with the file's size in Content-Range, or 200
with Content-Length); "chunked" (Range ignored: 200, the whole file, chunked, no length said);
"unknown_total" (206 with ``Content-Range: bytes a-b/*``)."""

OVER_CAPACITY_MODES: tuple[str, ...] = ("queue", "429")
"""What a request beyond ``max_connections`` gets: a place in line, or 429 with Retry-After."""

LINK_PROFILES: dict[str, dict[str, object]] = {
    "loopback": {
        "latency": 0.0,
        "bandwidth": None,
        "link_bandwidth": None,
        "max_connections": None,
        "over_capacity": "queue",
    },
    "internet": {
        "latency": 0.05,
        "bandwidth": 3_000_000,
        "link_bandwidth": 24_000_000,
        "max_connections": 32,
        "over_capacity": "queue",
    },
}
"""Named sets of link knobs (``--link-profile``). "internet" is the benchmarks' model of the API
across the internet: 50 ms before each answer, 3 MB/s per response (the vendor proxy's cap per
download), 24 MB/s shared by all responses at once (one uplink), at most 32 requests in flight
with the rest queued. "loopback" is the default: no latency and no limits. Add ``tls`` for the
handshakes too."""


@dataclass(slots=True)
class EmulatorConfig:
    """What the emulator serves and how it misbehaves.

    The dataset depends only on the first group of fields, so two emulators with the same values
    serve byte-identical data. The second group (faults, pacing, the link, link expiry, new calls)
    can be changed at run time through ``POST /__control``, except ``tls``.

    Workspaces of up to ``call_list.EAGER_CALLS`` calls are built up front; larger ones (up to
    ``MAX_CALLS``) are made call by call from their index, so a million calls cost no memory.
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
    bad_rows: int = 0
    """Recorded calls per workspace, after the evil_urls ones, whose listing entry or metadata
    holds a value out of any sane range (ROW_FAULTS)."""
    """The foreign server that "other_host" style links point at."""

    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = field(default=FAULT_KINDS)
    retry_after: int = 1
    stall_seconds: float = 120.0
    latency: float = 0.0
    bandwidth: int | None = None
    url_ttl: float | None = None
    link_bandwidth: int | None = None
    """Bytes per second shared by every response body at once (one uplink), besides the
    per-response ``bandwidth``. None: unlimited."""
    max_connections: int | None = None
    """Requests in flight at most (a vendor proxy's cap; for HTTP/1.1 clients, their connections
    in use). None: no cap."""
    over_capacity: str = "queue"
    """What a request beyond max_connections gets (OVER_CAPACITY_MODES)."""
    new_calls_per_second: float = 0.0
    """New calls added at the head of every workspace while the emulator runs (listing offsets
    shift under a client, as they do at the real service)."""
    page_rows: int | None = None
    """Rows a list-calls page holds at most, whatever limit a client asks for (a server that
    sends fewer rows than asked); its continuation token follows the rows sent. None: limit."""
    download_framing: str = "length"
    """How downloads say their length (DOWNLOAD_FRAMINGS)."""
    tls: bool = False
    """Serve HTTPS with a self-signed certificate made at start (amigofs.emulator.tls); fixed
    at start, unlike the other fields of this group."""

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
            "bad_rows",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.calls_per_workspace + self.null_sid_calls + self.no_recording_calls > MAX_CALLS:
            raise ValueError(f"a workspace holds at most {MAX_CALLS} calls")
        if self.workspaces > MAX_WORKSPACES:
            raise ValueError(f"at most {MAX_WORKSPACES} workspaces")
        if self.long_calls > self.calls_per_workspace:
            raise ValueError("long_calls must be <= calls_per_workspace")
        if self.archived_calls > self.calls_per_workspace:
            raise ValueError("archived_calls must be <= calls_per_workspace")
        special = self.archived_calls + self.bad_metadata + self.size_mismatch + self.evil_urls
        if special + self.bad_rows > self.calls_per_workspace:
            raise ValueError(
                "archived + bad_metadata + size_mismatch + evil_urls + bad_rows must be "
                "<= calls_per_workspace"
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
        if self.link_bandwidth is not None and self.link_bandwidth <= 0:
            raise ValueError("link_bandwidth must be > 0 (or None for unlimited)")
        if self.max_connections is not None and self.max_connections <= 0:
            raise ValueError("max_connections must be > 0 (or None for no cap)")
        if self.over_capacity not in OVER_CAPACITY_MODES:
            raise ValueError(f"over_capacity must be one of {list(OVER_CAPACITY_MODES)}")
        if self.page_rows is not None and self.page_rows <= 0:
            raise ValueError("page_rows must be > 0 (or None for pages of the limit asked)")
        if self.download_framing not in DOWNLOAD_FRAMINGS:
            raise ValueError(f"download_framing must be one of {list(DOWNLOAD_FRAMINGS)}")
        if not 0.0 <= self.new_calls_per_second <= 1_000_000:
            raise ValueError("new_calls_per_second must be within [0, 1000000]")
