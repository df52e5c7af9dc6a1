"""Listings and call records kept on disk, so a remount shows the tree at once.

Documents are stored in the API's own JSON shapes under ``CACHE_DIR/meta/``,
each file a header line, ``amigofs-meta <version> <sha256 of the rest>``, then
the JSON. What is read back must match its checksum and parse again, with full
validation, into what the caller wants: anything else (edited, truncated,
garbage, an older format, a symlink, a file not ours) is dropped, with one
warning naming the file, and the caller fetches it from the API again. That
covers damage; the cache directory's ownership and modes (see
`amigofs.cache.cache_dir`) keep other users out of it.

Every directory and file is opened relative to a descriptor of ``meta/`` with
O_NOFOLLOW; a document is written to a new temporary name (O_EXCL), 0600, then
renamed over the old one, so a reader sees the old document or the new one.
``meta/`` removed under the mount (with the whole cache directory, by a cleaner) is
made again, with the checks it had at mount, by the next save.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from amigofs.api.errors import ValidationError
from amigofs.cache.cache_dir import (
    UnsafeCacheDir,
    open_file,
    open_root,
    open_subdir,
    open_subdirs,
    removed,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_DOCUMENT = 64 << 20
MAGIC = b"amigofs-meta"
# 1 was bare JSON, without a checksum.
VERSION = b"2"
_HEADER_MAX = 128

# What a parser may raise for a document it cannot take.
_INVALID = (ValueError, TypeError, KeyError, RecursionError, ValidationError)


class MetaStore:
    """Documents by name (`parts`: validated identifiers or fixed names, no '/' or
    '..'), as CACHE_DIR/meta/<parts[0]>/.../<parts[-1]>.json."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._reopening = threading.Lock()
        self._where = os.path.join(os.path.abspath(root), "meta")
        self._fd = self._open()

    def _open(self) -> int:
        root_fd = open_root(self._root)
        try:
            return open_subdir(root_fd, "meta", self._where)
        finally:
            os.close(root_fd)

    def _made_again(self) -> int:
        """meta/'s descriptor, opened again (and made, with the cache directory, as at
        mount) if it was removed under the mount: saves go on, into the new one."""
        with self._reopening:  # saves run in threads: one of them makes it again
            if removed(self._fd):
                log.warning(
                    "metadata cache: %s was removed while mounted; making it again", self._where
                )
                fd = self._open()
                os.close(self._fd)
                self._fd = fd
            return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self._where, *parts[:-1], parts[-1] + ".json")

    def load(self, parse: Callable[[object], T], *parts: str) -> T | None:
        """The document saved under `parts`, made into what the caller wants by
        `parse` (which raises ValueError, TypeError, KeyError or ValidationError
        for one it cannot take); None when there is none or it was dropped."""
        path = self._path(parts)
        try:
            dir_fd = open_subdirs(self._fd, parts[:-1], self._where, create=False)
        except FileNotFoundError:
            return None
        except (OSError, UnsafeCacheDir) as exc:
            log.warning("metadata cache: cannot read %s: %s", path, exc)
            return None
        try:
            name = parts[-1] + ".json"
            try:
                fd = open_file(dir_fd, name, os.O_RDONLY, path)
            except FileNotFoundError:
                return None
            except UnsafeCacheDir as exc:
                self._drop(dir_fd, name, path, str(exc))
                return None
            with open(fd, "rb") as f:
                raw = f.read(_HEADER_MAX + MAX_DOCUMENT + 1)
            try:
                return parse(_decode(raw))
            except _INVALID as exc:
                self._drop(dir_fd, name, path, str(exc) or type(exc).__name__)
                return None
        except OSError as exc:
            log.warning("metadata cache: cannot read %s: %s", path, exc)
            return None
        finally:
            os.close(dir_fd)

    def save(self, document: object, *parts: str) -> None:
        path = self._path(parts)
        body = json.dumps(document, separators=(",", ":")).encode()
        name = parts[-1] + ".json"
        # Unique to this writer (saves run in threads too); O_EXCL makes sure.
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            dir_fd = open_subdirs(self._made_again(), parts[:-1], self._where)
        except (OSError, UnsafeCacheDir) as exc:
            # A full or read-only cache disk must not break the mount.
            log.warning("metadata cache: cannot write %s: %s", path, exc)
            return
        try:
            fd = open_file(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, path + ".tmp")
            try:
                with open(fd, "wb") as f:
                    f.write(_header(body) + body)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
        except (OSError, UnsafeCacheDir) as exc:
            log.warning("metadata cache: cannot write %s: %s", path, exc)
        finally:
            os.close(dir_fd)

    def discard(self, *parts: str) -> None:
        """Removes the document saved under `parts`, if any."""
        try:
            dir_fd = open_subdirs(self._fd, parts[:-1], self._where, create=False)
        except (OSError, UnsafeCacheDir):
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(parts[-1] + ".json", dir_fd=dir_fd)
        except OSError as exc:
            log.warning("metadata cache: cannot remove %s: %s", self._path(parts), exc)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _drop(dir_fd: int, name: str, path: str, reason: str) -> None:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            reason += f"; cannot remove it: {exc.strerror}"
        log.warning("metadata cache: dropped %s (%s); fetching it again", path, reason)


def _header(body: bytes) -> bytes:
    return b"%s %s %s\n" % (MAGIC, VERSION, hashlib.sha256(body).hexdigest().encode())


def _decode(raw: bytes) -> object:
    """The JSON document of a file's content; ValueError saying why there is none."""
    header, newline, body = raw.partition(b"\n")
    fields = header.split(b" ")
    if not newline or len(header) > _HEADER_MAX or len(fields) != 3 or fields[0] != MAGIC:
        raise ValueError("not a metadata cache file")
    if fields[1] != VERSION:
        raise ValueError(f"format {fields[1].decode(errors='replace')}, not {VERSION.decode()}")
    if len(body) > MAX_DOCUMENT:
        raise ValueError(f"larger than {MAX_DOCUMENT} bytes")
    if not hmac.compare_digest(hashlib.sha256(body).hexdigest().encode(), fields[2]):
        raise ValueError("checksum mismatch: damaged or edited")
    document: object = json.loads(body)
    return document
