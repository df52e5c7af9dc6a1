"""Holding the API key so that it cannot leak by accident."""

from __future__ import annotations

import hashlib
import os
import pwd
import stat
from pathlib import Path

import httpx

MAX_TRUSTED_FILE = 1 << 20  # a key or a config file; more is a mistake


class TrustedFileError(Exception):
    """A file that decides what the key is or where it goes (the key file, a config
    file) cannot be trusted or read; the message names the path as given and the fix."""


class KeyFileError(TrustedFileError):
    """The key file is missing, empty, not a regular file, or someone else's."""


def read_trusted_file(path: Path, what: str, *, private: bool, instead: str) -> bytes:
    """The contents of a small file that only the user (or root) could have written:
    a regular file owned by the user or root, not writable by group or others, and
    with `private` not readable by them either (as ssh has it for keys). `what` names
    it in messages ("API key file"), `instead` is what to use when it will not do
    ("a key file of your own"). A symbolic link is followed, as the user gave it;
    a FIFO or a device is refused without waiting on it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise TrustedFileError(f"cannot open {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TrustedFileError(f"{what} {path} is not a regular file")
        if st.st_uid not in (os.geteuid(), 0):
            raise TrustedFileError(
                f"{what} {path} is owned by {_user_name(st.st_uid)}, not by you or root; "
                f"use {instead}"
            )
        if private:
            problem, fix, loose = "accessible by", "chmod 600", 0o077
        else:
            problem, fix, loose = "writable by", "chmod go-w", 0o022
        mode = stat.S_IMODE(st.st_mode)
        if mode & loose:
            advice = f"run: {fix} {path}" if _users_own(path, st) else f"use {instead}"
            raise TrustedFileError(
                f"{what} {path} is {problem} group or others (mode {mode:04o}); {advice}"
            )
        data = os.read(fd, MAX_TRUSTED_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_TRUSTED_FILE:
        raise TrustedFileError(f"{what} {path} is larger than {MAX_TRUSTED_FILE >> 10} KiB")
    return data


def _users_own(path: Path, st: os.stat_result) -> bool:
    """Whether to tell the user to chmod `path`: only a file that is plainly theirs
    (their uid and group, named directly, not through a link), never whatever a
    path happened to lead to (a system file such as /etc/shadow: root's, group shadow)."""
    return st.st_uid == os.geteuid() and st.st_gid == os.getegid() and not os.path.islink(path)


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


class ApiKey:
    """The API key. Its repr and str never show the value; only `reveal()` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value or any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("an API key is one line of printable characters without spaces")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def identity(self, base_url: str) -> str:
        """Who lists with this key at this server, as a hash: what a listing kept on
        disk is keyed by. One-way, so the file it is written to says nothing of the key."""
        digest = hashlib.sha256(b"amigofs listing identity\0")
        digest.update(base_url.encode() + b"\0" + self._value.encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return "ApiKey(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the key wherever the pickle goes.
        raise TypeError("an ApiKey cannot be pickled")

    @classmethod
    def from_file(cls, path: Path) -> ApiKey:
        """Reads a key file, refusing one that group or others can read (as ssh does)
        or that someone other than the user or root owns."""
        try:
            data = read_trusted_file(
                path, "API key file", private=True, instead="a key file of your own (mode 0600)"
            )
        except TrustedFileError as exc:
            raise KeyFileError(str(exc)) from None
        try:
            return cls(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise KeyFileError(f"API key file {path} does not hold one API key") from None


class BearerAuth(httpx.Auth):
    """Adds the Authorization header to each request at send time.

    The key lives here rather than in the client's default headers so that it is
    never part of a Request's repr built before sending.
    """

    def __init__(self, key: ApiKey) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        request.headers["Authorization"] = "Bearer " + self._key.reveal()
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"
