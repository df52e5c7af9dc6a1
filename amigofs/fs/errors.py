"""Every failure the filesystem can meet, turned into the errno a program sees.

This is the one place where that mapping lives; the README's errno table is
written from it.

| failure                                   | errno      |
|-------------------------------------------|------------|
| name that cannot exist, 404               | ENOENT     |
| 401, 403 (key invalid or not permitted)   | EACCES     |
| 202 archived (restore ETA in the log)     | EAGAIN     |
| 429 that outlasted the retries            | EAGAIN     |
| 503 call recording not configured         | ENODATA    |
| 5xx, network, timeout, broken answer      | EIO        |
| a bug of ours (unexpected exception)      | EIO        |
"""

from __future__ import annotations

import errno
import logging

import trio

from amigofs.api import errors as api
from amigofs.fs.wav import UnknownAudioFormat

log = logging.getLogger(__name__)


class FsError(Exception):
    """An errno decided inside the filesystem logic (no such name, not a directory)."""

    def __init__(self, errno_: int, message: str = "") -> None:
        super().__init__(message or errno.errorcode.get(errno_, str(errno_)))
        self.errno = errno_


def to_errno(exc: BaseException, what: str) -> int:
    """The errno for `exc`, logging what a user needs to know about it."""
    if isinstance(exc, FsError):
        return exc.errno
    if isinstance(exc, api.NotFound):
        return errno.ENOENT
    if isinstance(exc, api.AuthError):
        log.warning("%s: %s", what, exc)
        return errno.EACCES
    if isinstance(exc, api.Archived):
        log.warning("%s: %s", what, exc)
        return errno.EAGAIN
    if isinstance(exc, api.RateLimited):
        log.warning("%s: %s", what, exc)
        return errno.EAGAIN
    if isinstance(exc, api.NotConfigured):
        log.error("%s: %s", what, exc)
        return errno.ENODATA
    if isinstance(exc, api.AmigoError | UnknownAudioFormat):
        log.error("%s: %s", what, exc)
        return errno.EIO
    if isinstance(exc, trio.TooSlowError):
        log.error("%s: no answer within the deadline", what)
        return errno.EIO
    log.error("%s: unexpected error", what, exc_info=exc)
    return errno.EIO
