"""The exceptions the Platform API client raises, as one tree.

Callers catch the class that matters to them; the FUSE layer turns each into an
errno in one place (`amigofs.fs.errors.to_errno`).

    AmigoError
    ├── ApiError                  the server answered, and the answer is an error
    │   ├── AuthError             401 Unauthorized / 403 Forbidden
    │   ├── NotFound              404: no such workspace, call or file
    │   ├── Archived              202: the recording is in an archive tier; has restore_eta
    │   ├── NotConfigured         503 (after retries): call recording is off for the workspace
    │   ├── RateLimited           429 (after retries); has retry_after
    │   ├── ServerError           other 5xx (after retries)
    │   └── RequestRejected       400, 416, 422 and other 4xx: the request itself was wrong
    ├── VersionChanged            a stored file was replaced on the server (its validator differs)
    ├── TransportError            no usable answer: connect/read failure, timeout, dropped body
    │   ├── CertificateError      the server's TLS certificate is not trusted (not retried)
    │   └── DeadlineExceeded      retries gave up because the overall deadline ran out
    └── ProtocolError             an answer that breaks the API contract
        ├── ValidationError       a field or entry that is missing, mistyped or unsafe
        └── SizeMismatch          a stored file's length is not the metadata's

No message in this tree ever holds the API key: the client builds messages from
method, path and status only.
"""

from __future__ import annotations

import datetime as dt


class AmigoError(Exception):
    """Base of every error the client raises."""


class ApiError(AmigoError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ApiError):
    """401 (missing or invalid key) or 403 (the key may not see this)."""


class NotFound(ApiError):
    """404: the workspace, call or file does not exist."""


class Archived(ApiError):
    """202: the recording is archived; it can be read again after restore_eta."""

    def __init__(
        self, message: str, *, restore_eta: dt.datetime | None, retry_after: float | None
    ) -> None:
        super().__init__(message, status=202)
        self.restore_eta = restore_eta
        self.retry_after = retry_after


class NotConfigured(ApiError):
    """503 that persisted: call recording is not configured for the workspace."""


class RateLimited(ApiError):
    """429 that persisted past the retry budget."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class ServerError(ApiError):
    """A 5xx that persisted past the retry budget."""


class RequestRejected(ApiError):
    """400, 416, 422 or another 4xx: retrying the same request cannot help."""


class TransportError(AmigoError):
    """The request got no usable answer: connection refused or lost, timeout."""


class CertificateError(TransportError):
    """The server's TLS certificate failed verification: another try meets the same one."""


class DeadlineExceeded(TransportError):
    """Retrying stopped because the overall deadline ran out."""


class ProtocolError(AmigoError):
    """The answer does not keep the API's contract: bad or too deeply nested JSON, a body
    past its size cap, a compressed download, a wrong Content-Range."""


class ValidationError(ProtocolError):
    """A response field or a listing entry is missing, mistyped or unsafe to use."""


class SizeMismatch(ProtocolError):
    """A download shows the stored file's length (Content-Range, Content-Length, or where
    a body without either ends) is not the size the metadata gives: never served cut or
    padded to the metadata's size."""


class VersionChanged(AmigoError):
    """A download's answer is of another version of the stored file than the one asked
    for (its ETag, else its Last-Modified, differs): the file was replaced on the server.
    `validator` is the new version's (None: the answer said none)."""

    def __init__(self, message: str, *, validator: str | None) -> None:
        super().__init__(message)
        self.validator = validator
