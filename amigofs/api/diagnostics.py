"""What a failed request means, as an error of `amigofs.api.errors` with a message for the
log: an answer's status (`check_status`, reading an error answer's JSON with
`error_document`), or a transport failure (`transport_error`).

Messages name the operation, the path without its query (a signed link's signature is not
for logs) and the host, never the API key or httpx's own message (which can hold the URL).
"""

from __future__ import annotations

import ssl

import httpx

from amigofs.api import body, errors
from amigofs.api.models import parse_archived
from amigofs.api.retries import Retryable, retry_after
from amigofs.api.transport import network_failure

# Of an error answer only this much is read (for a 202's restore time, a 503's detail).
MAX_ERROR_BODY = 8 << 10


def where(op: str, path: str) -> str:
    """The operation and the path without its query, as messages name a request."""
    return f"{op} {path.split('?', 1)[0]}"


def check_status(op: str, path: str, resp: httpx.Response, document: object) -> None:
    """Raises the error an answer's status means (Retryable for what another try may
    cure); `document` is an error answer's JSON (from error_document), or None."""
    status = resp.status_code
    if status in (200, 206):
        return
    said = f"{where(op, path)}: HTTP {status}"
    if status == 202:
        eta = parse_archived(document)
        raise errors.Archived(
            f"{said}: recording is archived"
            + (f", restore expected at {eta.isoformat()}" if eta else ""),
            restore_eta=eta,
            retry_after=retry_after(resp),
        )
    if status in (401, 403):
        raise errors.AuthError(
            f"{said}: " + ("API key missing or invalid" if status == 401 else "not permitted"),
            status=status,
        )
    if status == 404:
        raise errors.NotFound(f"{said}: not found", status=404)
    if status == 429:
        wait = retry_after(resp)
        raise Retryable(
            errors.RateLimited(f"{said}: rate limited", retry_after=wait), wait=wait or 0.0
        )
    if status == 503:
        detail = str(document.get("detail", "")) if isinstance(document, dict) else ""
        if "not configured" in detail.lower():
            error: errors.ApiError = errors.NotConfigured(
                f"{said}: call recording is not configured for this workspace", status=503
            )
        else:
            error = errors.ServerError(f"{said}: service unavailable", status=503)
        # One that says what else it is (an overload, "temporarily unavailable") passes:
        # retried as any 5xx. One that says nothing may be "not configured", which
        # persists: reported after a few (RetryPolicy.unavailable_attempts).
        unavailable = not detail or isinstance(error, errors.NotConfigured)
        raise Retryable(error, wait=retry_after(resp) or 0.0, unavailable=unavailable)
    if 500 <= status <= 599:
        raise Retryable(errors.ServerError(f"{said}: server error", status=status))
    if status == 416:
        raise errors.ProtocolError(f"{said}: the file is shorter than its metadata says")
    if 400 <= status <= 499:
        raise errors.RequestRejected(f"{said}: request rejected", status=status)
    raise errors.ProtocolError(f"{said}: unexpected status")


async def error_document(resp: httpx.Response) -> object:
    """An error answer's JSON, for check_status (a 202's restore time, a 503's "not
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


def transport_error(
    op: str, path: str, exc: httpx.TransportError, *, host: str, origin: str
) -> errors.TransportError:
    """The error for a request that got no usable answer, with what the network said
    (transport.NetworkFailure): an untrusted certificate (CertificateError, not retried), a
    failed TLS handshake, a refused or unresolved connection to `origin`, or httpx's kind
    of error with the system's reason."""
    failure = network_failure(exc)
    reason = failure.reason if failure is not None else ""
    tls = failure.tls if failure is not None else None
    if isinstance(tls, ssl.SSLCertVerificationError):
        return errors.CertificateError(
            f"{where(op, path)}: TLS certificate of {host} not trusted: "
            f"{tls.verify_message or tls.reason}"
        )
    if tls is not None:
        return errors.TransportError(f"{where(op, path)}: TLS with {host} failed: {reason}")
    if isinstance(exc, httpx.ConnectError) and reason:
        return errors.TransportError(f"{where(op, path)}: cannot connect to {origin}: {reason}")
    return errors.TransportError(
        f"{where(op, path)}: {type(exc).__name__}" + (f" ({reason})" if reason else "")
    )
