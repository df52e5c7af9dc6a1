"""Holding the API key so that it cannot leak by accident."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx


class KeyFileError(Exception):
    """The key file is missing, empty or readable by others."""


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

    def __repr__(self) -> str:
        return "ApiKey(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the key wherever the pickle goes.
        raise TypeError("an ApiKey cannot be pickled")

    @classmethod
    def from_file(cls, path: Path) -> ApiKey:
        """Reads a key file, refusing one that group or others can read (as ssh does)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise KeyFileError(f"cannot open API key file {path}: {exc.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise KeyFileError(f"API key file {path} is not a regular file")
            if mode & 0o077:
                raise KeyFileError(
                    f"API key file {path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
                )
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
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
