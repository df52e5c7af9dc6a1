"""Listings and call records kept on disk, so a remount shows the tree at once.

Documents are stored in the API's own JSON shapes under ``CACHE_DIR/meta/`` and
parsed again, with full validation, when read back: a damaged or tampered file
is just a cache miss. Written atomically (temporary file, then rename), 0600.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAX_DOCUMENT = 64 << 20


class MetaStore:
    def __init__(self, root: Path) -> None:
        self._root = root / "meta"

    def _path(self, *parts: str) -> Path:
        # Every part is a validated identifier or a fixed name: no '/' or '..'.
        return self._root.joinpath(*parts[:-1], parts[-1] + ".json")

    def load(self, *parts: str) -> object | None:
        path = self._path(*parts)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_DOCUMENT + 1)
            if len(raw) > MAX_DOCUMENT:
                return None
            document: object = json.loads(raw)
            return document
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("metadata cache: ignoring %s: %s", path, exc)
            return None

    def save(self, document: object, *parts: str) -> None:
        path = self._path(*parts)
        # Unique per writer (saves run in threads too), so two never share a temp file.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump(document, f, separators=(",", ":"))
            os.replace(tmp, path)
        except OSError as exc:
            # A full or read-only cache disk must not break the mount.
            log.warning("metadata cache: cannot write %s: %s", path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
