"""Reading an answer's body with a cap on the bytes it decodes to, enforced while it streams.

httpx's own decoding has no bound: one network read of a gzip bomb (1 MiB on the wire)
inflates to 1 GiB in a single call, and `aread()` holds the whole body before anyone can look
at its size. Here a body is read from `aiter_raw()` and inflated with zlib's `max_length`, so
no step holds more than the cap and one read; past the cap the answer is a ProtocolError.

JSON answers may come gzip- or deflate-compressed (what ACCEPT_ENCODING asks for, as that is
what `Decoder` undoes); downloads ask for identity and refuse anything else (`refuse_encoded`),
as their bytes are the stored file's.
"""

from __future__ import annotations

import json
import zlib

import httpx

from amigofs.api.errors import ProtocolError

ACCEPT_ENCODING = "gzip, deflate"
IDENTITY = "identity"
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def size_text(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"


def content_encoding(resp: httpx.Response) -> str:
    # "identity" and no header at all mean the same; case and spaces do not matter.
    return resp.headers.get("content-encoding", IDENTITY).strip().lower() or IDENTITY


class Decoder:
    """Undoes one Content-Encoding (identity, gzip or deflate), at most `room + 1` bytes of
    output per `feed`: enough to tell that a body went past its cap, never more."""

    def __init__(self, encoding: str, what: str) -> None:
        self._what = what
        self._encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self._zlib: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
        elif encoding == IDENTITY:
            self._zlib = None
        else:
            raise ProtocolError(f"{what}: unsupported Content-Encoding {encoding[:40]!r}")
        self._started = False

    def feed(self, data: bytes, room: int) -> bytes:
        if self._zlib is None or not data:
            return data[: room + 1]
        if self._zlib.eof:
            # Another gzip member, or garbage: zlib would keep all of it in unused_data.
            raise ProtocolError(f"{self._what}: bytes after the end of the {self._encoding} body")
        try:
            out = self._zlib.decompress(data, room + 1)
        except zlib.error:
            if self._started or self._encoding != "deflate":
                raise ProtocolError(
                    f"{self._what}: the body is not valid {self._encoding}"
                ) from None
            # "deflate" is the zlib format (RFC 9110), but some servers send raw deflate.
            self._zlib, self._started = zlib.decompressobj(-zlib.MAX_WBITS), True
            return self.feed(data, room)
        self._started = True
        if self._zlib.unused_data:
            raise ProtocolError(f"{self._what}: bytes after the end of the {self._encoding} body")
        return out


async def read_capped(resp: httpx.Response, cap: int, what: str) -> bytearray:
    """The whole body, decoded; a ProtocolError once it passes `cap` bytes (then the rest is
    never read: closing the response drops the connection)."""
    body, complete = await _read(resp, cap, what)
    if not complete:
        raise ProtocolError(f"{what}: the answer is larger than {size_text(cap)}")
    return body


async def read_prefix(resp: httpx.Response, cap: int) -> bytes | None:
    """At most `cap` bytes of the body (an error answer's: what is past them is never read),
    or None if it cannot be decoded."""
    try:
        body, complete = await _read(resp, cap, "error answer")
    except ProtocolError:
        return None
    return bytes(body) if complete else None


async def _read(resp: httpx.Response, cap: int, what: str) -> tuple[bytearray, bool]:
    encoding = content_encoding(resp)
    decoder = Decoder(encoding, what)
    length = resp.headers.get("content-length", "").strip()
    if encoding == IDENTITY and length.isdigit() and int(length) > cap:
        return bytearray(), False  # known too large before a byte is read
    body = bytearray()
    async for chunk in resp.aiter_raw():
        body += decoder.feed(chunk, cap - len(body))
        if len(body) > cap:
            return body, False
    return body, True


def parse_json(body: bytes | bytearray, what: str) -> object:
    try:
        return json.loads(body)
    except RecursionError:
        # The API's documents are three levels deep; a parser's stack is not for a server
        # to exhaust (an uncaught RecursionError ends the task, or the mount, it runs in).
        raise ProtocolError(f"{what}: the answer is nested too deeply") from None
    except ValueError:  # also UnicodeDecodeError
        raise ProtocolError(f"{what}: the answer is not JSON") from None


def refuse_encoded(resp: httpx.Response, what: str) -> None:
    """A download's bytes are the stored file's: a compressed answer (which it did not ask
    for) would be cached and served as the file."""
    encoding = content_encoding(resp)
    if encoding != IDENTITY:
        raise ProtocolError(
            f"{what}: the server sent it with Content-Encoding {encoding[:40]!r}, not as stored"
        )
