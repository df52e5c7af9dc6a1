"""The user.amigo.* extended attributes of call directories and audio files.

Their names are fixed per kind of node and known without loading anything: `ls -l`
asks for attributes of every entry (coreutils >= 9.6 lists their names), and must
cost no request. Only a value is read from the call's metadata (loaded once per
mount, as listing the directory does); an archived call's from its listing, with
the restore time the API gave, and "unknown" for what only its metadata has.
"""

from __future__ import annotations

import datetime as dt
import errno

from amigofs.api import errors as api
from amigofs.api.models import CallSummary
from amigofs.fs.records import CALL, INBOUND, OUTBOUND, CallRecord

XATTR_PREFIX = "user.amigo."
XATTR_PREFIX_BYTES = XATTR_PREFIX.encode()
# The namespaces amigofs has nothing in: no ACLs, no security labels, no trusted
# attributes. A question in one of them is answered "not supported" (EOPNOTSUPP), as a
# filesystem mounted without ACLs or labels answers, not "not set" (ENODATA): coreutils'
# `ls -l` then stops asking for the rest of the mount (it remembers the device per
# run), where ENODATA made it ask three questions of every entry, each a FUSE request
# nothing caches: 24x `ls -f` on a million calls.
UNSUPPORTED_NAMESPACES = (b"security.", b"system.", b"trusted.")


def not_ours_errno(name: bytes) -> int:
    """The answer to a name outside user.amigo.*: not supported in a namespace amigofs
    has nothing in, not set in user.*."""
    return errno.EOPNOTSUPP if name.startswith(UNSUPPORTED_NAMESPACES) else errno.ENODATA
# What a call directory and each of its audio files show, recorded or archived.
CALL_NAMES = (
    "duration_seconds",
    "direction",
    "format",
    "sample_rate",
    "call_start",
    "call_end",
    "tts_provider",
)
# An archived call's have, besides, when the API says it is to be restored. Listed
# only once the mount knows the call is archived: before, its names are a recorded
# call's (most are), and restore_eta is read by its name.
RESTORE_ETA = "restore_eta"
ARCHIVED_NAMES = (*CALL_NAMES, RESTORE_ETA)
UNKNOWN = "unknown"


def call_xattrs(record: CallRecord) -> dict[str, str]:
    """A call directory's attributes (names after user.amigo.)."""
    m = record.metadata
    return {
        "duration_seconds": _number(m.duration_seconds),
        "direction": m.direction,
        "format": f"inbound={m.inbound_format},outbound={m.outbound_format}",
        "sample_rate": f"inbound={m.inbound_sample_rate},outbound={m.outbound_sample_rate}",
        "call_start": _time(m.call_start),
        "call_end": _time(m.call_end),
        "tts_provider": m.tts_provider,
    }


def file_xattrs(record: CallRecord, name: str) -> dict[str, str]:
    """An audio file's attributes: the call's, with its own channel's format and rate."""
    m = record.metadata
    values = call_xattrs(record)
    if name == INBOUND:
        values["format"], values["sample_rate"] = m.inbound_format, str(m.inbound_sample_rate)
    elif name == OUTBOUND:
        values["format"], values["sample_rate"] = m.outbound_format, str(m.outbound_sample_rate)
    elif name == CALL:
        stereo = record.files[CALL].stereo
        values["format"] = "pcm_s16le"
        if stereo is not None:
            values["sample_rate"] = str(stereo.rate)
    return values


def archived_xattrs(summary: CallSummary | None, archived: api.Archived) -> dict[str, str]:
    """An archived call directory's attributes: what its listing says, "unknown" for
    the rest (the names stay those of a recorded call), and when the recording is to
    be restored."""
    values = dict.fromkeys(CALL_NAMES, UNKNOWN)
    if summary is not None:
        if summary.duration_seconds is not None:
            values["duration_seconds"] = _number(summary.duration_seconds)
        if summary.direction is not None:
            values["direction"] = summary.direction
        if summary.started_at is not None:
            values["call_start"] = _time(summary.started_at)
            if summary.duration_seconds is not None:
                end = summary.started_at + dt.timedelta(seconds=summary.duration_seconds)
                values["call_end"] = _time(end)
    values[RESTORE_ETA] = (
        _time(archived.restore_eta) if archived.restore_eta is not None else UNKNOWN
    )
    return values


def full_names(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(XATTR_PREFIX + name for name in names)


def value(values: dict[str, str], name: str) -> bytes | None:
    """The value of one attribute by its full name, as the kernel asks for it."""
    found = values.get(name.removeprefix(XATTR_PREFIX)) if name.startswith(XATTR_PREFIX) else None
    return None if found is None else found.encode()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _time(when: dt.datetime) -> str:
    # ISO 8601 in UTC, to the millisecond the API gives.
    when = when.astimezone(dt.UTC) if when.tzinfo is not None else when
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
