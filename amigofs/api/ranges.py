"""Ranged downloads: one GET for a byte range of a stored file (`fetch_range`), and the
checks that its answer is that range of a file of the size the metadata gives
(`check_content_range`, `check_whole_length`). A body cut short raises ResumableShort
with what arrived, so the next try asks only for the rest (retries.retrying).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx

from amigofs.api import body, errors
from amigofs.api.models import DownloadPath
from amigofs.api.retries import ResumableShort
from amigofs.api.stats import ClientStats

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

# A GET of the download path with these headers, its status checked; httpx's transport
# errors come out as errors.TransportError (PlatformClient._get).
Get = Callable[[dict[str, str]], AbstractAsyncContextManager[httpx.Response]]


async def fetch_range(
    get: Get,
    path: DownloadPath,
    start: int,
    buf: memoryview,
    total: int | None,
    progress: Callable[[int], None],
    stats: ClientStats,
) -> int:
    """One GET for bytes [start, start+len(buf)); returns how many it wrote into buf.

    Raises ResumableShort for a body cut short, after recording what arrived.
    """
    want = len(buf)
    headers = {"Range": f"bytes={start}-{start + want - 1}", "Accept-Encoding": body.IDENTITY}
    got = 0
    try:
        async with get(headers) as resp:
            body.refuse_encoded(resp, f"download {path.filename}")
            if resp.status_code == 206:
                check_content_range(path, resp, start, want, total)
                skip = 0
            elif resp.status_code == 200:
                # A proxy ignored Range and sends the whole file: skip to the
                # wanted bytes and stop reading once they are in.
                check_whole_length(path, resp, total)
                skip = start
            else:
                raise errors.ProtocolError(
                    f"download {path.filename}: unexpected HTTP {resp.status_code}"
                )
            async for chunk in resp.aiter_raw():
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
                    chunk = chunk[:room]
                buf[got : got + len(chunk)] = chunk
                got += len(chunk)
                stats.bytes_received += len(chunk)
                progress(got)
                if got == want and resp.status_code == 200:
                    break
    except errors.TransportError as exc:
        if got == want:
            return got  # all wanted bytes arrived; the rest of a 200 body does not matter
        raise ResumableShort(got, exc) from None
    if got < want:
        raise ResumableShort(
            got, errors.TransportError(f"download {path.filename}: body ended early")
        )
    return got


def check_content_range(
    path: DownloadPath, resp: httpx.Response, start: int, want: int, total: int | None
) -> None:
    """A 206 is bytes [start, start+want) of a file of `total` bytes, as its headers say."""
    header = resp.headers.get("content-range", "")
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        raise errors.ProtocolError(f"download {path.filename}: 206 without a valid Content-Range")
    first, last, size = int(match[1]), int(match[2]), match[3]
    if total is not None and size != "*" and int(size) != total:
        raise errors.ProtocolError(
            f"download {path.filename}: stored file has {size} bytes, metadata says {total}"
        )
    if (first, last) != (start, start + want - 1):
        raise errors.ProtocolError(
            f"download {path.filename}: asked for bytes {start}-{start + want - 1}, got {first}-{last}"
        )
    length = resp.headers.get("content-length")
    if length is not None and length.strip() != str(want):
        raise errors.ProtocolError(
            f"download {path.filename}: Content-Length disagrees with Content-Range"
        )


def check_whole_length(path: DownloadPath, resp: httpx.Response, total: int | None) -> None:
    """A 200 (Range ignored) holds a file of `total` bytes, if its Content-Length says."""
    length = resp.headers.get("content-length")
    if total is not None and length is not None and length.strip() != str(total):
        raise errors.ProtocolError(
            f"download {path.filename}: stored file has {length.strip()} bytes, metadata says {total}"
        )
