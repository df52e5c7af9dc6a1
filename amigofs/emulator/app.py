"""The emulator as a raw ASGI application (no web framework, so the wire behaviour is explicit).

Routes under ``/v1`` follow platform-subset.openapi.json and need the bearer key; ``/__stats``
and ``/__control`` are the test harness's view and steering wheel and need no key.

Check order on API routes: admission (max_connections: wait, or 429 at once), latency, fault
injection, 401 (key), 422 (parameters), 403 (workspace), then the operation's own answers (400
filename, 503 not configured, 404, 202 archived, 403 link). A request holds its place from the
latency to its last body byte; every body byte passes the shared link (link.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import random
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import trio

from amigofs.emulator import faults
from amigofs.emulator.asgi import (
    Message,
    Receive,
    Request,
    Scope,
    Send,
    Stop,
    cancel_on_disconnect,
    date_param,
    detail,
    encode_headers,
    int_param,
    invalid,
    parse_range,
    read_body,
    respond,
    respond_json,
    status_recorder,
)
from amigofs.emulator.audio import StoredObject
from amigofs.emulator.call_list import CallList
from amigofs.emulator.calls import METADATA_FILENAME, Recording, metadata_document
from amigofs.emulator.config import BODY_FAULT_KINDS, EmulatorConfig
from amigofs.emulator.data import Dataset
from amigofs.emulator.link import Admission, OverCapacity, SharedLink

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
"""Body chunk handed to send(). Big enough for GB/s through hypercorn, small enough that the byte
counters track what a client consumed (send() returns once the chunk is in the socket buffer)."""

LOG_LIMIT = 100_000
FAULT_CUT_MAX = 1024 * 1024
"""A dropped or stalled body stops within its first MiB."""

ARCHIVE_TIER = "warm"
ARCHIVE_RESTORE = timedelta(hours=3)
"""The vendor restores warm-tier recordings within 3 hours."""

OPS = (
    "list-workspaces",
    "list-calls",
    "get-recording-urls",
    "get-recording-metadata",
    "download-recording-file",
)
CONTROL_KNOBS = (
    "fault_rate",
    "fault_kinds",
    "latency",
    "bandwidth",
    "url_ttl",
    "retry_after",
    "stall_seconds",
    "link_bandwidth",
    "max_connections",
    "over_capacity",
    "new_calls_per_second",
    "page_rows",
    "download_framing",
)
"""Config fields POST /__control may change at run time."""
CONTROL_MOVES = (
    "restore",
    "archive",
    "revoke",
    "grant",
    "nest_metadata",
    "add_calls",
    "understate_sizes",
    "replace",
    "replace_after_get",
)
"""POST /__control keys that change state rather than a config field: restore/archive move
recorded calls (by SID) out of and into the archive tier; revoke/grant take workspace ids away
from the key and give them back (a revoked workspace's routes answer 403, as a foreign one's
do); nest_metadata names the calls whose metadata is answered as JSON nested too deep for any
parser (replacing the previous list; [] ends it); add_calls puts N new calls at the head of every
workspace (an integer) or of the workspaces named ({workspace_id: N}), at once;
understate_sizes ({sid: N}) has the calls' metadata say their audio files are N bytes shorter
than stored (at least 0; replacing the previous map); replace ([sid]) replaces the calls' stored
audio in place now (same size, other bytes: faults.replaced_bytes, a new ETag and
Last-Modified); replace_after_get ([sid]) does so right after the first ranged GET of either of
its audio files, once."""

REPLACED_EPOCH = 1_700_000_000
"""Last-Modified of version 0 of every object; each replacement adds a minute."""

NESTED_DEPTH = 100_000
"""Arrays nested this deep exceed any JSON parser's recursion limit."""

_FILENAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(slots=True)
class Stats:
    """What the emulator served; counted as requests arrive and as bytes are sent."""

    requests: Counter[str] = field(default_factory=Counter)
    audio_bytes: int = 0
    download_bytes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    log: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))

    def arrival(self, op: str, path: str, range_header: str | None) -> dict[str, object]:
        """Count a request and return its log entry, whose status is filled in when known."""
        if op in OPS:
            self.requests[op] += 1
        entry: dict[str, object] = {
            "time": time.time(),
            "op": op,
            "path": path,
            "status": None,
            "range": range_header,
        }
        self.log.append(entry)
        return entry

    def to_json(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "audio_bytes": self.audio_bytes,
            "download_bytes": dict(self.download_bytes),
            "faults": dict(self.faults),
            "log": list(self.log),
        }

    def reset(self) -> None:
        self.requests.clear()
        self.audio_bytes = 0
        self.download_bytes.clear()
        self.faults.clear()
        self.log.clear()


class EmulatorApp:
    """The ASGI application. ``config`` holds the run-time knobs; ``data`` is fixed at start."""

    def __init__(self, config: EmulatorConfig, data: Dataset | None = None) -> None:
        self.config = config
        self.data = data if data is not None else Dataset(config)
        self.stats = Stats()
        # Archive moves at run time, over what the dataset starts with (which may be a million
        # calls long: never a set of every SID).
        self._restored: set[str] = set()
        self._archived: set[str] = set()
        self.link = SharedLink(config.link_bandwidth)
        self.admission = Admission()
        self._clock_base = time.monotonic()
        self._clock_added = 0
        self._owned = {ws.id for ws in self.data.workspaces}
        self.revoked: set[str] = set()
        self.nested_metadata: set[str] = set()
        self.understated: dict[str, int] = {}
        self.versions: Counter[str] = Counter()  # call SID -> replacements of its audio
        self.replace_after_get: set[str] = set()
        self._fault_rng = random.Random(f"amigofs-emulator:{config.seed}:faults")
        self._link_secret = hashlib.sha256(f"{config.seed}:{config.api_key}".encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request.from_scope(scope)
        try:
            if request.segments[0] == "v1":
                await self._api(request, receive, send)
            elif request.path in ("/__stats", "/__stats/reset", "/__stats/link", "/__control"):
                await self._harness(request, receive, send)
            else:
                raise detail(404, "Not Found")
        except Stop as stop:
            await respond_json(send, stop.status, stop.body, stop.headers)

    # --- harness routes ---------------------------------------------------------------------

    async def _harness(self, request: Request, receive: Receive, send: Send) -> None:
        if request.path == "/__stats" and request.method == "GET":
            await respond_json(send, 200, self.stats.to_json())
        elif request.path == "/__stats/link" and request.method == "GET":
            await respond_json(send, 200, self.admission.stats.to_json())
        elif request.path == "/__stats/reset" and request.method == "POST":
            self.stats.reset()
            self.admission.stats.reset()
            await respond_json(send, 200, {"reset": True})
        elif request.path == "/__control" and request.method == "GET":
            await respond_json(send, 200, self._control_state())
        elif request.path == "/__control" and request.method == "POST":
            body = await read_body(receive)
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self._apply_control(changes)
            except (ValueError, TypeError) as error:
                raise detail(400, str(error)) from None
            log.info("control: %s", changes)
            await respond_json(send, 200, self._control_state())
        else:
            raise detail(405, "Method Not Allowed")

    def archived(self) -> set[str]:
        """The SIDs of the recordings archived now."""
        return (set(self.data.archived_sids()) - self._restored) | self._archived

    def _is_archived(self, recording: Recording) -> bool:
        if recording.call_sid in self._archived:
            return True
        return recording.archived and recording.call_sid not in self._restored

    def _advance_clock(self) -> None:
        """Add the calls new_calls_per_second has made due since the rate was last set."""
        rate = self.config.new_calls_per_second
        if rate <= 0:
            return
        due = int((time.monotonic() - self._clock_base) * rate)
        if due > self._clock_added:
            self.data.add_calls(due - self._clock_added)
            self._clock_added = due

    def _control_state(self) -> dict[str, object]:
        self._advance_clock()
        c = self.config
        return {
            "fault_rate": c.fault_rate,
            "fault_kinds": list(c.fault_kinds),
            "latency": c.latency,
            "bandwidth": c.bandwidth,
            "url_ttl": c.url_ttl,
            "retry_after": c.retry_after,
            "stall_seconds": c.stall_seconds,
            "link_bandwidth": c.link_bandwidth,
            "max_connections": c.max_connections,
            "over_capacity": c.over_capacity,
            "new_calls_per_second": c.new_calls_per_second,
            "page_rows": c.page_rows,
            "tls": c.tls,
            "archived": sorted(self.archived()),
            "revoked": sorted(self.revoked),
            "nested_metadata": sorted(self.nested_metadata),
            "understate_sizes": dict(self.understated),
            "versions": dict(self.versions),
            "replace_after_get": sorted(self.replace_after_get),
            "added_calls": self.data.added_calls(),
            "calls": {ws.id: len(self.data.calls(ws.id)) for ws in self.data.workspaces},
        }

    def _apply_control(self, changes: dict[str, Any]) -> None:
        knobs = CONTROL_KNOBS
        unknown = sorted(set(changes) - set(knobs) - set(CONTROL_MOVES))
        if unknown:
            raise ValueError(f"unknown control keys {unknown}")
        added = self._added_calls(changes.get("add_calls", 0))
        understated = changes.get("understate_sizes", {})
        if not isinstance(understated, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in understated.values()
        ):
            raise ValueError("understate_sizes must map call SIDs to byte counts >= 0")
        moves = {
            key: list(changes.get(key, []))
            for key in CONTROL_MOVES
            if key not in ("add_calls", "understate_sizes")
        }
        replaced = moves["replace"] + moves["replace_after_get"]
        for sid in (
            moves["restore"] + moves["archive"] + moves["nest_metadata"] + replaced
            + list(understated)
        ):  # fmt: skip
            if not isinstance(sid, str) or self.data.find_recording(sid) is None:
                raise ValueError(f"no recorded call {sid!r}")
        for workspace_id in moves["revoke"] + moves["grant"]:
            if workspace_id not in self._owned:
                raise ValueError(f"no workspace {workspace_id!r}")
        previous = {name: getattr(self.config, name) for name in knobs}
        for name in knobs:
            if name in changes:
                value = changes[name]
                if name == "fault_kinds":
                    value = tuple(value.split(",") if isinstance(value, str) else value)
                setattr(self.config, name, value)
        try:
            self.config.validate()
        except ValueError:
            for name, value in previous.items():
                setattr(self.config, name, value)
            raise
        if self.config.new_calls_per_second != previous["new_calls_per_second"]:
            # The calls due at the old rate arrive; the new rate counts from now.
            rate = self.config.new_calls_per_second
            self.config.new_calls_per_second = previous["new_calls_per_second"]
            self._advance_clock()
            self.config.new_calls_per_second = rate
            self._clock_base, self._clock_added = time.monotonic(), 0
        self.link.rate = self.config.link_bandwidth
        for workspace_id, count in added.items():
            self.data.add_calls(count, workspace_id)
        self._restored.update(moves["restore"])
        self._archived.difference_update(moves["restore"])
        self._archived.update(moves["archive"])
        self._restored.difference_update(moves["archive"])
        self.revoked.difference_update(moves["grant"])
        self.revoked.update(moves["revoke"])
        if "nest_metadata" in changes:
            self.nested_metadata = set(moves["nest_metadata"])
        if "understate_sizes" in changes:
            self.understated = dict(understated)
        self.versions.update(moves["replace"])
        self.replace_after_get.update(moves["replace_after_get"])

    def _added_calls(self, value: object) -> dict[str, int]:
        """add_calls as {workspace_id: count}; ValueError for anything else."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = {ws.id: value for ws in self.data.workspaces}
        if not isinstance(value, dict):
            raise ValueError("add_calls must be an integer or an object of workspace ids")
        for workspace_id, count in value.items():
            if self.data.workspace(workspace_id) is None:
                raise ValueError(f"no workspace {workspace_id!r}")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError("add_calls counts must be integers >= 0")
        return value

    # --- API routes ---------------------------------------------------------------------------

    async def _api(self, request: Request, receive: Receive, send: Send) -> None:
        op, handler = self._route(request.segments)
        entry = self.stats.arrival(op, request.path, request.headers.get("range"))
        send = self._through_link(status_recorder(send, entry))
        try:
            token = await self.admission.enter(
                self.config.max_connections, self.config.over_capacity
            )
        except OverCapacity:
            log.debug("over capacity: 429 for %s", request.path)
            retry = [("retry-after", str(self.config.retry_after))]
            await respond_json(send, 429, {"detail": "Too many connections"}, retry)
            return
        try:
            await self._admitted(request, receive, send, op, handler)
        finally:
            self.admission.leave(token)
        log.debug("%s %s -> %s", request.method, request.path, entry["status"])

    def _through_link(self, send: Send) -> Send:
        """Every API response body passes the shared link (when link_bandwidth is set)."""

        async def paced_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                await self.link.take(len(message.get("body", b"")))
            await send(message)

        return paced_send

    async def _admitted(
        self,
        request: Request,
        receive: Receive,
        send: Send,
        op: str,
        handler: Callable[[Request, Receive, Send, str | None], Awaitable[None]] | None,
    ) -> None:
        self._advance_clock()
        try:
            if handler is None:
                raise detail(404, "Not Found")
            if request.method not in ("GET", "HEAD"):
                raise detail(405, "Method Not Allowed", [("allow", "GET, HEAD")])
            if self.config.latency > 0:
                await trio.sleep(self.config.latency)
            fault = self._roll_fault(op, request)
            if fault in ("500", "503", "429"):
                self.stats.faults[fault] += 1
                log.debug("fault %s on %s", fault, request.path)
                if fault == "429":
                    raise detail(
                        429, "Too Many Requests", [("retry-after", str(self.config.retry_after))]
                    )
                if fault == "503":
                    raise detail(503, "Service temporarily unavailable")
                raise detail(500, "Internal Server Error")
            self._authenticate(request)
            await handler(request, receive, send, fault)
        except Stop as stop:
            await respond_json(send, stop.status, stop.body, stop.headers)

    def _route(
        self, segments: list[str]
    ) -> tuple[str, Callable[[Request, Receive, Send, str | None], Awaitable[None]] | None]:
        match segments:
            case ["v1", "workspaces"]:
                return "list-workspaces", self._list_workspaces
            case ["v1", _, "calls"]:
                return "list-calls", self._list_calls
            case ["v1", _, "recordings", _, "urls"]:
                return "get-recording-urls", self._recording_urls
            case ["v1", _, "recordings", _, "metadata"]:
                return "get-recording-metadata", self._recording_metadata
            case ["v1", _, "recordings", _, "download", _]:
                return "download-recording-file", self._download
        return "unknown", None

    def _roll_fault(self, op: str, request: Request) -> str | None:
        if self.config.fault_rate <= 0 or self._fault_rng.random() >= self.config.fault_rate:
            return None
        download = op == "download-recording-file"
        candidates = [
            kind
            for kind in self.config.fault_kinds
            if kind not in BODY_FAULT_KINDS
            or (download and (kind != "ignore_range" or "range" in request.headers))
        ]
        return self._fault_rng.choice(candidates) if candidates else None

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.config.api_key.encode()
        ):
            raise detail(401, "Missing or invalid API key.", [("www-authenticate", "Bearer")])

    def _workspace(self, raw: str) -> str:
        try:
            workspace_id = str(uuid.UUID(raw))
        except ValueError:
            raise invalid(
                ["path", "workspace_id"],
                "uuid_parsing",
                "Input should be a valid UUID, unable to parse string as a UUID",
                raw,
            ) from None
        return workspace_id

    def _check_owned(self, workspace_id: str) -> None:
        if workspace_id not in self._owned or workspace_id in self.revoked:
            raise detail(403, "Insufficient permissions for this workspace.")

    async def _list_workspaces(
        self, request: Request, receive: Receive, send: Send, fault: str | None
    ) -> None:
        limit = int_param(request.query, "limit", 10, gt=0, le=100)
        start = int_param(request.query, "continuation_token", 0, ge=0)
        items: list[Any] = [ws.to_json() for ws in self.data.workspaces[start : start + limit]]
        more = start + limit < len(self.data.workspaces)
        if self.config.hostile_listing:
            items += self.data.hostile_workspace_items(items)
        await respond_json(
            send,
            200,
            {
                "items": items,
                "has_more": more,
                "continuation_token": start + limit if more else None,
                "total": len(self.data.workspaces),
            },
        )

    async def _list_calls(
        self, request: Request, receive: Receive, send: Send, fault: str | None
    ) -> None:
        workspace_id = self._workspace(request.segments[1])
        query = request.query
        limit = int_param(query, "limit", 20, ge=1, le=100)
        if self.config.page_rows is not None:
            limit = min(limit, self.config.page_rows)  # fewer rows than asked for
        offset = int_param(query, "offset", 0, ge=0)
        if query.get("continuation_token", "") != "":
            offset = int_param(query, "continuation_token", 0, ge=0)
        date_from = date_param(query, "date_from")
        date_to = date_param(query, "date_to")
        self._check_owned(workspace_id)
        calls = self.data.call_list(workspace_id)
        assert calls is not None  # owned
        first, end = _date_span(calls, date_from, date_to)
        page: list[Any]
        if query.get("direction") or query.get("status"):
            # Filters on the calls themselves: a scan, fine for the small datasets tests use.
            matching = [
                call.summary
                for call in calls[first:end]
                if query.get("direction") in (None, "", call.summary["direction"])
                and query.get("status") in (None, "", call.summary["status"])
            ]
            total = len(matching)
            page = matching[offset : offset + limit]
        else:
            total = end - first
            page = [
                call.summary for call in calls[first + offset : min(end, first + offset + limit)]
            ]
        more = offset + limit < total
        if self.config.hostile_listing:
            page += self.data.hostile_call_items(page)
        await respond_json(
            send,
            200,
            {
                "items": page,
                "total": total,
                "has_more": more,
                "continuation_token": offset + limit if more else None,
            },
        )

    def _recording_checks(self, request: Request) -> tuple[str, str]:
        """Workspace, configuration, call and archive checks shared by the recording routes."""
        workspace_id = self._workspace(request.segments[1])
        self._check_owned(workspace_id)
        call_sid = request.segments[3]
        if len(request.segments) == 6:
            filename = request.segments[5]
            if not _FILENAME.fullmatch(filename) or ".." in filename:
                raise detail(400, "Invalid filename")
        workspace = self.data.workspace(workspace_id)
        if workspace is None or not workspace.recording_configured:
            raise detail(503, "Call recording not configured for this workspace")
        recording = self.data.recording(workspace_id, call_sid)
        if recording is None:
            raise detail(404, "Recording not found")
        if self._is_archived(recording):
            eta = datetime.now(UTC) + ARCHIVE_RESTORE
            raise Stop(
                202,
                {
                    "call_sid": call_sid,
                    "status": "archived",
                    "tier": ARCHIVE_TIER,
                    "restore_eta": eta.isoformat(timespec="seconds").replace("+00:00", "Z"),
                },
                [("retry-after", str(int(ARCHIVE_RESTORE.total_seconds())))],
            )
        return workspace_id, call_sid

    async def _recording_urls(
        self, request: Request, receive: Receive, send: Send, fault: str | None
    ) -> None:
        workspace_id, call_sid = self._recording_checks(request)
        recording = self.data.recording(workspace_id, call_sid)
        assert recording is not None
        evil = self.data.download_links(
            workspace_id, call_sid, request.headers.get("host", "127.0.0.1")
        )
        if evil is not None:
            inbound, outbound, metadata = evil
        else:
            inbound, outbound, metadata = (
                self._download_link(workspace_id, call_sid, name) for name in recording.filenames
            )
        await respond_json(
            send,
            200,
            {
                "call_sid": call_sid,
                "status": "available",
                "inbound_url": inbound,
                "outbound_url": outbound,
                "metadata_url": metadata,
            },
        )

    def _download_link(self, workspace_id: str, call_sid: str, filename: str) -> str:
        path = f"/v1/{workspace_id}/recordings/{quote(call_sid)}/download/{filename}"
        if self.config.url_ttl is None:
            return path
        expires = math.ceil(time.time() + self.config.url_ttl)
        return f"{path}?expires={expires}&sig={self._signature(path, expires)}"

    def _signature(self, path: str, expires: int) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._link_secret, message, hashlib.sha256).hexdigest()[:32]

    def _check_link(self, request: Request) -> None:
        """Download links expire only while url_ttl is set; then a valid, fresh one is needed."""
        if self.config.url_ttl is None:
            return
        try:
            expires = int(request.query.get("expires", ""))
        except ValueError:
            expires = 0
        signature = request.query.get("sig", "")
        valid = hmac.compare_digest(signature, self._signature(request.path, expires))
        if not valid or time.time() > expires:
            raise detail(403, "Download link expired or invalid; fetch the recording URLs again")

    async def _recording_metadata(
        self, request: Request, receive: Receive, send: Send, fault: str | None
    ) -> None:
        workspace_id, call_sid = self._recording_checks(request)
        recording = self.data.recording(workspace_id, call_sid)
        assert recording is not None
        if call_sid in self.nested_metadata:
            body = b"[" * NESTED_DEPTH + b"]" * NESTED_DEPTH
            await respond(send, 200, body, "application/json")
            return
        by = self.understated.get(call_sid)
        if by is not None:
            metadata = dict(recording.metadata)
            for name in ("inbound_size_bytes", "outbound_size_bytes"):
                metadata[name] = max(0, int(str(metadata[name])) - by)
            await respond(send, 200, metadata_document(metadata), "application/json")
            return
        await respond(send, 200, recording.metadata_bytes, "application/json")

    async def _download(
        self, request: Request, receive: Receive, send: Send, fault: str | None
    ) -> None:
        workspace_id, call_sid = self._recording_checks(request)
        filename = request.segments[5]
        self._check_link(request)
        try:
            obj = self.data.open(workspace_id, call_sid, filename)
        except FileNotFoundError:
            raise detail(404, "Recording file not found") from None
        audio = filename != METADATA_FILENAME
        version = self.versions[call_sid] if audio else 0
        if version:
            obj = faults.ReplacedObject(obj, version)
        size = obj.size
        etag = hashlib.blake2b(f"{request.path}:{version}".encode(), digest_size=8).hexdigest()
        modified = formatdate(REPLACED_EPOCH + 60 * version, usegmt=True)
        headers = [
            ("accept-ranges", "bytes"),
            ("etag", f'"{etag}"'),
            ("last-modified", modified),
        ]
        matches = request.headers.get("if-none-match", "")
        if f'"{etag}"' in (tag.strip() for tag in matches.split(",")):
            # Still the version the client has: no body (RFC 9110 If-None-Match).
            await send(
                {"type": "http.response.start", "status": 304, "headers": encode_headers(headers)}
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        span = parse_range(request.headers.get("range"), size)
        if span is not None and fault == "ignore_range":
            self.stats.faults[fault] += 1
            log.debug("fault ignore_range on %s", request.path)
            span = None
        if_range = request.headers.get("if-range")
        if span is not None and if_range is not None and if_range not in (f'"{etag}"', modified):
            span = None  # RFC 9110: the object changed, so the whole of it, with 200
        framing = self.config.download_framing
        if span is not None and framing == "chunked":
            span = None
        if isinstance(span, str):
            raise detail(416, "Range Not Satisfiable", [("content-range", f"bytes */{size}")])
        if span is None:
            status, start, end = 200, 0, size
        else:
            status = 206
            start, end = span
            total = "*" if framing == "unknown_total" else str(size)
            headers.append(("content-range", f"bytes {start}-{end - 1}/{total}"))
        headers.append(("content-type", obj.content_type))
        if framing != "chunked":
            headers.append(("content-length", str(end - start)))
        if audio and call_sid in self.replace_after_get and request.headers.get("range"):
            # Served as it is; replaced for every request after this one.
            self.replace_after_get.discard(call_sid)
            self.versions[call_sid] += 1
        await send(
            {"type": "http.response.start", "status": status, "headers": encode_headers(headers)}
        )
        if request.method == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body_fault = fault if fault in ("drop", "stall") else None
        limit = self.data.body_limit(workspace_id, call_sid, filename)
        await self._stream(
            receive, send, obj, start, end, request.path, filename, body_fault, limit
        )

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        obj: StoredObject,
        start: int,
        end: int,
        path: str,
        filename: str,
        fault: str | None,
        limit: int | None = None,
    ) -> None:
        """Send bytes [start, end) in chunks, paced and faulted as configured; a body stops
        short (the connection closes) at offset ``limit`` of the object when that is set.

        hypercorn's send() silently discards data once the client is gone, so a task watches
        for http.disconnect and cancels the loop; otherwise a client that stops reading early
        would make us generate (and count) the whole file.
        """
        audio = filename != METADATA_FILENAME
        cut = None
        if fault is not None:
            cut = self._fault_rng.randint(0, max(0, min(end - start - 1, FAULT_CUT_MAX)))
            self.stats.faults[fault] += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope)
            bandwidth = self.config.bandwidth
            chunk_bytes = SharedLink.chunk_bytes(self.config.link_bandwidth, CHUNK_BYTES)
            if bandwidth is not None:
                # About ten chunks a second keeps the pacing smooth.
                chunk_bytes = min(chunk_bytes, max(4096, bandwidth // 10))
            began = trio.current_time()
            position = start
            while position < end:
                if limit is not None and position >= limit:
                    log.debug("cut_short %s at %d of %d bytes", path, position, obj.size)
                    self.stats.faults["cut_short"] += 1
                    nursery.cancel_scope.cancel()
                    return
                stop = min(end, position + chunk_bytes)
                if limit is not None:
                    stop = min(stop, limit)
                if cut is not None:
                    if position - start == cut:
                        if fault == "drop":
                            log.debug("fault drop on %s after %d bytes", path, cut)
                            # Returning without the final body message makes hypercorn close
                            # the connection: the client sees a short body.
                            nursery.cancel_scope.cancel()
                            return
                        log.debug("fault stall on %s after %d bytes", path, cut)
                        await trio.sleep(self.config.stall_seconds)
                        cut = None
                        continue
                    stop = min(stop, start + cut)
                chunk = obj.read(position, stop)
                if bandwidth is not None:
                    await trio.sleep_until(began + (position - start) / bandwidth)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                position = stop
                self.stats.download_bytes[path] += len(chunk)
                if audio:
                    self.stats.audio_bytes += len(chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


def _date_span(calls: CallList, date_from: date | None, date_to: date | None) -> tuple[int, int]:
    """The positions [first, end) of the calls started within [date_from, date_to] (UTC dates,
    inclusive): two binary searches, as start times only decrease along the list."""
    first, end = 0, len(calls)
    if date_to is not None and date_to < date.max:
        first = calls.first_before(_midnight(date_to + timedelta(days=1)))
    if date_from is not None:
        end = calls.first_before(_midnight(date_from))
    return first, max(first, end)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
