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


# In order: the first class that matches decides; None: not worth a log line (a
# program asking for a name that does not exist is routine).
_ERRNOS: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], int, int | None], ...
] = (
    (api.NotFound, errno.ENOENT, None),
    (api.AuthError, errno.EACCES, logging.WARNING),
    ((api.Archived, api.RateLimited), errno.EAGAIN, logging.WARNING),
    (api.NotConfigured, errno.ENODATA, logging.ERROR),
    ((api.AmigoError, UnknownAudioFormat), errno.EIO, logging.ERROR),
)


def to_errno(exc: BaseException, what: str) -> int:
    """The errno for `exc`, logging what a user needs to know about it."""
    if isinstance(exc, FsError):
        return exc.errno
    for kinds, number, level in _ERRNOS:
        if isinstance(exc, kinds):
            if level is not None:
                log.log(level, "%s: %s", what, exc)
            return number
    if isinstance(exc, trio.TooSlowError):
        log.error("%s: no answer within the deadline", what)
        return errno.EIO
    log.error("%s: unexpected error", what, exc_info=exc)
    return errno.EIO
