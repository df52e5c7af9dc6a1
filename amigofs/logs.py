"""How every amigofs process logs and starts the Python processes it needs.

One line format, dated (ISO 8601 with the zone) except where systemd's journal dates the
lines itself; the level; quiet HTTP libraries; the log file (mount.log or --log-file),
rotated, with this process its only writer: the processes it starts send their lines
through a pipe that this process writes into the file. And the environment those
children start in, so that none imports a module from the working directory.

At the bottom of the layers (it imports nothing of amigofs), so that a process of any
layer, the mount's or its fetch worker's, sets up its log the same way."""

from __future__ import annotations

import datetime as dt
import errno
import io
import logging
import logging.handlers
import os
import stat
import sys
import threading
from pathlib import Path
from typing import IO, Any

# The level, as the fetch worker finds it: the process that starts it sets it here.
LEVEL_ENV = "AMIGOFS_LOG_LEVEL"
LEVELS = ("debug", "info", "warning", "error")
FORMAT = "amigofs[%(process)d] %(levelname)s %(name)s: %(message)s"
DATED_FORMAT = "%(asctime)s " + FORMAT
# Their debug output repeats ours with full URLs (signed download links);
# amigofs.api logs each request itself, without secrets.
QUIETED = ("httpx", "httpcore", "hpack", "hypercorn")
# A log file is rotated at this size, keeping this many old ones (mount.log.1 ...):
# at most 40 MB, however long the mount runs.
MAX_LOG_BYTES = 10 << 20
OLD_LOGS = 3
# `python -m` puts the working directory first on the module path: a `tomllib.py` or an
# `amigofs/` folder where the user stands would be imported, by root's daemon too.
# PYTHONSAFEPATH (python -P) leaves it out; the children inherit it from here.
SAFE_PATH = {"PYTHONSAFEPATH": "1"}


def shifted_level(level: str, louder: int) -> str:
    """`level` moved `louder` steps towards debug (negative: towards error), as -v and
    -q move it: info with -v is debug, with -q warning; the ends stay where they are."""
    index = LEVELS.index(level) - louder
    return LEVELS[min(max(index, 0), len(LEVELS) - 1)]


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a Python process amigofs starts (`python -m amigofs...`): this
    one's, with the working directory kept off its module path."""
    return {**os.environ, **SAFE_PATH, **extra}


class _Formatter(logging.Formatter):
    """Times as ISO 8601 in the local zone with milliseconds (2026-12-04T23:41:07.123+00:00),
    which sort as text and say which zone; a line relayed from a child is written as it came."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = dt.datetime.fromtimestamp(record.created).astimezone()
        return moment.isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "relayed", False):
            return record.getMessage()
        return super().format(record)


def formatter(*, dated: bool) -> logging.Formatter:
    return _Formatter(DATED_FORMAT if dated else FORMAT)


def under_journal(stream: IO[Any]) -> bool:
    """Whether `stream` is the one systemd connected to its journal (JOURNAL_STREAM names
    its device and inode), which records each line's time itself."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        found = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{found.st_dev}:{found.st_ino}"


# The records a mount logs before it may open its log file (the checks of the server,
# a workspace left out), written there once it does; beyond these, the first are kept.
EARLY_RECORDS = 1000


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """setup_logging's stderr, which log_to_file replaces."""


class _Early(logging.Handler):
    """Keeps the first EARLY_RECORDS records, for log_to_file to write them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < EARLY_RECORDS:
            self.records.append(record)


def setup_logging(level: str = "info", *, log_file_later: bool = False) -> None:
    """This process logs at `level` to stderr, dated unless the journal dates it; with
    `log_file_later`, what it logs until log_to_file is written to the file too."""
    # The fetch worker reads it too, so --debug traces its downloads as well.
    os.environ[LEVEL_ENV] = level
    handler = _Stderr(sys.stderr)
    handler.setFormatter(formatter(dated=not under_journal(sys.stderr)))
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper()))
    root.addHandler(handler)
    if log_file_later:
        root.addHandler(_Early())
    for noisy in QUIETED:
        logging.getLogger(noisy).setLevel(logging.WARNING)


class LogFileError(Exception):
    """The log file cannot be ours to write; the message says why in one line."""


def open_log_file(path: Path) -> int:
    """`path` opened to append, created 0600, never through a symbolic link and only if it
    is a file of this user's: whoever planted a link there would have the mount append to
    a file of their choice. The descriptor is the caller's to close."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW: the last component is a link
            raise LogFileError(
                f"{path} is a symbolic link; amigofs logs only to a file of its own: "
                "remove the link"
            ) from None
        raise LogFileError(f"cannot open log file {path}: {exc.strerror}") from None
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        wrong = "is not a regular file"
    elif found.st_uid != os.geteuid():
        wrong = f"is owned by uid {found.st_uid}, not by this user (uid {os.geteuid()})"
    elif found.st_mode & 0o022:
        # Others could write lines of their own into it.
        wrong = f"is writable by other users (mode {stat.S_IMODE(found.st_mode):o})"
    else:
        os.set_blocking(fd, True)
        return fd
    os.close(fd)
    raise LogFileError(f"log file {path} {wrong}; amigofs logs only to a file of its own")


class LogFile(logging.handlers.RotatingFileHandler):
    """A log file rotated at MAX_LOG_BYTES (OLD_LOGS kept), each opened as open_log_file
    opens it. Once it holds this process's stderr (take_stderr), a rotation moves that too."""

    def __init__(self, path: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
        self._has_stderr = False
        super().__init__(path, maxBytes=max_bytes, backupCount=OLD_LOGS, encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        fd = open_log_file(Path(self.baseFilename))
        return open(fd, "a", encoding="utf-8", errors="backslashreplace")

    def take_stderr(self) -> None:
        """This process's stderr (a traceback, libfuse's own messages) goes to the file too."""
        if self.stream is not None:
            self.stream.flush()
            os.dup2(self.stream.fileno(), 2)
            self._has_stderr = True

    def doRollover(self) -> None:
        super().doRollover()
        if self._has_stderr:
            self.take_stderr()


class _Relay:
    """A pipe the processes this one starts write their stderr to, and the thread that
    writes what comes through it, line by line, into the log file: one writer, so the
    file is rotated in one place and no child keeps writing to a file rotated away."""

    def __init__(self, handler: LogFile) -> None:
        self.handler = handler
        self._read_fd, self.write_fd = os.pipe()
        self._thread = threading.Thread(target=self._run, name="log relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with open(self._read_fd, encoding="utf-8", errors="backslashreplace") as lines:
            for line in lines:
                record = logging.makeLogRecord({"msg": line.rstrip("\n"), "relayed": True})
                self.handler.handle(record)

    def close(self, seconds: float) -> None:
        """Stops taking lines, and writes those the children left in the pipe."""
        os.close(self.write_fd)
        self._thread.join(seconds)


_relay: _Relay | None = None


def log_to_file(path: Path) -> LogFile:
    """From now on this process logs to `path` instead of stderr, and the processes it
    starts with child_stderr() do too. LogFileError if the file cannot be ours."""
    global _relay
    handler = LogFile(path) if _relay is None else _relay.handler
    handler.setFormatter(formatter(dated=True))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Stderr | _Early):
            root.removeHandler(old)
        if isinstance(old, _Early):
            for record in old.records:
                handler.handle(record)
    root.addHandler(handler)
    if _relay is None:
        _relay = _Relay(handler)
    return handler


def child_stderr() -> int | None:
    """The stderr for a process this one starts: the relay into the log file, or None
    (this process's own stderr) when it logs to no file."""
    return _relay.write_fd if _relay is not None else None


def close_log_file(seconds: float = 2.0) -> None:
    """Writes what the children still had to say, and closes the log file."""
    global _relay
    relay, _relay = _relay, None
    if relay is not None:
        relay.close(seconds)
        logging.getLogger().removeHandler(relay.handler)
        relay.handler.close()
