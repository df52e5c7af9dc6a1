"""The Platform API's answers as frozen dataclasses, and the validation that builds them.

Every parser takes decoded JSON (`object`) and either returns a value whose fields
are safe to use (identifiers that can become file names and URL segments, sizes
that are non-negative integers, text of bounded length that is safe to print) or
raises `ValidationError` naming what is wrong. A listing parses entry by entry, so
one bad entry never costs the whole listing.

Free text from the server (direction, formats, tts_provider, workspace names)
reaches terminals through xattrs (`getfattr -d`), log lines and stats, so each
character that is not printable (C0 controls such as ESC, DEL, C1 controls such as
CSI, bidirectional overrides, unpaired surrogates) is kept as a visible escape,
`\\x1b` style: the text still shows, and a terminal never acts on it.

A listing entry's start and duration are not needed to show its call: one the mount
cannot represent (a start outside what the call index stores, nanoseconds since 1970
in a signed 64-bit integer, 1677-09-21 to 2262-04-11, such as Go's zero time
0001-01-01; a duration that is negative, not finite, or longer than MAX_CALL_SECONDS)
is dropped with one warning naming the call, and the call is listed without it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import cachetools

from amigofs.api.errors import ValidationError

log = logging.getLogger(__name__)

# Workspace ids are UUIDs and call SIDs are Twilio SIDs ("CA" + 32 hex), but the
# contract only promises strings: accept any plain identifier that is safe as a
# file name and as one URL path segment.
IDENTIFIER_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Stored file names (the last segment of a download path).
FILENAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# Far beyond any call recording (an hour of PCM16 at 16 kHz is 115 MB), so a size
# above it is a corrupt answer, not a long call.
MAX_FILE_SIZE = 1 << 40
MAX_SAMPLE_RATE = 384_000
# A call longer than this is a corrupt answer (1e308 was seen), not a long call.
MAX_CALL_SECONDS = 10 * 86400.0
# What an instant can be: nanoseconds since 1970 in a signed 64-bit integer, as the
# call index stores starts and the kernel file times.
MIN_TIME_NS = -(1 << 63)
MAX_TIME_NS = (1 << 63) - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def is_identifier(name: str) -> bool:
    return IDENTIFIER_RE.fullmatch(name) is not None


@dataclass(slots=True, frozen=True)
class Workspace:
    id: str
    slug: str
    name: str


@dataclass(slots=True, frozen=True)
class CallSummary:
    workspace_id: str
    call_sid: str
    started_at: dt.datetime | None
    duration_seconds: float | None
    direction: str | None


@dataclass(slots=True, frozen=True)
class DownloadPath:
    """Where one stored file of a call is downloaded from, checked to be under
    `/v1/{workspace}/recordings/{sid}/download/` of the configured server."""

    workspace_id: str
    call_sid: str
    filename: str
    # Path and query exactly as the server gave them; the query may carry the
    # signature of a time-limited link.
    target: str


@dataclass(slots=True, frozen=True)
class RecordingUrls:
    call_sid: str
    inbound: DownloadPath | None
    outbound: DownloadPath | None
    metadata: DownloadPath | None


@dataclass(slots=True, frozen=True)
class RecordingMetadata:
    workspace_id: str
    call_sid: str
    direction: str
    duration_seconds: float
    inbound_format: str
    inbound_sample_rate: int
    outbound_format: str
    outbound_sample_rate: int
    tts_provider: str
    call_start: dt.datetime
    call_end: dt.datetime
    inbound_size_bytes: int
    outbound_size_bytes: int
    media_start_epoch_ms: float
    # The answer's body exactly as the server sent it: presented as metadata.json
    # (the platform serves the same document there), kept with the record.
    body: bytes = b""


@dataclass(slots=True, frozen=True)
class Page:
    """One page of a listing: the raw entries, where the next page starts, and the
    listing's size as the server gave it with this page (list-calls has it)."""

    items: list[Any]
    next_token: int | None
    total: int | None = None


# --- field helpers -------------------------------------------------------------


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _field(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise ValidationError(f"{what}: missing required field {key!r}")
    return obj[key]


def _str(obj: dict[str, Any], key: str, what: str, *, max_len: int = 1024) -> str:
    value = _field(obj, key, what)
    if not isinstance(value, str):
        raise ValidationError(f"{what}: {key!r} is not a string")
    if len(value) > max_len:
        raise ValidationError(f"{what}: {key!r} is longer than {max_len} characters")
    return printable(value)


def printable(text: str) -> str:
    """`text` with each character that is not printable written as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _identifier(value: object, key: str, what: str) -> str:
    if not isinstance(value, str) or not is_identifier(value):
        raise ValidationError(f"{what}: {key!r} is not a plain identifier: {_show(value)}")
    return value


def _int(obj: dict[str, Any], key: str, what: str, *, low: int, high: int) -> int:
    value = _field(obj, key, what)
    # bool is an int in Python but never a size or a rate in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what}: {key!r} is not an integer: {_show(value)}")
    if not low <= value <= high:
        raise ValidationError(f"{what}: {key!r} is out of range: {value}")
    return value


def _number(obj: dict[str, Any], key: str, what: str) -> float:
    value = _field(obj, key, what)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{what}: {key!r} is not a number: {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # json decodes integers of any length; a float cannot hold them
        raise ValidationError(f"{what}: {key!r} is out of range") from None
    if not math.isfinite(number) or number < 0:
        raise ValidationError(f"{what}: {key!r} is not a finite non-negative number")
    return number


def _exact_ns(when: dt.datetime) -> int:
    # Whole numbers from the calendar: a float timestamp is not exact to the
    # microsecond, and truncates towards 1970 before it.
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # as parse_time takes a naive time
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def storable_ns(when: dt.datetime) -> int | None:
    """An instant as nanoseconds since 1970, or None if a signed 64-bit integer cannot
    hold it (before 1677-09-21, after 2262-04-11): what the call index keeps."""
    ns = _exact_ns(when)
    return ns if MIN_TIME_NS <= ns <= MAX_TIME_NS else None


def time_ns(when: dt.datetime) -> int:
    """An instant as nanoseconds since 1970, as file times and the call index have it,
    held to what a signed 64-bit integer holds (a file time of 0001-01-01 shows as
    1677-09-21; the index keeps no such start: storable_ns)."""
    return min(max(_exact_ns(when), MIN_TIME_NS), MAX_TIME_NS)


def from_time_ns(ns: int) -> dt.datetime:
    """The UTC instant of nanoseconds since 1970 (to the microsecond, rounded down)."""
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def sane_duration(value: object) -> float | None:
    """A duration in seconds that a call can last, or None: not a number, negative,
    not finite, or longer than MAX_CALL_SECONDS."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer of any length, from JSON
        return None
    return seconds if 0 <= seconds <= MAX_CALL_SECONDS else None  # NaN compares False


def parse_time(value: object, key: str, what: str) -> dt.datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError(f"{what}: {key!r} is not an ISO-8601 time: {_show(value)}")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{what}: {key!r} is not an ISO-8601 time: {_show(value)}") from None
    if when.tzinfo is None:
        # The API speaks UTC; a naive time is taken as UTC rather than local time
        # so that mtimes do not move with the machine's time zone.
        when = when.replace(tzinfo=dt.UTC)
    return when


def _show(value: object) -> str:
    """A short, printable rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- parsers ---------------------------------------------------------------------


def parse_page(value: object, what: str) -> Page:
    obj = _obj(value, what)
    items = _field(obj, "items", what)
    if not isinstance(items, list):
        raise ValidationError(f"{what}: 'items' is not a list")
    has_more = _field(obj, "has_more", what)
    if not isinstance(has_more, bool):
        raise ValidationError(f"{what}: 'has_more' is not a boolean")
    token = obj.get("continuation_token")
    total = obj.get("total")
    if isinstance(total, bool) or not isinstance(total, int) or not 0 <= total < 1 << 40:
        total = None
    if has_more:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ValidationError(f"{what}: has_more without a usable continuation_token")
        return Page(items, token, total)
    return Page(items, None, total)


def parse_workspace(value: object) -> Workspace:
    what = "workspace"
    obj = _obj(value, what)
    ws_id = _identifier(_field(obj, "id", what), "id", what)
    return Workspace(
        id=ws_id,
        slug=_str(obj, "slug", what) if isinstance(obj.get("slug"), str) else "",
        name=_str(obj, "name", what) if isinstance(obj.get("name"), str) else "",
    )


def parse_call_summary(value: object, workspace_id: str) -> CallSummary | None:
    """A call to show, or None for a call that has nothing to mount (no SID, no recording)."""
    what = "call"
    obj = _obj(value, what)
    sid = obj.get("call_sid")
    if sid is None or obj.get("has_recording") is False:
        return None
    sid = _identifier(sid, "call_sid", what)
    direction = obj.get("direction")
    dropped: list[str] = []
    started_at = _listed_start(obj.get("started_at"), dropped)
    duration = obj.get("duration_seconds")
    duration_seconds = sane_duration(duration)
    if duration is not None and duration_seconds is None:
        dropped.append(f"duration_seconds {_show(duration)} (not 0 to {MAX_CALL_SECONDS:.0f} s)")
    if dropped:
        _warn_once(workspace_id, sid, "; ".join(dropped))
    return CallSummary(
        workspace_id=workspace_id,
        call_sid=sid,
        started_at=started_at,
        duration_seconds=duration_seconds,
        direction=_str(obj, "direction", what, max_len=64) if isinstance(direction, str) else None,
    )


def _listed_start(value: object, dropped: list[str]) -> dt.datetime | None:
    """A listing entry's start, or None (noted in `dropped`) if there is none to show."""
    if value is None:
        return None
    try:
        when = parse_time(value, "started_at", "call")
    except ValidationError:
        dropped.append(f"started_at {_show(value)} (not an ISO-8601 time)")
        return None
    if storable_ns(when) is None:
        dropped.append(f"started_at {_show(value)} (outside 1677-09-21 to 2262-04-11)")
        return None
    return when


# Calls already warned about: a listing is read again at each refresh, and a day's
# calls again by a date-filtered listing, but a bad row is said once per mount.
# (An LRU of the last few thousand: memory bounded whatever the listing holds.)
_warned: cachetools.LRUCache[tuple[str, str], bool] = cachetools.LRUCache(maxsize=4096)


def _warn_once(workspace_id: str, call_sid: str, dropped: str) -> None:
    key = (workspace_id, call_sid)
    if key in _warned:
        return
    _warned[key] = True
    log.warning(
        "list-calls %s: call %s listed without what cannot be shown: %s",
        workspace_id, call_sid, dropped,
    )  # fmt: skip


def parse_download_path(
    value: object, *, key: str, workspace_id: str, call_sid: str, base_url: str
) -> DownloadPath | None:
    """Checks a download path from get-recording-urls.

    The client sends the API key with every request, so a path that points at
    another host, or anywhere but this call's download folder, is refused.
    """
    what = f"recording urls of {call_sid}"
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise ValidationError(f"{what}: {key!r} is not a string path")
    if any(not c.isprintable() or c.isspace() or c == "\\" for c in value):
        raise ValidationError(f"{what}: {key!r} holds control or space characters")
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. "http://[::1/..." (an unclosed IPv6 host)
        raise ValidationError(f"{what}: {key!r} is not a valid URL") from None
    if parts.scheme or parts.netloc:
        base = urlsplit(base_url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise ValidationError(f"{what}: {key!r} points at another server")
    if parts.fragment:
        raise ValidationError(f"{what}: {key!r} has a fragment")
    prefix = f"/v1/{workspace_id}/recordings/{call_sid}/download/"
    path = parts.path
    # Percent-escapes could smuggle a '/' or '..' past the prefix check.
    if not path.startswith(prefix) or "%" in path:
        raise ValidationError(f"{what}: {key!r} is not under {prefix}")
    filename = path[len(prefix) :]
    if FILENAME_RE.fullmatch(filename) is None or ".." in filename:
        raise ValidationError(f"{what}: {key!r} names an unsafe file: {_show(filename)}")
    target = path + ("?" + parts.query if parts.query else "")
    return DownloadPath(workspace_id, call_sid, filename, target)


def parse_recording_urls(
    value: object, *, workspace_id: str, call_sid: str, base_url: str
) -> RecordingUrls:
    what = f"recording urls of {call_sid}"
    obj = _obj(value, what)
    if obj.get("call_sid") != call_sid:
        raise ValidationError(f"{what}: answer is for another call: {_show(obj.get('call_sid'))}")

    def path(key: str) -> DownloadPath | None:
        return parse_download_path(
            obj.get(key), key=key, workspace_id=workspace_id, call_sid=call_sid, base_url=base_url
        )

    return RecordingUrls(call_sid, path("inbound_url"), path("outbound_url"), path("metadata_url"))


def parse_recording_metadata(
    value: object, *, workspace_id: str, call_sid: str, body: bytes = b""
) -> RecordingMetadata:
    """The metadata answer `value` (parsed from `body`, the bytes kept as its
    metadata.json)."""
    what = f"metadata of {call_sid}"
    obj = _obj(value, what)
    if _field(obj, "call_sid", what) != call_sid:
        raise ValidationError(f"{what}: answer is for another call: {_show(obj.get('call_sid'))}")
    start = parse_time(_field(obj, "call_start_iso", what), "call_start_iso", what)
    end = parse_time(_field(obj, "call_end_iso", what), "call_end_iso", what)
    return RecordingMetadata(
        workspace_id=workspace_id,
        call_sid=call_sid,
        direction=_str(obj, "direction", what, max_len=64),
        duration_seconds=_number(obj, "duration_seconds", what),
        inbound_format=_str(obj, "inbound_format", what, max_len=64),
        inbound_sample_rate=_int(obj, "inbound_sample_rate", what, low=1, high=MAX_SAMPLE_RATE),
        outbound_format=_str(obj, "outbound_format", what, max_len=64),
        outbound_sample_rate=_int(obj, "outbound_sample_rate", what, low=1, high=MAX_SAMPLE_RATE),
        tts_provider=_str(obj, "tts_provider", what, max_len=256),
        call_start=start,
        call_end=end,
        inbound_size_bytes=_int(obj, "inbound_size_bytes", what, low=0, high=MAX_FILE_SIZE),
        outbound_size_bytes=_int(obj, "outbound_size_bytes", what, low=0, high=MAX_FILE_SIZE),
        media_start_epoch_ms=_number(obj, "media_start_epoch_ms", what),
        body=body,
    )


def parse_archived(value: object) -> dt.datetime | None:
    """The restore time of a 202 answer, if the body gives one."""
    if not isinstance(value, dict):
        return None
    for key in ("restore_eta", "estimated_restore_time", "restore_at"):
        if key in value:
            try:
                return parse_time(value[key], key, "archived recording")
            except ValidationError:
                return None
    return None


# --- back to documents (for the metadata cache; parsed again when read back) -------


def call_summary_document(call: CallSummary) -> dict[str, Any]:
    return {
        "call_sid": call.call_sid,
        "has_recording": True,
        "started_at": call.started_at.isoformat() if call.started_at else None,
        "duration_seconds": call.duration_seconds,
        "direction": call.direction,
    }


def recording_urls_document(urls: RecordingUrls) -> dict[str, Any]:
    return {
        "call_sid": urls.call_sid,
        "status": "available",
        "inbound_url": urls.inbound.target if urls.inbound else None,
        "outbound_url": urls.outbound.target if urls.outbound else None,
        "metadata_url": urls.metadata.target if urls.metadata else None,
    }
