"""The Platform API client: five GET operations over one pooled httpx connection set.

The operations are list_workspaces, list_calls (and list_calls_page), recording_urls,
recording_metadata, and the downloads (read_range, download_into, download_small). Each is
retried by `retries.retrying`; a download's ranges and their checks are `ranges`'; what a
failed request means is `diagnostics`'; the counters are `stats`'; the connections are
`transport`'s. What it raises is the tree in `amigofs.api.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

import httpx

from amigofs.api import body, diagnostics, errors
from amigofs.api.models import (
    CallSummary,
    DownloadPath,
    RecordingMetadata,
    RecordingUrls,
    Workspace,
    is_identifier,
    parse_call_summary,
    parse_page,
    parse_recording_metadata,
    parse_recording_urls,
    parse_workspace,
)
from amigofs.api.ranges import (
    Sink,
    Version,
    check_end,
    check_version,
    fetch_range,
    validator_of,
)
from amigofs.api.retries import ProgressDeadline, ResumableShort, RetryPolicy, retrying
from amigofs.api.secret import ApiKey, BearerAuth
from amigofs.api.stats import NO_ANSWER, Answer, ClientStats
from amigofs.api.transport import large_read_transport, trust_store

# Importers of these from here (the daemon, the cache, the tests) keep working.
__all__ = [
    "DEFAULT_BASE_URL",
    "NO_ANSWER",
    "PAGE_LIMIT",
    "CallPage",
    "ClientConfig",
    "ClientStats",
    "PlatformClient",
    "RetryPolicy",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.platform.amigo.ai"
PAGE_LIMIT = 100  # the API's maximum; a larger limit is a 422
MAX_PAGES = 10_000  # a server whose pages never end is broken, not big
VERSION_DEADLINE = 2.0  # seconds for current_version, retries included
_IDENTITY = {"Accept-Encoding": body.IDENTITY}


@dataclass(slots=True, frozen=True)
class CallPage:
    """One page of list-calls: the calls on it that can be mounted, how many entries
    it had in all (some have no recording), the listing's total, and whether more follow."""

    calls: list[CallSummary]
    entries: int
    total: int | None
    has_more: bool
    next_offset: int | None = None  # where the server says the next page starts


@dataclass(slots=True, frozen=True)
class ClientConfig:
    base_url: str = DEFAULT_BASE_URL
    max_connections: int = 16
    connect_timeout: float = 10.0
    # Longest silence while waiting for bytes: a stalled body fails after this.
    read_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    user_agent: str = "amigofs"
    # Caps on the decoded bytes of one answer, enforced while it streams; past its cap an
    # answer is a ProtocolError (a broken or hostile server: not retried).
    max_json_bytes: int = 4 << 20  # a listing page (100 calls are some 50 KiB)
    # The urls of one call (about 1 KiB); a walk has dozens of them in flight.
    max_call_json_bytes: int = 256 << 10
    # The metadata of one call, which is its metadata.json (about 1 KiB; the cap a
    # metadata.json had when it was downloaded), and download_small.
    max_small_download_bytes: int = 1 << 20


class PlatformClient:
    """One per process; use as `async with PlatformClient(config, key) as client`."""

    def __init__(
        self,
        config: ClientConfig,
        api_key: ApiKey,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.stats = ClientStats()
        self.base_url = config.base_url.rstrip("/")
        url = httpx.URL(self.base_url)
        self._host = url.host
        self._origin = f"{url.scheme}://{url.netloc.decode('ascii')}"  # for "cannot connect to"
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=BearerAuth(api_key),
            # Only what body.Decoder undoes with a cap: httpx would add br or zstd when
            # their packages are installed, and decode them without one.
            headers={"User-Agent": config.user_agent, "Accept-Encoding": body.ACCEPT_ENCODING},
            timeout=httpx.Timeout(
                connect=config.connect_timeout,
                read=config.read_timeout,
                write=config.read_timeout,
                pool=config.retry.deadline,
            ),
            follow_redirects=False,  # a redirect could carry the key elsewhere
            # No proxy, netrc or CA bundle from the environment behind the user's back:
            # the trust store is transport.trust_store's, said in the README.
            trust_env=False,
            transport=transport or large_read_transport(limits, trust_store()),
        )

    def __repr__(self) -> str:
        return f"PlatformClient({self.base_url!r})"

    async def __aenter__(self) -> PlatformClient:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.__aexit__(et, ev, tb)

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the five operations ------------------------------------------------------

    async def list_workspaces(self) -> list[Workspace]:
        found: dict[str, Workspace] = {}

        def take(raw: object) -> None:
            try:
                ws = parse_workspace(raw)
            except errors.ValidationError as exc:
                log.warning("list-workspaces: skipped an entry: %s", exc)
                return
            if ws.id in found:
                log.warning("list-workspaces: skipped a duplicate of %s", ws.id)
                return
            found[ws.id] = ws

        await self._list_all("list-workspaces", "/v1/workspaces", take)
        return list(found.values())

    async def list_calls(self, workspace_id: str) -> list[CallSummary]:
        """Every call of the workspace that has a recording to mount, one page after
        another (the mount syncs through list_calls_page instead, pages at once)."""
        found: dict[str, CallSummary] = {}
        offset = 0
        for _ in range(MAX_PAGES):
            page = await self.list_calls_page(workspace_id, offset)
            for call in page.calls:
                if call.call_sid in found:
                    log.warning(
                        "list-calls %s: skipped a duplicate of %s", workspace_id, call.call_sid
                    )
                    continue
                found[call.call_sid] = call
            if page.next_offset is None:
                return list(found.values())
            if page.next_offset <= offset:
                raise errors.ProtocolError("list-calls: continuation_token did not advance")
            offset = page.next_offset
        raise errors.ProtocolError(f"list-calls: more than {MAX_PAGES} pages")

    async def list_calls_page(
        self,
        workspace_id: str,
        offset: int,
        *,
        limit: int = PAGE_LIMIT,
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
    ) -> CallPage:
        """One page of a workspace's calls from `offset` (newest first, as the service
        lists them; code that syncs must not rely on that), with the listing's `total`."""
        _check_identifier(workspace_id, "workspace id")
        # The cursor the API documents (an alias of offset), as list_workspaces sends it.
        params: dict[str, int | str] = {"limit": limit, "continuation_token": offset}
        if date_from is not None:
            params["date_from"] = date_from.isoformat()
        if date_to is not None:
            params["date_to"] = date_to.isoformat()
        op = "list-calls"
        page = parse_page(
            await self._get_json(
                op, f"/v1/{workspace_id}/calls", self.config.max_json_bytes, params
            ),
            op,
        )
        calls: list[CallSummary] = []
        seen: set[str] = set()
        for raw in page.items:
            try:
                call = parse_call_summary(raw, workspace_id)
            except errors.ValidationError as exc:
                log.warning("list-calls %s: skipped an entry: %s", workspace_id, exc)
                continue
            if call is None:
                continue
            if call.call_sid in seen:
                log.warning("list-calls %s: skipped a duplicate of %s", workspace_id, call.call_sid)
                continue
            seen.add(call.call_sid)
            calls.append(call)
        return CallPage(
            calls, len(page.items), page.total, page.next_token is not None, page.next_token
        )

    async def recording_urls(self, workspace_id: str, call_sid: str) -> RecordingUrls:
        path = _recording_path(workspace_id, call_sid, "urls")
        document = await self._get_json("get-recording-urls", path, self.config.max_call_json_bytes)
        return parse_recording_urls(
            document, workspace_id=workspace_id, call_sid=call_sid, base_url=self.base_url
        )

    async def recording_metadata(self, workspace_id: str, call_sid: str) -> RecordingMetadata:
        """The call's metadata, with the answer's bytes (`body`: its metadata.json)."""
        op, path = "get-recording-metadata", _recording_path(workspace_id, call_sid, "metadata")
        raw = await self._get_body(op, path, self.config.max_small_download_bytes)
        document = body.parse_json(raw, f"{op} {path}")
        return parse_recording_metadata(
            document, workspace_id=workspace_id, call_sid=call_sid, body=raw
        )

    async def read_range(
        self, path: DownloadPath, start: int, end: int, *, total: int | None = None
    ) -> bytearray:
        """Exactly bytes [start, end) of a stored file."""
        buf = bytearray(end - start)
        await self.download_into(path, start, memoryview(buf), total=total)
        return buf

    async def download_into(
        self,
        path: DownloadPath,
        start: int,
        buf: memoryview | Sink,
        *,
        total: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        version: Version | None = None,
    ) -> None:
        """Fills `buf` with the stored file's bytes from `start` on, or hands them to
        a Sink in order as they arrive (len(sink) of them).

        `total` is the file's size as the metadata gives it; an answer that shows
        another size is a SizeMismatch, never silently short or padded data. A body
        cut short is resumed from where it stopped, of the same version. `version`:
        the version of the file wanted, or (not known) set by the first answer;
        VersionChanged for an answer of another one. `on_progress(n)` is told each
        time the first n bytes of `buf` are in.
        """
        version = version if version is not None else Version()
        if start < 0 or (total is not None and start + len(buf) > total):
            raise ValueError(f"range {start}+{len(buf)} outside a file of {total} bytes")
        if not buf:
            return
        done = 0
        end_unconfirmed = False
        clock = ProgressDeadline(self.config.retry.deadline)
        op = "download-recording-file"

        def progress(got: int) -> None:
            clock.progressed(done + got)
            if on_progress is not None:
                on_progress(done + got)

        async def attempt(answer: Answer) -> None:
            nonlocal done, end_unconfirmed

            def get(headers: dict[str, str]) -> AbstractAsyncContextManager[httpx.Response]:
                return self._get(op, answer, path.target, headers=headers)

            # A sink has taken what arrived; a buffer's rest is what is still to fill.
            rest = buf[done:] if isinstance(buf, memoryview) else buf
            try:
                fetched = await fetch_range(
                    get, path, start + done, rest, total, progress, self.stats, version
                )
            except ResumableShort as short:
                # Keep what arrived, so the next try asks only for the rest.
                done += short.got
                raise
            done += fetched.got
            end_unconfirmed = fetched.end_unconfirmed

        await self._retrying(op, attempt, progress=lambda: done, deadline=clock)
        if end_unconfirmed:
            # The answer did not say the file's length, and this range ends where the
            # metadata says the file does: the server's length is the truth.
            assert total is not None
            await self.check_length(path, total)

    async def current_version(self, path: DownloadPath, hint: str | None = None) -> str | None:
        """The stored file's validator now (ETag, else Last-Modified; None: neither), from
        a GET of its first byte: for blocks an earlier mount left, which are served
        only once they are found to be of the file as it is now. `hint`: the version
        they were of, asked with If-None-Match: a file still of it costs no byte (304)."""
        op = "download-recording-file"

        async def attempt(answer: Answer) -> str | None:
            headers = {"Range": "bytes=0-0", **_IDENTITY}
            if hint is not None:
                headers["If-None-Match"] = hint
            accept = (304, 416)
            async with self._get(op, answer, path.target, headers=headers, accept=accept) as resp:
                if resp.status_code == 304:
                    return validator_of(resp) or hint
                version = Version()
                check_version(path, resp, version)
                return version.validator

        # Briefly: a server that does not answer leaves the caller to serve what it has
        # (the version `hint`) within a reader's deadline.
        policy = dataclasses.replace(
            self.config.retry,
            max_attempts=min(2, self.config.retry.max_attempts),
            deadline=min(VERSION_DEADLINE, self.config.retry.deadline),
        )
        return await retrying(op, attempt, policy=policy, stats=self.stats)

    async def check_length(self, path: DownloadPath, total: int) -> None:
        """Raises SizeMismatch unless the stored file ends at `total` bytes (one GET for
        the byte past that end): for a size of 0 in the metadata, and for servers that
        do not say a file's length."""
        op = "download-recording-file"

        async def attempt(answer: Answer) -> None:
            def get(headers: dict[str, str]) -> AbstractAsyncContextManager[httpx.Response]:
                return self._get(op, answer, path.target, headers=headers, accept=(416,))

            await check_end(get, path, total, self.stats)

        await self._retrying(op, attempt)

    async def download_small(self, path: DownloadPath) -> bytes:
        """A whole small stored file (metadata.json), at most max_small_download_bytes
        (h11 checks it against Content-Length)."""
        op, what = "download-recording-file", f"download {path.filename}"

        async def attempt(answer: Answer) -> bytes:
            async with self._get(op, answer, path.target, headers=_IDENTITY) as resp:
                if resp.status_code != 200:
                    raise errors.ProtocolError(f"{what}: HTTP {resp.status_code}")
                body.refuse_encoded(resp, what)
                data = await body.read_capped(resp, self.config.max_small_download_bytes, what)
            self.stats.bytes_received += len(data)
            return bytes(data)

        return await self._retrying(op, attempt)

    # --- plumbing ------------------------------------------------------------------

    async def _list_all(self, op: str, path: str, take: Callable[[object], None]) -> None:
        """Gives each entry of each page to `take`, a page at a time: what is kept of a
        listing is what `take` keeps, never the raw pages."""
        token = 0
        for _ in range(MAX_PAGES):
            params = {"limit": PAGE_LIMIT, "continuation_token": token}
            page = parse_page(
                await self._get_json(op, path, self.config.max_json_bytes, params), op
            )
            for entry in page.items:
                take(entry)
            if page.next_token is None:
                return
            if page.next_token <= token:
                raise errors.ProtocolError(f"{op}: continuation_token did not advance")
            token = page.next_token
        raise errors.ProtocolError(f"{op}: more than {MAX_PAGES} pages")

    async def _get_json(
        self, op: str, path: str, cap: int, params: Mapping[str, int | str] | None = None
    ) -> object:
        what = f"{op} {path}"

        async def attempt(answer: Answer) -> object:
            async with self._get(op, answer, path, params=params) as resp:
                data = await body.read_capped(resp, cap, what)
            return body.parse_json(data, what)

        return await self._retrying(op, attempt)

    async def _get_body(self, op: str, path: str, cap: int) -> bytes:
        """A JSON answer's bytes, unparsed (at most `cap`)."""
        what = f"{op} {path}"

        async def attempt(answer: Answer) -> bytes:
            async with self._get(op, answer, path) as resp:
                return bytes(await body.read_capped(resp, cap, what))

        return await self._retrying(op, attempt)

    @contextlib.asynccontextmanager
    async def _get(
        self,
        op: str,
        answer: Answer,
        path: str,
        *,
        params: Mapping[str, int | str] | None = None,
        headers: Mapping[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> AsyncIterator[httpx.Response]:
        """One GET with its answer's headers in: its status noted in `answer`, logged and
        checked (diagnostics.check_status), but for the statuses in `accept`, which the
        caller reads. httpx's transport errors, while sending or while the body is
        read, come out as errors.TransportError."""
        try:
            async with self._http.stream("GET", path, params=params, headers=headers) as resp:
                answer.status = resp.status_code
                if log.isEnabledFor(logging.DEBUG):
                    # The path without its query: a signed link's signature is not for logs.
                    request = resp.request.headers
                    log.debug(
                        "%s GET %s%s -> %d",
                        op,
                        path.split("?", 1)[0],
                        f" [{request['range']}]" if "range" in request else "",
                        resp.status_code,
                    )
                if resp.status_code not in accept:
                    document = await diagnostics.error_document(resp)
                    diagnostics.check_status(op, path, resp, document)
                yield resp
        except httpx.TransportError as exc:
            raise diagnostics.transport_error(
                op, path, exc, host=self._host, origin=self._origin
            ) from None

    async def _retrying(
        self,
        op: str,
        attempt: Callable[[Answer], Awaitable[T]],
        *,
        progress: Callable[[], int] = lambda: 0,
        deadline: ProgressDeadline | None = None,
    ) -> T:
        return await retrying(
            op,
            attempt,
            policy=self.config.retry,
            stats=self.stats,
            progress=progress,
            deadline=deadline,
        )


def _check_identifier(value: str, what: str) -> None:
    # A name that cannot be an identifier never becomes part of a request path.
    if not is_identifier(value):
        raise errors.NotFound(f"not a valid {what}: {value[:40]!r}", status=404)


def _recording_path(workspace_id: str, call_sid: str, leaf: str) -> str:
    _check_identifier(workspace_id, "workspace id")
    _check_identifier(call_sid, "call SID")
    return f"/v1/{workspace_id}/recordings/{call_sid}/{leaf}"
