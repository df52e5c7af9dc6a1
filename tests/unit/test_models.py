"""The validation of the API's answers: download paths case by case, parsers by property.

Every parser either returns a value whose fields keep their documented invariants or raises
`ValidationError`; no input (however odd its JSON) gets anything else out of it.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from amigofs.api.errors import ValidationError
from amigofs.api.models import (
    FILENAME_RE,
    IDENTIFIER_RE,
    MAX_FILE_SIZE,
    MAX_SAMPLE_RATE,
    CallSummary,
    DownloadPath,
    Page,
    RecordingMetadata,
    RecordingUrls,
    Workspace,
    parse_call_summary,
    parse_download_path,
    parse_page,
    parse_recording_metadata,
    parse_recording_urls,
    parse_workspace,
)

WS = "0b7e6c1e-3d2a-4f5b-9c8d-7e6f5a4b3c2d"
SID = "CA0123456789abcdef0123456789abcdef"
BASE = "http://127.0.0.1:8123"
PREFIX = f"/v1/{WS}/recordings/{SID}/download/"


def download_path(value: object, base_url: str = BASE) -> DownloadPath | None:
    return parse_download_path(
        value, key="inbound_url", workspace_id=WS, call_sid=SID, base_url=base_url
    )


# --- download paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "filename", "target"),
    [
        (PREFIX + "inbound.wav", "inbound.wav", PREFIX + "inbound.wav"),
        (PREFIX + "outbound.pcm", "outbound.pcm", PREFIX + "outbound.pcm"),
        (PREFIX + "metadata.json", "metadata.json", PREFIX + "metadata.json"),
        # A signed, time-limited link keeps its query exactly.
        (
            PREFIX + "inbound.ulaw?expires=1767225600&sig=ab12cd34",
            "inbound.ulaw",
            PREFIX + "inbound.ulaw?expires=1767225600&sig=ab12cd34",
        ),
        # An absolute URL on the configured server is the same path.
        (BASE + PREFIX + "inbound.wav", "inbound.wav", PREFIX + "inbound.wav"),
        (BASE + PREFIX + "inbound.wav?sig=x%2Fy", "inbound.wav", PREFIX + "inbound.wav?sig=x%2Fy"),
    ],
)
def test_download_paths_that_are_accepted(value: str, filename: str, target: str) -> None:
    path = download_path(value)
    assert path == DownloadPath(WS, SID, filename, target)


def test_a_missing_download_path_is_none() -> None:
    assert download_path(None) is None


@pytest.mark.parametrize(
    "value",
    [
        # Another host, scheme or port: the key would go with the request.
        "https://evil.example" + PREFIX + "inbound.wav",
        "http://evil.example" + PREFIX + "inbound.wav",
        "//evil.example" + PREFIX + "inbound.wav",
        "https://127.0.0.1:8123" + PREFIX + "inbound.wav",
        "http://127.0.0.1:8124" + PREFIX + "inbound.wav",
        "http://127.0.0.1:8123@evil.example" + PREFIX + "inbound.wav",
        "http://user@127.0.0.1:8123" + PREFIX + "inbound.wav",
        "ftp://127.0.0.1:8123" + PREFIX + "inbound.wav",
        "javascript:alert(1)",
        "http://[::1" + PREFIX + "inbound.wav",
        # Outside this call's download folder.
        PREFIX + "../metadata",
        PREFIX + "../../../../workspaces",
        PREFIX + "..",
        PREFIX + ".",
        PREFIX + "..%2Fmetadata",
        PREFIX + "%2e%2e/metadata",
        PREFIX + "a%2Fb",
        PREFIX + "inbound%2ewav",
        PREFIX + "a/b.wav",
        PREFIX + "a/../inbound.wav",
        PREFIX,
        PREFIX + ".hidden",
        PREFIX + "-rf",
        PREFIX + "x" * 129,
        f"/v1/{WS}/recordings/CA999/download/inbound.wav",
        f"/v1/{WS}/recordings/{SID}x/download/inbound.wav",
        f"/v1/{WS}x/recordings/{SID}/download/inbound.wav",
        f"/v1/{WS}/recordings/{SID}/metadata",
        f"/v1/{WS}/recordings/{SID}/download",
        f"v1/{WS}/recordings/{SID}/download/inbound.wav",
        f"/v2/{WS}/recordings/{SID}/download/inbound.wav",
        f"/v1/{WS}/recordings/{SID}/download//inbound.wav",
        f"/v1/{WS}/recordings/{SID}/./download/inbound.wav",
        f"/v1/{WS}/recordings/{SID}/x/../download/inbound.wav",
        f"/V1/{WS}/recordings/{SID}/download/inbound.wav",
        # Characters a path must not hold.
        PREFIX + "inbound.wav#frag",
        PREFIX + "in bound.wav",
        PREFIX + "inbound.wav\n",
        PREFIX + "in\x00bound.wav",
        PREFIX + "in\\bound.wav",
        PREFIX + "inbound.wav\u202e",
        PREFIX + "ïnbound.wav",
        "",
        "/" + "a" * 3000,
        # Not a string at all.
        1,
        True,
        ["/v1"],
        {"path": PREFIX + "inbound.wav"},
    ],
)
def test_download_paths_that_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        download_path(value)


def test_the_base_url_is_compared_whole() -> None:
    assert download_path(BASE + PREFIX + "a.wav", base_url=BASE + "/") is not None
    with pytest.raises(ValidationError):
        download_path(BASE + PREFIX + "a.wav", base_url="https://api.platform.amigo.ai")


# --- property tests of every parser ------------------------------------------------------------

# Values that look nearly right, or that Python's json decodes but a float cannot hold:
# where parsers slip. Drawn often, so 400 examples surely meet them.
TRICKY: list[object] = [
    None,
    "",
    SID,
    WS,
    "2025-06-02T12:00:00Z",
    "2025-06-02T12:00:00.123+02:00",
    "2025-06-02",
    "2025-13-02",
    PREFIX + "inbound.wav",
    BASE + PREFIX + "outbound.wav",
    "http://[::1" + PREFIX + "a.wav",
    "//evil.example" + PREFIX + "a.wav",
    PREFIX + "..",
    True,
    False,
    -1,
    0,
    MAX_FILE_SIZE,
    MAX_FILE_SIZE + 1,
    10**400,
    -(10**400),
    1e308,
    -0.0,
    float("inf"),
    float("nan"),
    # Terminal escapes: ESC (C0), CSI (C1), DEL, a bidi override, an unpaired surrogate.
    "inbound\x1b[2J\x1b]0;title\x07",
    "\x9b31mred",
    "pcm16\x7f\x08",
    "\u202eevil",
    "\ud800",
    "x" * 65,
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

VALID_METADATA: dict[str, Any] = {
    "call_sid": SID,
    "workspace_id": WS,
    "service_id": None,
    "direction": "inbound",
    "duration_seconds": 61.5,
    "inbound_format": "mulaw",
    "inbound_sample_rate": 8000,
    "outbound_format": "pcm_s16le",
    "outbound_sample_rate": 16000,
    "tts_provider": "elevenlabs",
    "call_start_iso": "2025-06-02T12:00:00.000+00:00",
    "call_end_iso": "2025-06-02T12:01:01.500+00:00",
    "inbound_size_bytes": 492_058,
    "outbound_size_bytes": 1_968_044,
    "media_start_epoch_ms": 1748865600123,
}
VALID_URLS: dict[str, Any] = {
    "call_sid": SID,
    "status": "available",
    "inbound_url": PREFIX + "inbound.wav",
    "outbound_url": BASE + PREFIX + "outbound.wav?expires=1&sig=ab",
    "metadata_url": PREFIX + "metadata.json",
}
VALID_CALL: dict[str, Any] = {
    "entity_id": "5a4b3c2d-0b7e-4f5b-9c8d-7e6f0b7e6c1e",
    "call_sid": SID,
    "direction": "outbound",
    "started_at": "2025-06-02T12:00:00Z",
    "duration_seconds": 61.5,
    "status": "completed",
    "has_recording": True,
}
VALID_WORKSPACE: dict[str, Any] = {"id": WS, "slug": "acme-health", "name": "Acme Health"}
VALID_PAGE: dict[str, Any] = {
    "items": [VALID_CALL, VALID_CALL],
    "has_more": True,
    "continuation_token": 100,
    "total": 250,
}


def mutations(valid: dict[str, Any]) -> st.SearchStrategy[object]:
    """The valid document with keys dropped or set to arbitrary JSON, or any JSON at all."""
    keys = st.sampled_from([*sorted(valid), "extra"])
    tricky = st.sampled_from(TRICKY)
    edit = st.tuples(keys, st.booleans(), st.one_of(tricky, tricky, json_values))

    def apply(edits: list[tuple[str, bool, object]]) -> dict[str, Any]:
        doc = dict(valid)
        for key, drop, value in edits:
            if drop:
                doc.pop(key, None)
            else:
                doc[key] = value
        return doc

    return st.lists(edit, min_size=0, max_size=4).map(apply) | json_values


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and IDENTIFIER_RE.fullmatch(value) is not None


def is_size(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_FILE_SIZE


def is_aware_time(value: object) -> bool:
    return isinstance(value, dt.datetime) and value.tzinfo is not None


def is_safe_text(value: object, max_len: int) -> bool:
    """Text a terminal shows as it is (no control characters), of bounded length (each
    character of the server's at most one 10-character escape)."""
    return isinstance(value, str) and value.isprintable() and len(value) <= 10 * max_len


def is_finite_non_negative(value: object) -> bool:
    return type(value) is float and math.isfinite(value) and value >= 0


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(mutations(VALID_METADATA))
@example({**VALID_METADATA, "duration_seconds": 10**400})
@example({**VALID_METADATA, "media_start_epoch_ms": -(10**400)})
def test_parse_recording_metadata_returns_a_safe_value_or_validation_error(doc: object) -> None:
    try:
        meta = parse_recording_metadata(doc, workspace_id=WS, call_sid=SID)
    except ValidationError:
        return
    assert isinstance(meta, RecordingMetadata)
    assert meta.call_sid == SID and meta.workspace_id == WS
    assert is_size(meta.inbound_size_bytes) and is_size(meta.outbound_size_bytes)
    for rate in (meta.inbound_sample_rate, meta.outbound_sample_rate):
        assert type(rate) is int and 1 <= rate <= MAX_SAMPLE_RATE
    assert is_finite_non_negative(meta.duration_seconds)
    assert is_finite_non_negative(meta.media_start_epoch_ms)
    assert is_aware_time(meta.call_start) and is_aware_time(meta.call_end)
    for text in (meta.direction, meta.inbound_format, meta.outbound_format):
        assert is_safe_text(text, 64)
    assert is_safe_text(meta.tts_provider, 256)


@PROPERTY
@given(mutations(VALID_URLS))
@example({**VALID_URLS, "outbound_url": "http://[::1" + PREFIX + "a.wav"})
def test_parse_recording_urls_returns_safe_paths_or_validation_error(doc: object) -> None:
    try:
        urls = parse_recording_urls(doc, workspace_id=WS, call_sid=SID, base_url=BASE)
    except ValidationError:
        return
    assert isinstance(urls, RecordingUrls)
    assert urls.call_sid == SID
    for path in (urls.inbound, urls.outbound, urls.metadata):
        if path is None:
            continue
        assert (path.workspace_id, path.call_sid) == (WS, SID)
        assert FILENAME_RE.fullmatch(path.filename) and ".." not in path.filename
        assert path.target.split("?", 1)[0] == PREFIX + path.filename
        assert not any(c.isspace() or not c.isprintable() for c in path.target)


@PROPERTY
@given(mutations(VALID_CALL))
@example({**VALID_CALL, "duration_seconds": 10**400})
def test_parse_call_summary_returns_a_safe_call_none_or_validation_error(doc: object) -> None:
    try:
        call = parse_call_summary(doc, WS)
    except ValidationError:
        return
    if call is None:
        # Only a call without a SID or without a recording has nothing to mount.
        assert isinstance(doc, dict)
        assert doc.get("call_sid") is None or doc.get("has_recording") is False
        return
    assert isinstance(call, CallSummary)
    assert call.workspace_id == WS
    assert is_identifier(call.call_sid)
    assert call.started_at is None or is_aware_time(call.started_at)
    assert call.duration_seconds is None or is_finite_non_negative(call.duration_seconds)
    assert call.direction is None or is_safe_text(call.direction, 64)


@PROPERTY
@given(mutations(VALID_WORKSPACE))
def test_parse_workspace_returns_a_safe_workspace_or_validation_error(doc: object) -> None:
    try:
        ws = parse_workspace(doc)
    except ValidationError:
        return
    assert isinstance(ws, Workspace)
    assert is_identifier(ws.id)
    assert is_safe_text(ws.slug, 1024) and is_safe_text(ws.name, 1024)


@PROPERTY
@given(mutations(VALID_PAGE))
def test_parse_page_returns_a_usable_page_or_validation_error(doc: object) -> None:
    try:
        page = parse_page(doc, "list-calls")
    except ValidationError:
        return
    assert isinstance(page, Page)
    assert isinstance(page.items, list)
    assert isinstance(doc, dict) and page.items is doc["items"]
    if doc["has_more"]:
        assert type(page.next_token) is int and page.next_token >= 0
    else:
        assert page.next_token is None


@PROPERTY
@given(st.sampled_from(TRICKY) | json_values, st.text(max_size=300))
def test_parse_download_path_never_raises_anything_else(value: object, text: str) -> None:
    for candidate in (value, text, PREFIX + text, BASE + PREFIX + text, "http://" + text):
        try:
            path = download_path(candidate)
        except ValidationError:
            continue
        if path is not None:
            assert FILENAME_RE.fullmatch(path.filename) and ".." not in path.filename
            assert path.target.split("?", 1)[0] == PREFIX + path.filename


def test_control_characters_in_text_are_kept_as_visible_escapes() -> None:
    doc = {
        **VALID_METADATA,
        "direction": "inbound\x1b[2J",
        "tts_provider": "\x1b]0;owned\x07eleven\x9b1m\x7f",
    }
    meta = parse_recording_metadata(doc, workspace_id=WS, call_sid=SID)
    assert meta.direction == "inbound\\x1b[2J"
    assert meta.tts_provider == "\\x1b]0;owned\\x07eleven\\x9b1m\\x7f"
    summary = parse_call_summary({**VALID_CALL, "direction": "out\u202ebound"}, WS)
    assert summary is not None and summary.direction == "out\\u202ebound"
    # A text that is too long is refused, not cut: the answer is not the API's.
    with pytest.raises(ValidationError, match="longer than 64"):
        parse_call_summary({**VALID_CALL, "direction": "x" * 65}, WS)
