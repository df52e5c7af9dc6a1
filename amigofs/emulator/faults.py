"""The faults the emulator serves on purpose: which recordings are broken and how (the fault
plan: bad metadata, stored sizes that disagree with it, download links that point elsewhere),
and the hostile entries a hostile_listing adds to list pages."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from amigofs.emulator import seeded
from amigofs.emulator.audio import StoredObject
from amigofs.emulator.calls import Call, Recording, metadata_document
from amigofs.emulator.config import (
    METADATA_FAULTS,
    ROW_FAULTS,
    SIZE_FAULTS,
    URL_FAULTS,
    EmulatorConfig,
)

SIZE_FAULT_SAMPLES = 4000
"""Samples a "shorter" or "longer" stored file lacks or has in excess of what the metadata says."""
SIZE_FAULT_CUT_BYTES = 3000
"""A "cut_short" stored file's bodies end this many bytes before the size the server claims."""
ABSURD_SIZE = 1 << 62
"""The size an "absurd_size" metadata document claims (4 EiB)."""
BAD_ROW_STARTS = {"zero_time": "0001-01-01T00:00:00Z", "far_future": "2300-01-01T00:00:00Z"}
"""The started_at of a "zero_time" (Go's zero time) or "far_future" listing entry."""
ABSURD_DURATION = 1e308
"""The duration_seconds an "absurd_duration" metadata document claims."""
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


def fault_plan(config: EmulatorConfig) -> list[tuple[str, str]]:
    """The faults of the newest recorded (not archived) calls, newest first."""
    return (
        [("metadata_fault", METADATA_FAULTS[i % len(METADATA_FAULTS)])
         for i in range(config.bad_metadata)]
        + [("size_fault", SIZE_FAULTS[i % len(SIZE_FAULTS)])
           for i in range(config.size_mismatch)]
        + [("url_fault", URL_FAULTS[i % len(URL_FAULTS)]) for i in range(config.evil_urls)]
        + [("row_fault", ROW_FAULTS[i % len(ROW_FAULTS)]) for i in range(config.bad_rows)]
    )  # fmt: skip


def inject_faults(config: EmulatorConfig, calls: list[Call]) -> list[Call]:
    """Breaks the newest recorded (not archived) calls of a workspace made at once as
    bad_metadata, size_mismatch, evil_urls and bad_rows ask, in that order and in listing order, so
    tests can find them."""
    plan = fault_plan(config)
    if not plan:
        return calls
    result = []
    for call in calls:
        rec = call.recording
        if rec is not None and not rec.archived and plan:
            call = with_fault(call, *plan.pop(0))
        result.append(call)
    return result


def with_fault(call: Call, field_name: str, kind: str) -> Call:
    rec = call.recording
    assert rec is not None
    rec = replace(rec, **{field_name: kind})  # type: ignore[arg-type]
    if field_name == "metadata_fault":
        rec = _break_metadata(rec)
    if field_name == "row_fault" and kind in BAD_ROW_STARTS:
        # Only the listing entry says so: the metadata keeps the call's true start.
        return replace(call, summary={**call.summary, "started_at": BAD_ROW_STARTS[kind]},
                       recording=rec)  # fmt: skip
    if field_name == "row_fault":
        metadata = {**rec.metadata, "duration_seconds": ABSURD_DURATION}
        rec = replace(rec, metadata=metadata, metadata_bytes=metadata_document(metadata))
    return replace(call, recording=rec)


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
        body = metadata_document(metadata)
    return replace(rec, metadata=metadata, metadata_bytes=body)


def stored_samples(rec: Recording, samples: int) -> int:
    """The samples a stored audio file holds when the metadata says `samples`: fewer or
    more under a "shorter" or "longer" size fault."""
    if rec.size_fault == "shorter":
        return samples - min(SIZE_FAULT_SAMPLES, samples // 2)
    if rec.size_fault == "longer":
        return samples + SIZE_FAULT_SAMPLES
    return samples


def cut_short_end(size: int) -> int:
    """Where every body of a "cut_short" stored file of `size` bytes ends (the connection
    closes there, short of what the headers promised)."""
    return max(1, size - SIZE_FAULT_CUT_BYTES)


def evil_links(
    rec: Recording,
    other: Recording | None,
    *,
    own_host: str,
    evil_host: str,
    foreign_workspace_id: str,
) -> tuple[str, str, str]:
    """The inbound, outbound and metadata links an evil_urls recording hands out instead of
    its own download paths: to `evil_host`, to `other` (a sound recording of its workspace)
    or to a workspace the key does not own. ``own_host`` is the emulator's host:port as the
    client addressed it."""
    assert rec.url_fault is not None
    workspace_id, call_sid = rec.workspace_id, rec.call_sid
    other_sid = other.call_sid if other is not None else "CA" + "0" * 32
    evil_netloc = evil_host.split("://", 1)[1]
    links = []
    for index, name in enumerate(rec.filenames):
        other_name = other.filenames[index] if other is not None else name
        own = f"/v1/{workspace_id}/recordings/{call_sid}/download/{name}"
        link = {
            "other_host": f"{evil_host}{own}",
            "scheme_relative": f"//{evil_netloc}{own}",
            "userinfo": f"http://{own_host}@{evil_netloc}{own}",
            "other_call": f"/v1/{workspace_id}/recordings/{other_sid}/download/{other_name}",
            "dot_segments": f"{own[: -len(name)]}../../{other_sid}/download/{other_name}",
            "encoded_slash": f"{own[: -len(name)]}..%2F..%2F{other_sid}%2Fdownload%2F{other_name}",
            "foreign_workspace": f"/v1/{foreign_workspace_id}/recordings/{call_sid}/download/{name}",
        }[rec.url_fault]
        links.append(link)
    return links[0], links[1], links[2]


def hostile_call_items(page: list[dict[str, object]], epoch: datetime) -> list[object]:
    """What hostile_listing adds to a list-calls page: every HOSTILE_CALL_SIDS value in an
    otherwise valid summary, the HOSTILE_NON_OBJECTS, and a later duplicate of the page's
    first call claiming another start time (a client must keep the first)."""
    template: dict[str, object] = dict(page[0]) if page else {"has_recording": True}
    items: list[object] = [{**template, "call_sid": sid} for sid in HOSTILE_CALL_SIDS]
    items += HOSTILE_NON_OBJECTS
    if page and isinstance(page[0].get("call_sid"), str):
        items.append({**template, "started_at": seeded.iso_z(epoch + timedelta(days=1))})
    return items


def hostile_workspace_items(page: list[dict[str, object]]) -> list[object]:
    """What hostile_listing adds to a list-workspaces page, as hostile_call_items does."""
    template: dict[str, object] = dict(page[0]) if page else {"name": "x"}
    items: list[object] = [{**template, "id": ws_id} for ws_id in HOSTILE_WORKSPACE_IDS]
    items += HOSTILE_NON_OBJECTS
    if page:
        items.append({**template, "name": "Duplicate of " + str(template.get("name"))})
    return items


REPLACED_FROM = 64
"""A replaced object's bytes differ from this offset on (a stored WAV keeps its header)."""


def replaced_bytes(data: bytes, start: int, version: int) -> bytes:
    """Bytes of version `version` of an object (0: as made) from its version-0 bytes
    `data`, which begin at offset `start`: every byte from REPLACED_FROM on is XORed
    with a byte of the version, so each version differs from every other."""
    if version == 0:
        return data
    key = (version * 0x5B) % 255 + 1
    keep = max(0, min(len(data), REPLACED_FROM - start))
    return data[:keep] + data[keep:].translate(bytes(b ^ key for b in range(256)))


class ReplacedObject:
    """A stored object replaced in place: the same size, other bytes (replaced_bytes)."""

    __slots__ = ("_object", "version")

    def __init__(self, obj: StoredObject, version: int) -> None:
        self._object = obj
        self.version = version

    @property
    def size(self) -> int:
        return self._object.size

    @property
    def content_type(self) -> str:
        return self._object.content_type

    def read(self, start: int, end: int) -> bytes:
        return replaced_bytes(self._object.read(start, end), start, self.version)
