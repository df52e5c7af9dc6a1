"""The Platform API client: five GET operations over one pooled httpx connection set.

Each operation retries what can succeed on a second try (transport failures, 429,
5xx) with exponential backoff and jitter, honours Retry-After, and gives up at an
overall deadline: the policy's own, or the caller's trio deadline if that is
sooner. What it raises is the tree in `amigofs.api.errors`.
"""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import logging
import operator
import os
import random
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import httpx
import trio

from amigofs.api import body, errors
from amigofs.api.models import (
    CallSummary,
    DownloadPath,
    RecordingMetadata,
    RecordingUrls,
    Workspace,
    is_identifier,
    parse_archived,
    parse_call_summary,
    parse_page,
    parse_recording_metadata,
    parse_recording_urls,
    parse_workspace,
)
from amigofs.api.secret import ApiKey, BearerAuth
from amigofs.api.transport import large_read_transport, trust_store

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.platform.amigo.ai"
PAGE_LIMIT = 100  # the API's maximum; a larger limit is a 422
MAX_PAGES = 10_000  # a server whose pages never end is broken, not big
# Of an error answer only this much is read (for a 202's restore time, a 503's detail).
MAX_ERROR_BODY = 8 << 10
_IDENTITY = {"Accept-Encoding": body.IDENTITY}
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# What a request ended with when it was not an answer's status: no answer came (the
# connection refused or reset, the deadline passed), or the request was given up on
# before one did by what asked (a request beside it failed, the job was cancelled).
NO_ANSWER = "no_answer"
CANCELLED = "cancelled"


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.1
    max_delay: float = 5.0
    # Overall time for one operation, retries and Retry-After waits included.
    deadline: float = 30.0
    # A 503 may be a passing overload or "call recording not configured"; after
    # this many 503s in a row it is reported as not configured.
    unavailable_attempts: int = 3


# Bytes that count as progress for a download's deadline (see _ProgressDeadline).
PROGRESS_BYTES = 64 << 10


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
    # The urls or metadata of one call (about 1 KiB); a walk has 16 of them in flight.
    max_call_json_bytes: int = 256 << 10
    # download_small: metadata.json (about 1 KiB), kept in memory with its call.
    max_small_download_bytes: int = 1 << 20


@dataclass(slots=True)
class ClientStats:
    """What this client has done, for `amigofs stats`."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    # Requests that have ended, by (operation, their answer's status, else NO_ANSWER
    # or CANCELLED).
    # Counted as they end, not as they start like `requests`: a counter that moved a
    # request from one status to another would go down, which Prometheus reads as a
    # restart.
    finished: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    retries: int = 0
    errors: int = 0  # operations that failed after their retries
    bytes_received: int = 0  # file bytes downloaded

    def by_status(self) -> dict[str, dict[str, int]]:
        """`finished` as {operation: {status: count}}, both sorted."""
        nested: dict[str, dict[str, int]] = {}
        for (op, status), count in sorted(self.finished.items()):
            nested.setdefault(op, {})[status] = count
        return nested

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "finished": self.by_status(),
            "retries": self.retries,
            "errors": self.errors,
            "bytes_received": self.bytes_received,
        }

    def since(self, earlier: ClientStats) -> ClientStats:
        """What was done after `earlier`, a copy of these counters taken then."""
        return self._combined(earlier, operator.sub)

    def plus(self, other: ClientStats) -> ClientStats:
        """The counts of both clients (the mount's and its fetch worker's)."""
        return self._combined(other, operator.add)

    def _combined(self, other: ClientStats, combine: Callable[[Any, Any], Any]) -> ClientStats:
        return ClientStats(
            combine(self.requests, other.requests),
            combine(self.finished, other.finished),
            combine(self.retries, other.retries),
            combine(self.errors, other.errors),
            combine(self.bytes_received, other.bytes_received),
        )

    def copy(self) -> ClientStats:
        return self.since(ClientStats())

    def add(self, document: Mapping[str, Any]) -> None:
        """Adds counts from `as_dict` of another client (the fetch worker's)."""
        for op, count in dict(document.get("requests") or {}).items():
            self.requests[str(op)] += int(count)
        for op, statuses in dict(document.get("finished") or {}).items():
            for status, count in dict(statuses).items():
                self.finished[str(op), str(status)] += int(count)
        self.retries += int(document.get("retries") or 0)
        self.errors += int(document.get("errors") or 0)
        self.bytes_received += int(document.get("bytes_received") or 0)


class _Retryable(Exception):
    """Raised inside one attempt: the error to report if retrying stops here."""

    def __init__(self, error: errors.AmigoError, *, wait: float = 0.0, unavailable: bool = False):
        super().__init__(str(error))
        self.error = error
        self.wait = wait
        self.unavailable = unavailable


class _Answer:
    """The status of one attempt's answer, once its headers are in (None until then)."""

    __slots__ = ("cancelled", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.cancelled = False  # given up on by the caller, not for its deadline

    def outcome(self) -> str:
        """What the attempt is counted as in ClientStats.finished."""
        if self.status is not None:
            return str(self.status)
        return CANCELLED if self.cancelled else NO_ANSWER


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
        path = _recording_path(workspace_id, call_sid, "metadata")
        document = await self._get_json(
            "get-recording-metadata", path, self.config.max_call_json_bytes
        )
        return parse_recording_metadata(document, workspace_id=workspace_id, call_sid=call_sid)

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
        buf: memoryview,
        *,
        total: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Fills `buf` with the stored file's bytes from `start` on.

        `total` is the file's size as the metadata gives it; an answer that shows
        another size is a ProtocolError, never silently short or padded data. A body
        cut short is resumed from where it stopped. `on_progress(n)` is told each
        time the first n bytes of `buf` are in.
        """
        if start < 0 or (total is not None and start + len(buf) > total):
            raise ValueError(f"range {start}+{len(buf)} outside a file of {total} bytes")
        if not buf:
            return
        done = 0
        clock = _ProgressDeadline(self.config.retry.deadline)

        def progress(got: int) -> None:
            clock.progressed(done + got)
            if on_progress is not None:
                on_progress(done + got)

        async def attempt(answer: _Answer) -> None:
            nonlocal done
            try:
                done += await self._fetch_range(
                    answer, path, start + done, buf[done:], total, progress
                )
            except _ResumableShort as short:
                # Keep what arrived, so the next try asks only for the rest.
                done += short.got
                raise

        await self._retrying(
            "download-recording-file", attempt, progress=lambda: done, deadline=clock
        )

    async def download_small(self, path: DownloadPath) -> bytes:
        """A whole small stored file (metadata.json), at most max_small_download_bytes
        (h11 checks it against Content-Length)."""
        op, what = "download-recording-file", f"download {path.filename}"

        async def attempt(answer: _Answer) -> bytes:
            try:
                async with self._http.stream("GET", path.target, headers=_IDENTITY) as resp:
                    answer.status = resp.status_code
                    self._check_status(op, path.target, resp, await _error_document(resp))
                    if resp.status_code != 200:
                        raise errors.ProtocolError(f"{what}: HTTP {resp.status_code}")
                    body.refuse_encoded(resp, what)
                    data = await body.read_capped(resp, self.config.max_small_download_bytes, what)
            except httpx.TransportError as exc:
                raise self._transport_error(op, path.target, exc) from None
            self.stats.bytes_received += len(data)
            return bytes(data)

        return await self._retrying("download-recording-file", attempt)

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

        async def attempt(answer: _Answer) -> object:
            try:
                async with self._http.stream("GET", path, params=params) as resp:
                    answer.status = resp.status_code
                    self._check_status(op, path, resp, await _error_document(resp))
                    data = await body.read_capped(resp, cap, what)
            except httpx.TransportError as exc:
                raise self._transport_error(op, path, exc) from None
            return body.parse_json(data, what)

        return await self._retrying(op, attempt)

    async def _fetch_range(
        self,
        answer: _Answer,
        path: DownloadPath,
        start: int,
        buf: memoryview,
        total: int | None,
        progress: Callable[[int], None],
    ) -> int:
        """One GET for bytes [start, start+len(buf)); returns how many it wrote into buf.

        Raises _Retryable for a body cut short, after recording what arrived.
        """
        op = "download-recording-file"
        want = len(buf)
        headers = {"Range": f"bytes={start}-{start + want - 1}", **_IDENTITY}
        got = 0
        try:
            async with self._http.stream("GET", path.target, headers=headers) as resp:
                answer.status = resp.status_code
                self._check_status(op, path.target, resp, await _error_document(resp))
                body.refuse_encoded(resp, f"download {path.filename}")
                if resp.status_code == 206:
                    _check_content_range(path, resp, start, want, total)
                    skip = 0
                elif resp.status_code == 200:
                    # A proxy ignored Range and sends the whole file: skip to the
                    # wanted bytes and stop reading once they are in.
                    _check_whole_length(path, resp, total)
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
                    self.stats.bytes_received += len(chunk)
                    progress(got)
                    if got == want and resp.status_code == 200:
                        break
        except httpx.TransportError as exc:
            if got == want:
                return got  # all wanted bytes arrived; the rest of a 200 body does not matter
            err = self._transport_error(op, path.target, exc)
            raise _ResumableShort(got, err) from None
        if got < want:
            raise _ResumableShort(
                got, errors.TransportError(f"download {path.filename}: body ended early")
            )
        return got

    def _check_status(self, op: str, path: str, resp: httpx.Response, document: object) -> None:
        """Raises the error an answer's status means; `document` is an error answer's JSON
        (from _error_document), or None."""
        status = resp.status_code
        if log.isEnabledFor(logging.DEBUG):
            # The path without its query: a signed link's signature is not for logs.
            log.debug(
                "%s GET %s%s -> %d",
                op,
                path.split("?", 1)[0],
                f" [{resp.request.headers['range']}]" if "range" in resp.request.headers else "",
                status,
            )
        if status in (200, 206):
            return
        where = f"{op} {path.split('?', 1)[0]}: HTTP {status}"
        if status == 202:
            eta = parse_archived(document)
            raise errors.Archived(
                f"{where}: recording is archived"
                + (f", restore expected at {eta.isoformat()}" if eta else ""),
                restore_eta=eta,
                retry_after=_retry_after(resp),
            )
        if status in (401, 403):
            raise errors.AuthError(
                f"{where}: " + ("API key missing or invalid" if status == 401 else "not permitted"),
                status=status,
            )
        if status == 404:
            raise errors.NotFound(f"{where}: not found", status=404)
        if status == 429:
            wait = _retry_after(resp)
            raise _Retryable(
                errors.RateLimited(f"{where}: rate limited", retry_after=wait), wait=wait or 0.0
            )
        if status == 503:
            detail = str(document.get("detail", "")) if isinstance(document, dict) else ""
            if "not configured" in detail.lower():
                error: errors.ApiError = errors.NotConfigured(
                    f"{where}: call recording is not configured for this workspace", status=503
                )
            else:
                error = errors.ServerError(f"{where}: service unavailable", status=503)
            raise _Retryable(error, wait=_retry_after(resp) or 0.0, unavailable=True)
        if 500 <= status <= 599:
            raise _Retryable(errors.ServerError(f"{where}: server error", status=status))
        if status == 416:
            raise errors.ProtocolError(f"{where}: the file is shorter than its metadata says")
        if 400 <= status <= 499:
            raise errors.RequestRejected(f"{where}: request rejected", status=status)
        raise errors.ProtocolError(f"{where}: unexpected status")

    def _transport_error(
        self, op: str, path: str, exc: httpx.TransportError
    ) -> errors.TransportError:
        # httpx's own message can hold the full URL; say only the operation and path.
        where = f"{op} {path.split('?', 1)[0]}"
        cause = _ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return errors.CertificateError(
                f"{where}: TLS certificate of {self._host} not trusted: "
                f"{cause.verify_message or cause.reason}"
            )
        if cause is not None:
            return errors.TransportError(
                f"{where}: TLS with {self._host} failed: {cause.reason or type(cause).__name__}"
            )
        reason = _os_reason(exc)
        if isinstance(exc, httpx.ConnectError) and reason:
            return errors.TransportError(f"{where}: cannot connect to {self._origin}: {reason}")
        return errors.TransportError(
            f"{where}: {type(exc).__name__}" + (f" ({reason})" if reason else "")
        )

    async def _retrying(
        self,
        op: str,
        attempt: Callable[[_Answer], Awaitable[T]],
        *,
        progress: Callable[[], int] = lambda: 0,
        deadline: _ProgressDeadline | None = None,
    ) -> T:
        policy = self.config.retry
        clock = deadline or _ProgressDeadline(policy.deadline)
        tries = unavailable = 0
        last_progress = progress()
        while True:
            tries += 1
            self.stats.requests[op] += 1
            answer = _Answer()
            with trio.move_on_at(clock.at) as scope:
                clock.scope = scope
                try:
                    return await attempt(answer)
                except _ResumableShort as short:
                    failure = _Retryable(short.error)
                except errors.CertificateError:
                    self.stats.errors += 1
                    raise  # trying again meets the same certificate
                except errors.TransportError as exc:
                    failure = _Retryable(exc)
                except _Retryable as exc:
                    failure = exc
                except errors.ApiError:
                    # An answer not worth a retry (401, 403, 404, 422...): an error all
                    # the same, for `amigofs stats`.
                    self.stats.errors += 1
                    raise
                except trio.Cancelled:
                    # Not by this scope, whose deadline is the operation's: by the caller.
                    answer.cancelled = not scope.cancel_called
                    raise
                finally:
                    self.stats.finished[op, answer.outcome()] += 1
            clock.scope = None
            if scope.cancelled_caught:
                self.stats.errors += 1
                raise errors.DeadlineExceeded(f"{op}: no answer within the deadline")
            if progress() != last_progress:
                # A body cut short after some bytes: resuming is not a failed try.
                last_progress = progress()
                tries = 0
            unavailable = unavailable + 1 if failure.unavailable else 0
            backoff = min(policy.max_delay, policy.base_delay * 2 ** max(tries - 1, 0))
            wait = max(failure.wait, backoff * random.uniform(0.5, 1.0))
            if (
                tries >= policy.max_attempts
                or unavailable >= policy.unavailable_attempts
                or trio.current_time() + wait >= clock.at
            ):
                self.stats.errors += 1
                # The httpx exception it came from holds the request, headers and
                # all: keep it out of what callers can reach.
                failure.error.__context__ = failure.error.__cause__ = None
                raise failure.error
            self.stats.retries += 1
            log.debug("%s: %s; retrying in %.2f s", op, failure.error, wait)
            await trio.sleep(wait)


class _ProgressDeadline:
    """The retry policy's deadline, moved forward each time another PROGRESS_BYTES
    arrive: a download that keeps delivering is slow, not stalled, and must not fail
    for its length; a trickle below PROGRESS_BYTES a deadline still ends it, and so
    does a stall. Never past the caller's own trio deadline."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._hard = trio.current_effective_deadline()
        self._counted = 0
        self.at = min(trio.current_time() + seconds, self._hard)
        self.scope: trio.CancelScope | None = None

    def progressed(self, total: int) -> None:
        """`total` bytes have arrived so far."""
        if total - self._counted < PROGRESS_BYTES:
            return
        self._counted = total
        self.at = min(trio.current_time() + self._seconds, self._hard)
        if self.scope is not None:
            self.scope.deadline = self.at


class _ResumableShort(Exception):
    def __init__(self, got: int, error: errors.AmigoError) -> None:
        super().__init__(str(error))
        self.got = got
        self.error = error


def _check_identifier(value: str, what: str) -> None:
    # A name that cannot be an identifier never becomes part of a request path.
    if not is_identifier(value):
        raise errors.NotFound(f"not a valid {what}: {value[:40]!r}", status=404)


def _recording_path(workspace_id: str, call_sid: str, leaf: str) -> str:
    _check_identifier(workspace_id, "workspace id")
    _check_identifier(call_sid, "call SID")
    return f"/v1/{workspace_id}/recordings/{call_sid}/{leaf}"


def _check_content_range(
    path: DownloadPath, resp: httpx.Response, start: int, want: int, total: int | None
) -> None:
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


def _check_whole_length(path: DownloadPath, resp: httpx.Response, total: int | None) -> None:
    length = resp.headers.get("content-length")
    if total is not None and length is not None and length.strip() != str(total):
        raise errors.ProtocolError(
            f"download {path.filename}: stored file has {length.strip()} bytes, metadata says {total}"
        )


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import datetime as dt

    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


async def _error_document(resp: httpx.Response) -> object:
    """An error answer's JSON, for _check_status (a 202's restore time, a 503's "not
    configured"), from at most MAX_ERROR_BODY bytes of it; None for a success, or a body
    that is longer, or not JSON. The rest of a long body is never read."""
    if resp.status_code in (200, 206):
        return None
    data = await body.read_prefix(resp, MAX_ERROR_BODY)
    if data is None:
        return None
    try:
        return body.parse_json(data, "error answer")
    except errors.ProtocolError:
        return None


def _os_reason(exc: BaseException) -> str:
    """What the system said under an httpx error (Connection refused, Name or service
    not known...), without the URL httpx's own message holds. Under trio the errno is
    in a group below an OSError of trio's own ("all attempts to connect to ... failed"),
    whose message is the answer only when no errno is found."""
    found: list[BaseException] = [exc]
    fallback = ""
    for cause in found:  # grows as it goes: the causes, and the members of groups
        if len(found) > 20:
            break
        if isinstance(cause, OSError) and cause.errno is not None and cause.errno > 0:
            return os.strerror(cause.errno)  # trio's strerror holds the address
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror  # a resolver's error (negative errno)
        if isinstance(cause, OSError) and cause.args and isinstance(cause.args[-1], str):
            fallback = fallback or cause.args[-1][:200]
        if isinstance(cause, BaseExceptionGroup):
            found.extend(cause.exceptions)
        if (below := cause.__cause__ or cause.__context__) is not None:
            found.append(below)
    return fallback


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error under an httpx one (httpx <- httpcore <- trio <- ssl), if any."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:
        if isinstance(cause, ssl.SSLError):
            return cause
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None
