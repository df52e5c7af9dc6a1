"""A small hostile Platform API server on loopback, for tests.

    with HostileServer() as server:
        server.misbehave("metadata", gzip_bomb(status=503), call=server.calls[0])
        with mounted(server.url, server.api_key) as mnt:
            ...

It serves one workspace of a few calls well enough to mount: list-workspaces, list-calls,
recording urls, metadata, and downloads (with Range) of each call's inbound.wav, outbound.wav
and metadata.json. Requests of one kind ("workspaces", "calls", "urls", "metadata", "inbound",
"outbound", "metadata.json"), of every call or of one, are answered the way the test chose: a
gzip bomb (also on an error status), a body that never ends, JSON nested 100,000 deep, a
compressed download, fields with terminal escapes, a redirect elsewhere, a Content-Length
that lies, a body trickling in a byte at a time. Nothing is mocked on the client's side: the
mount talks HTTP/1.1 to a real socket.

A threaded `http.server` in the test's own process, so a test can change the behaviour while a
mount runs; what it served is counted per kind (`served`, `misbehaved`) and the headers of
every request are kept (`requests`).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import json
import random
import re
import ssl
import subprocess
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amigofs.fs.wav import wav_header

API_KEY = "hostile-test-key"
WORKSPACE_ID = "ws-hostile-0001"
MiB = 1 << 20
# Bombs inflate to this: a hundred times any cap of the client's, several times the RSS a test
# allows, and not so large that a client without caps takes the machine down.
BOMB_BYTES = 512 * MiB
# A body "without end" stops here all the same, so that a client without caps runs out of
# patience (its deadline) long before the machine runs out of memory.
ENDLESS_SAFETY = 1024 * MiB
KINDS = ("workspaces", "calls", "urls", "metadata", "inbound", "outbound", "metadata.json")
_DOWNLOAD_KIND = {"inbound.wav": "inbound", "outbound.wav": "outbound"}
_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class Call:
    call_sid: str
    inbound: bytes
    outbound: bytes
    metadata: dict[str, Any]
    padding: int = 0  # spaces after the JSON of metadata.json: a large but valid file

    @property
    def metadata_file(self) -> bytes:
        return json.dumps(self.metadata, indent=2).encode() + b"\n" + b" " * self.padding

    def stored(self, filename: str) -> bytes:
        if filename == "metadata.json":
            return self.metadata_file
        return self.inbound if filename == "inbound.wav" else self.outbound


@dataclass
class Answer:
    """What a well-behaved server would send; a misbehaviour sends something else."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


# A misbehaviour writes the whole response itself, given the handler and the good answer.
Misbehaviour = Callable[["_Handler", Answer], None]


def make_calls(count: int, seed: int = 7) -> list[Call]:
    rng = random.Random(seed)
    calls = []
    for i in range(count):
        sid = f"CA{rng.getrandbits(128):032x}"
        # Noise, as recorded audio is: it does not compress, so a gzip of it is longer.
        inbound = wav_header(7, 8, 8000, 64 * 1024) + rng.randbytes(64 * 1024)
        outbound = wav_header(1, 16, 16000, 128 * 1024) + rng.randbytes(128 * 1024)
        start = f"2025-03-0{1 + i % 9}T10:00:00.000+00:00"
        metadata = {
            "call_sid": sid,
            "workspace_id": WORKSPACE_ID,
            "direction": "inbound",
            "duration_seconds": 8.0,
            "inbound_format": "mulaw",
            "inbound_sample_rate": 8000,
            "outbound_format": "pcm16",
            "outbound_sample_rate": 16000,
            "tts_provider": "elevenlabs",
            "call_start_iso": start,
            "call_end_iso": start.replace("10:00:00", "10:00:08"),
            "inbound_size_bytes": len(inbound),
            "outbound_size_bytes": len(outbound),
            "media_start_epoch_ms": 1740823200123,
        }
        calls.append(Call(sid, inbound, outbound, metadata))
    return calls


# --- misbehaviours ------------------------------------------------------------------


@functools.cache
def _gzip_padded(prefix: bytes, size: int) -> bytes:
    """gzip of `prefix` and then spaces up to `size` bytes (JSON allows them after a value)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(prefix)]
    spaces = b" " * MiB
    for _ in range((size - len(prefix)) // MiB):
        parts.append(packer.compress(spaces))
    parts.append(packer.flush())
    return b"".join(parts)


def gzip_bomb(status: int | None = None, size: int = BOMB_BYTES) -> Misbehaviour:
    """The good body (or, for an error status, a JSON error) padded with spaces to `size`
    bytes, gzip-compressed: about 1/1000 of that on the wire."""

    def send(handler: _Handler, answer: Answer) -> None:
        code = answer.status if status is None else status
        prefix = answer.body if status is None else b'{"detail": "service overloaded"}'
        handler.send_bytes(
            code,
            _gzip_padded(prefix, size),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    return send


def endless() -> Misbehaviour:
    """The good answer's status and start, then spaces in chunks that never end (up to
    ENDLESS_SAFETY, then the connection is dropped)."""

    def send(handler: _Handler, answer: Answer) -> None:
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.close_connection = True
        chunk = b" " * (256 * 1024)
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(answer.body), answer.body))
        for _ in range(ENDLESS_SAFETY // len(chunk)):
            handler.wfile.write(framed)

    return send


def nested(depth: int = 100_000) -> Misbehaviour:
    """JSON arrays nested `depth` deep: valid JSON, and a recursion bomb for a parser."""

    def send(handler: _Handler, answer: Answer) -> None:
        handler.send_bytes(200, b"[" * depth + b"]" * depth, {"Content-Type": "application/json"})

    return send


def compressed(encoding: str = "gzip") -> Misbehaviour:
    """The whole good body (a download: the whole file, whatever Range asked), compressed,
    with Content-Encoding saying so, chunked (no Content-Length to give it away)."""

    def send(handler: _Handler, answer: Answer) -> None:
        # "deflate" in HTTP is the zlib format (RFC 9110), which zlib.compress makes.
        body = gzip.compress(answer.body) if encoding == "gzip" else zlib.compress(answer.body)
        handler.send_response(200)
        handler.send_header("Content-Encoding", encoding)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    return send


def redirect(location: str, status: int = 302) -> Misbehaviour:
    """A redirect to `location` (another host, say) instead of the answer."""

    def send(handler: _Handler, answer: Answer) -> None:
        handler.send_bytes(status, b"", {"Location": location})

    return send


def lying_length(extra: int = 1000) -> Misbehaviour:
    """The good answer (of a download, the range asked for) with a Content-Length `extra`
    bytes more than it sends before it drops the connection."""

    def send(handler: _Handler, answer: Answer) -> None:
        handler.send_answer(answer, extra_length=extra)
        handler.close_connection = True

    return send


def trickle(interval: float) -> Misbehaviour:
    """The good answer one byte every `interval` seconds: never silent long enough for a
    read timeout (slowloris)."""

    def send(handler: _Handler, answer: Answer) -> None:
        handler.send_response(answer.status)
        handler.send_header("Content-Length", str(len(answer.body)))
        handler.end_headers()
        for i in range(len(answer.body)):
            handler.wfile.write(answer.body[i : i + 1])
            time.sleep(interval)  # the misbehaviour itself, not a test's synchronisation

    return send


def with_fields(**fields: object) -> Misbehaviour:
    """The good JSON answer with `fields` replaced; in a listing, in every item."""

    def send(handler: _Handler, answer: Answer) -> None:
        document = json.loads(answer.body)
        for target in document.get("items", [document]):
            target.update(fields)
        handler.send_bytes(
            answer.status, json.dumps(document).encode(), {"Content-Type": "application/json"}
        )

    return send


# --- the server ------------------------------------------------------------------------


class HostileServer:
    """The server, its data, and the misbehaviours chosen for it; a context manager."""

    def __init__(self, calls: int = 4, *, tls: ssl.SSLContext | None = None) -> None:
        self.api_key = API_KEY
        self.workspace_id = WORKSPACE_ID
        self.calls = make_calls(calls)
        self.served: Counter[str] = Counter()
        self.misbehaved: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # kind, path, headers
        self._lock = threading.Lock()
        self._misbehaviours: dict[tuple[str, str | None], Misbehaviour] = {}
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hostile = self  # type: ignore[attr-defined]
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        # shutdown() waits for the serving loop's next poll: 0.5 s by default, per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def misbehave(self, kind: str, how: Misbehaviour, *, call: Call | None = None) -> None:
        """From now on, answer requests of `kind` (of `call`, or of every call) with `how`."""
        if kind not in KINDS:
            raise ValueError(f"not a kind of request: {kind!r}")
        with self._lock:
            self._misbehaviours[(kind, call.call_sid if call else None)] = how

    def behave(self) -> None:
        """Answer everything well again."""
        with self._lock:
            self._misbehaviours.clear()

    def headers_of(self, kind: str) -> list[dict[str, str]]:
        with self._lock:
            return [headers for k, _, headers in self.requests if k == kind]

    def _choose(self, kind: str, call_sid: str | None) -> Misbehaviour | None:
        with self._lock:
            self.served[kind] += 1
            how = self._misbehaviours.get((kind, call_sid)) or self._misbehaviours.get((kind, None))
            if how is not None:
                self.misbehaved[kind] += 1
            return how

    def answer(self, path: str, query: dict[str, str]) -> tuple[str, str | None, Answer]:
        """The kind of request, its call and the good answer to it."""
        parts = path.strip("/").split("/")
        by_sid = {c.call_sid: c for c in self.calls}
        if parts == ["v1", "workspaces"]:
            items = [{"id": self.workspace_id, "slug": "hostile", "name": "Hostile"}]
            return "workspaces", None, _json(200, {"items": items, "has_more": False})
        if parts == ["v1", self.workspace_id, "calls"]:
            start = int(query.get("continuation_token") or query.get("offset") or 0)
            limit = int(query.get("limit") or 100)
            page = self.calls[start : start + limit]
            items = [
                {
                    "call_sid": c.call_sid,
                    "has_recording": True,
                    "direction": c.metadata["direction"],
                    "started_at": c.metadata["call_start_iso"],
                    "duration_seconds": c.metadata["duration_seconds"],
                }
                for c in page
            ]
            more = start + limit < len(self.calls)
            document: dict[str, Any] = {"items": items, "has_more": more}
            if more:
                document["continuation_token"] = start + limit
            return "calls", None, _json(200, document)
        if len(parts) >= 5 and parts[:2] == ["v1", self.workspace_id] and parts[2] == "recordings":
            call = by_sid.get(parts[3])
            if call is None:
                return "unknown", None, _json(404, {"detail": "recording not found"})
            base = f"/v1/{self.workspace_id}/recordings/{call.call_sid}/download/"
            if parts[4:] == ["urls"]:
                urls = {
                    "call_sid": call.call_sid,
                    "status": "available",
                    "inbound_url": base + "inbound.wav",
                    "outbound_url": base + "outbound.wav",
                    "metadata_url": base + "metadata.json",
                }
                return "urls", call.call_sid, _json(200, urls)
            if parts[4:] == ["metadata"]:
                # The platform serves the same document as metadata.json.
                answer = Answer(200, call.metadata_file, {"Content-Type": "application/json"})
                return "metadata", call.call_sid, answer
            if len(parts) == 6 and parts[4] == "download":
                filename = parts[5]
                kind = _DOWNLOAD_KIND.get(filename, filename)
                if kind not in KINDS:
                    return "unknown", None, _json(400, {"detail": "invalid filename"})
                return kind, call.call_sid, Answer(200, call.stored(filename))
        return "unknown", None, _json(404, {"detail": "not found"})


def _json(status: int, document: object) -> Answer:
    return Answer(status, json.dumps(document).encode(), {"Content-Type": "application/json"})


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a test's output is not the place for an access log

    def do_GET(self) -> None:
        hostile: HostileServer = self.server.hostile
        path, _, query_text = self.path.partition("?")
        query = dict(p.partition("=")[::2] for p in query_text.split("&") if p)
        kind, call_sid, answer = hostile.answer(path, query)
        with hostile._lock:
            hostile.requests.append((kind, path, {k.lower(): v for k, v in self.headers.items()}))
        if self.headers.get("Authorization") != f"Bearer {hostile.api_key}":
            self.send_bytes(401, b'{"detail": "invalid key"}', {"Content-Type": "application/json"})
            return
        how = hostile._choose(kind, call_sid)
        try:
            if how is not None:
                how(self, answer)
            else:
                self.send_answer(answer)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            # The client gave up on the body: the point of most misbehaviours.
            self.close_connection = True

    def send_answer(self, answer: Answer, *, extra_length: int = 0) -> None:
        body, status, headers = answer.body, answer.status, dict(answer.headers)
        wanted = _RANGE_RE.fullmatch(self.headers.get("Range", "").strip())
        if status == 200 and wanted is not None:
            first = int(wanted[1])
            last = min(int(wanted[2]) if wanted[2] else len(body) - 1, len(body) - 1)
            if first > last:
                self.send_bytes(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
            body, status = body[first : last + 1], 206
        self.send_bytes(status, body, headers, extra_length=extra_length)

    def send_bytes(
        self, status: int, body: bytes, headers: dict[str, str], *, extra_length: int = 0
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) + extra_length))
        self.end_headers()
        self.wfile.write(body)


# --- what a test measures ------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def children_running(pid: int, module: str) -> list[int]:
    """The pids of `pid`'s children that run `python -m module`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if ppid == pid and module.encode() in argv:
                found.append(int(entry.name))
    return found


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for 127.0.0.1 (made by the
    openssl tool), and the certificate's path, for a client that is told to trust it."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert
