"""The ASGI plumbing of the emulator's app: the message types, reading a request (`Request`,
its body, its query parameters and Range header, checked as the platform's FastAPI checks
them: 422 documents alike), and sending an answer (`respond`, `respond_json`; `Stop` is an
error answer raised by a check)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, unquote

import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Stop(Exception):
    """An error answer; raised by checks so each handler reads as its happy path."""

    def __init__(self, status: int, body: object, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = list(headers)


def detail(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Stop:
    return Stop(status, {"detail": message}, headers)


def invalid(loc: list[str | int], kind: str, msg: str, value: str, **ctx: object) -> Stop:
    error: dict[str, object] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        error["ctx"] = ctx
    return Stop(422, {"detail": [error]})


def json_bytes(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(slots=True)
class Request:
    method: str
    path: str
    segments: list[str]
    query: dict[str, str]
    headers: dict[str, str]

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        # Split before unquoting so an encoded slash stays inside its segment.
        segments = [unquote(part) for part in path.strip("/").split("/")]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        return cls(scope["method"], path, segments, query, headers)


async def cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def status_recorder(send: Send, entry: dict[str, object]) -> Send:
    async def recording_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            entry["status"] = message["status"]
        await send(message)

    return recording_send


def encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    all_headers = [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        *headers,
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": encode_headers(all_headers)}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def respond_json(
    send: Send, status: int, body: object, headers: Iterable[tuple[str, str]] = ()
) -> None:
    await respond(send, status, json_bytes(body), "application/json", headers)


def int_param(
    query: dict[str, str],
    name: str,
    default: int,
    *,
    ge: int | None = None,
    gt: int | None = None,
    le: int | None = None,
) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    loc: list[str | int] = ["query", name]
    try:
        value = int(raw.strip())
    except ValueError:
        raise invalid(
            loc,
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
            raw,
        ) from None
    if ge is not None and value < ge:
        raise invalid(
            loc, "greater_than_equal", f"Input should be greater than or equal to {ge}", raw, ge=ge
        )
    if gt is not None and value <= gt:
        raise invalid(loc, "greater_than", f"Input should be greater than {gt}", raw, gt=gt)
    if le is not None and value > le:
        raise invalid(
            loc, "less_than_equal", f"Input should be less than or equal to {le}", raw, le=le
        )
    return value


def date_param(query: dict[str, str], name: str) -> date | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        if len(raw) != 10:  # YYYY-MM-DD, and no other form fromisoformat takes
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise invalid(
            ["query", name],
            "date_from_datetime_parsing",
            "Input should be a valid date or datetime, expected YYYY-MM-DD",
            raw,
        ) from None


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """Half-open (start, end) for a single satisfiable range, "unsatisfiable", or None for
    no Range (or one we ignore, as RFC 9110 allows: malformed or multiple ranges)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    end = size if last == "" else min(size, int(last) + 1)
    return start, end
