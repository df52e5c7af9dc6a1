"""Ranged downloads: one GET for a byte range of a stored file (`fetch_range`), and the
checks that its answer is that range of a file of the size the metadata gives
(`check_content_range`, `check_whole_length`, `check_end`). A body cut short raises
ResumableShort with what arrived, so the next try asks only for the rest
(retries.retrying).

The server's length is the truth: an answer that shows the file is longer or shorter
than the metadata says is a SizeMismatch, never data cut or padded to the metadata's
size. Where an answer does not say the file's length (a 206 with `Content-Range:
bytes a-b/*`) and its range ends where the metadata says the file ends, the range's
`Fetched.end_unconfirmed` tells the caller to ask the server for the byte past that
end (`check_end`): only such servers pay that request. A 200 without Content-Length
(chunked) that holds the metadata's end is read to its end instead.

One version per download: each answer's validator (ETag, else Last-Modified) is
checked against the `Version` the download is of, which the first answer sets when
the caller does not know it; a ranged GET of a known version carries `If-Range`, so a
server that keeps it answers a replaced file with a 200 of the new one. An answer of
another version is VersionChanged, before a byte of it is kept.

A download goes into a buffer of the range's size, or into a `Sink` that takes the
body's bytes in order as they arrive (the fetch worker's: it stores each block as it
fills, so a job touches one block's worth of memory, not the whole range's).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import httpx

from amigofs.api import body, errors
from amigofs.api.models import DownloadPath
from amigofs.api.retries import ResumableShort
from amigofs.api.stats import ClientStats

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_CONTENT_RANGE_UNSATISFIED = re.compile(r"bytes \*/(\d+)")

# A GET of the download path with these headers, its status checked; httpx's transport
# errors come out as errors.TransportError (PlatformClient._get).
Get = Callable[[dict[str, str]], AbstractAsyncContextManager[httpx.Response]]


class Sink(Protocol):
    """Where a download's bytes go, in order, as they arrive: `len` is how many it
    still wants (less each time it `take`s some), which is what a resumed download
    asks for."""

    def __len__(self) -> int: ...

    def take(self, chunk: bytes | memoryview) -> None: ...


class Filling:
    """A buffer as a Sink: filled from its start."""

    __slots__ = ("_at", "_buf")

    def __init__(self, buf: memoryview) -> None:
        self._buf = buf
        self._at = 0

    def __len__(self) -> int:
        return len(self._buf) - self._at

    def take(self, chunk: bytes | memoryview) -> None:
        at = self._at
        self._buf[at : at + len(chunk)] = chunk
        self._at = at + len(chunk)


@dataclass(slots=True)
class Version:
    """Which version of a stored file a download is of: `validator` (the ETag, else the
    Last-Modified date; None: the server sends neither) once `known`, from the caller
    or from the first answer."""

    validator: str | None = None
    known: bool = False


def validator_of(resp: httpx.Response) -> str | None:
    """An answer's validator: its ETag, else its Last-Modified date, else None."""
    value = resp.headers.get("etag") or resp.headers.get("last-modified")
    return value.strip() if value else None


def if_range(version: Version) -> dict[str, str]:
    """The If-Range header for a ranged GET of `version`: a strong ETag or a date (RFC
    9110 allows no weak ETag there); none where the version is unknown or has none."""
    value = version.validator
    if not version.known or value is None or value.startswith("W/"):
        return {}
    return {"If-Range": value}


def check_version(path: DownloadPath, resp: httpx.Response, version: Version) -> None:
    """The answer is of `version`, which it sets if not known yet; VersionChanged if not."""
    found = validator_of(resp)
    if not version.known:
        version.validator, version.known = found, True
    elif found != version.validator:
        raise errors.VersionChanged(
            f"download {path.filename}: the file was replaced on the server "
            f"(validator {version.validator} is now {found})",
            validator=found,
        )


@dataclass(slots=True, frozen=True)
class Fetched:
    """What one GET of a range delivered: `got` bytes; `end_unconfirmed`: the range ends
    at the metadata's end of the file and the answer did not show that the file ends
    there (`check_end` asks)."""

    got: int
    end_unconfirmed: bool = False


def mismatch(path: DownloadPath, found: str, total: int) -> errors.SizeMismatch:
    return errors.SizeMismatch(
        f"download {path.filename}: stored file has {found} bytes, metadata says {total}"
    )


async def fetch_range(
    get: Get,
    path: DownloadPath,
    start: int,
    into: memoryview | Sink,
    total: int | None,
    progress: Callable[[int], None],
    stats: ClientStats,
    version: Version,
) -> Fetched:
    """One GET for bytes [start, start+len(into)) of `version`; says how many it put
    into `into` (a buffer, filled from its start, or a Sink).

    Raises ResumableShort for a body cut short, after recording what arrived,
    SizeMismatch for an answer that shows the file's length is not `total`, and
    VersionChanged for one of another version.
    """
    want = len(into)
    take = Filling(into).take if isinstance(into, memoryview) else into.take
    at_end = total is not None and start + want == total
    headers = {
        "Range": f"bytes={start}-{start + want - 1}",
        "Accept-Encoding": body.IDENTITY,
        **if_range(version),
    }
    got = 0
    seen = 0  # bytes of the body so far (a 200's from the file's start)
    to_the_end = False  # a 200 without Content-Length holding the end: read it all
    end_unconfirmed = False
    try:
        async with get(headers) as resp:
            body.refuse_encoded(resp, f"download {path.filename}")
            if resp.status_code in (200, 206):
                check_version(path, resp, version)
            if resp.status_code == 206:
                said = check_content_range(path, resp, start, want, total)
                end_unconfirmed = at_end and not said
                skip = 0
            elif resp.status_code == 200:
                # A proxy ignored Range and sends the whole file: skip to the
                # wanted bytes and stop reading once they are in, unless the file's
                # length is only known from where its body ends.
                to_the_end = at_end and not check_whole_length(path, resp, total)
                skip = start
            else:
                raise errors.ProtocolError(
                    f"download {path.filename}: unexpected HTTP {resp.status_code}"
                )
            async for chunk in resp.aiter_raw():
                seen += len(chunk)
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk = chunk[skip:]
                    skip = 0
                room = want - got
                if len(chunk) > room:
                    if resp.status_code == 206:
                        raise errors.ProtocolError(
                            f"download {path.filename}: more bytes than Content-Range says"
                        )
                    if to_the_end:
                        assert total is not None
                        raise mismatch(path, f"more than {total}", total)
                    chunk = chunk[:room]
                take(chunk)
                got += len(chunk)
                stats.bytes_received += len(chunk)
                progress(got)
                if got == want and resp.status_code == 200 and not to_the_end:
                    break
            if resp.status_code == 200 and got < want and "content-length" not in resp.headers:
                # A body without Content-Length ended cleanly: the file ends here.
                assert total is not None  # a range past the metadata's end is never asked
                raise mismatch(path, str(seen), total)
    except errors.TransportError as exc:
        if got == want:
            # All wanted bytes arrived; the rest of a 200 body does not matter, unless
            # it was to show where the file ends.
            return Fetched(got, end_unconfirmed=to_the_end)
        raise ResumableShort(got, exc) from None
    if got < want:
        raise ResumableShort(
            got, errors.TransportError(f"download {path.filename}: body ended early")
        )
    return Fetched(got, end_unconfirmed)


def check_content_range(
    path: DownloadPath, resp: httpx.Response, start: int, want: int, total: int | None
) -> bool:
    """A 206 is bytes [start, start+want) of a file of `total` bytes, as its headers say;
    returns whether they say the file's length (not "*")."""
    header = resp.headers.get("content-range", "")
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        raise errors.ProtocolError(f"download {path.filename}: 206 without a valid Content-Range")
    first, last, size = int(match[1]), int(match[2]), match[3]
    if total is not None and size != "*" and int(size) != total:
        raise mismatch(path, size, total)
    if (first, last) != (start, start + want - 1):
        raise errors.ProtocolError(
            f"download {path.filename}: asked for bytes {start}-{start + want - 1}, got {first}-{last}"
        )
    length = resp.headers.get("content-length")
    if length is not None and length.strip() != str(want):
        raise errors.ProtocolError(
            f"download {path.filename}: Content-Length disagrees with Content-Range"
        )
    return size != "*"


def check_whole_length(path: DownloadPath, resp: httpx.Response, total: int | None) -> bool:
    """A 200 (Range ignored) holds a file of `total` bytes, if its Content-Length says;
    returns whether it says (if not, where the body ends tells)."""
    length = resp.headers.get("content-length")
    if length is None:
        return False
    if total is not None and length.strip() != str(total):
        raise mismatch(path, length.strip(), total)
    return True


async def check_end(get: Get, path: DownloadPath, total: int, stats: ClientStats) -> None:
    """Asks for the byte just past the metadata's end of the file: a file that ends there
    answers 416 (or a length that says so); SizeMismatch for one that goes on. The
    answer to a file of size 0 in the metadata, and to a range whose answer did not
    say the file's length."""
    headers = {"Range": f"bytes={total}-{total}", "Accept-Encoding": body.IDENTITY}
    async with get(headers) as resp:
        if resp.status_code == 416:
            said = _CONTENT_RANGE_UNSATISFIED.fullmatch(resp.headers.get("content-range", ""))
            if said is not None and int(said[1]) != total:
                raise mismatch(path, said[1], total)
            return
        body.refuse_encoded(resp, f"download {path.filename}")
        if resp.status_code == 206:
            header = resp.headers.get("content-range", "").strip()
            match = _CONTENT_RANGE_RE.fullmatch(header)
            size = match[3] if match is not None and match[3] != "*" else f"more than {total}"
            raise mismatch(path, size, total)
        if resp.status_code != 200:
            raise errors.ProtocolError(
                f"download {path.filename}: unexpected HTTP {resp.status_code}"
            )
        if check_whole_length(path, resp, total):
            return
        seen = 0  # no length said: read until the body ends or goes past `total`
        async for chunk in resp.aiter_raw():
            seen += len(chunk)
            stats.bytes_received += len(chunk)
            if seen > total:
                raise mismatch(path, f"more than {total}", total)
        if seen != total:
            raise mismatch(path, str(seen), total)
