"""Listings and call records kept on disk, so a remount shows the tree at once.

Documents (the API's own JSON shapes) live in ONE SQLite database,
``CACHE_DIR/meta.sqlite``: a row per document, found by a 64-bit hash of its
name (its `parts` joined by '/'), holding the JSON compressed with zlib (about
0.4 of its size for a call record) and a checksum of the name and the JSON.
What is read back must match its checksum and parse again, with full validation,
into what the caller wants: anything else (edited, truncated, garbage, a row of
another name) is dropped, with one warning naming the document, and the caller
fetches it from the API again. A database file that is damaged, of another
format, a symbolic link or not this user's is set aside (removed, with its -wal
and -shm) and made again with one warning; one SQLite cannot open at all (a lock
held past LOCK_WAIT) gives way to a database in memory for the mount. The cache
directory's checks (`amigofs.cache.cache_dir`) keep other users out; the file
is made 0600 in it and checked with O_NOFOLLOW and fstat before SQLite opens it.

Writes are cheap: no fsync per record (WAL, synchronous=NORMAL), and a burst
of them (a walk loading records ahead, a listing) shares one transaction: a
write is committed at once if none was for COMMIT_AFTER seconds, else with the
rest of its batch when the batch is full (COMMIT_EVERY) or that long after the
commit before. A crash or a kill loses at most the writes of the last
COMMIT_AFTER seconds; a power cut, what was committed since the last checkpoint
too. Either way only records are lost, and they are fetched again.

The row id is the document's place in least-recently-used order: a save gives
it a new, highest id, and a load moves a row that sits in the older half of the
ids, so `shrink` evicts the lowest ids, whole pages of them, and an incremental
vacuum gives the pages back to the file system.

Callers use it from the trio thread (records) and from worker threads (the root's
listing, the start-up checks): one connection, serialised by a lock.

The earlier layout, a file per document under ``CACHE_DIR/meta/``, is removed
when the store opens, in a background thread (it may hold 10^5 files).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from amigofs.api.errors import ValidationError
from amigofs.cache.cache_dir import UnsafeCacheDir, open_file, open_root, removed

log = logging.getLogger(__name__)

T = TypeVar("T")

NAME = "meta.sqlite"
FORMAT = "amigofs-meta 3"
# The layout before this one: a file per document (format 2, a checksum header line).
OLD_DIR = "meta"
MAX_DOCUMENT = 64 << 20
# A batch of writes is committed when it holds this many, or this long after the last
# commit: short, as a mount killed (kill -9, or a second signal) loses the batch.
COMMIT_EVERY = 256
COMMIT_AFTER = 0.05
# How long SQLite waits on a lock another process holds (an `sqlite3` shell).
LOCK_WAIT = 2.0
# The WAL is copied into the database when it holds this much, and cut back to it.
WAL_LIMIT = 256 << 10  # it counts toward --cache-size (16M at least)
# What a row costs beyond its body, for shrink's first guess (measured: ~60 bytes).
ROW_OVERHEAD = 64
# Rounds of eviction in one shrink, each guessing again from what the last one freed.
SHRINK_ROUNDS = 8

_now = time.monotonic  # tests give the store a clock of their own

_SUFFIXES = ("", "-wal", "-shm")
_RAW, _ZLIB = b"\x00", b"\x01"

# What a parser may raise for a document it cannot take.
_INVALID = (ValueError, TypeError, KeyError, RecursionError, ValidationError)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS format (value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,      -- least recently used first
    key INTEGER NOT NULL UNIQUE, -- a hash of the document's name
    digest BLOB NOT NULL,        -- of the name and the JSON
    body BLOB NOT NULL           -- a byte saying how it is stored, then the JSON
);
"""


class _Damaged(Exception):
    """The database file is not one to use: it is set aside and made again."""


def _name(parts: tuple[str, ...]) -> str:
    return "/".join(parts)


def _key(name: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


def _digest(name: str, raw: bytes) -> bytes:
    digest = hashlib.blake2b(name.encode(), digest_size=16, person=b"amigofs-meta")
    digest.update(b"\0")
    digest.update(raw)
    return digest.digest()


def _encode(raw: bytes) -> bytes:
    packed = zlib.compress(raw, 6)
    return _ZLIB + packed if len(packed) < len(raw) else _RAW + raw


def _decode(name: str, digest: object, body: object) -> object:
    """The JSON document of a row; ValueError saying why there is none."""
    if not isinstance(body, bytes) or not isinstance(digest, bytes) or not body:
        raise ValueError("not a stored document")
    how, payload = body[:1], body[1:]
    if how == _ZLIB:
        unpack = zlib.decompressobj()
        try:
            raw = unpack.decompress(payload, MAX_DOCUMENT + 1)
        except zlib.error as exc:
            raise ValueError(f"not zlib: {exc}") from None
        if not unpack.eof:
            raise ValueError(f"truncated, or larger than {MAX_DOCUMENT} bytes")
    elif how == _RAW:
        raw = payload
    else:
        raise ValueError("stored in an unknown way")
    if not hmac.compare_digest(_digest(name, raw), digest):
        raise ValueError("checksum mismatch: damaged or edited")
    document: object = json.loads(raw)
    return document


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite found the file damaged or not a database (not a lock, a full disk,
    an I/O error: those say nothing wrong of the file)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return type(exc) is sqlite3.DatabaseError
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _check_file(fd: int, path: str) -> None:
    """Refuses a database file shorter than its header says (SQLite may open one cut
    short and serve what is left) or not SQLite's."""
    size = os.fstat(fd).st_size
    header = os.pread(fd, 100, 0)
    if not header:
        return  # new: made below
    if len(header) < 100 or header[:16] != b"SQLite format 3\0":
        raise _Damaged(f"{path} is not an SQLite database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if size < page_size * pages:
        raise _Damaged(f"{path} is cut short: {size} bytes of {page_size * pages}")


class MetaStore:
    """Documents by name (`parts`: validated identifiers or fixed names), in
    CACHE_DIR/meta.sqlite."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self.path = os.path.join(os.path.abspath(root), NAME)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._root_fd = -1
        self._writes = 0  # in the open transaction
        self._committed = _now()  # when it last committed
        self._timer: threading.Timer | None = None
        self._next_id = 1
        self._oldest_id = 1
        self._warned = ""  # the last warning of a failing write, not repeated
        # The removal of the older layout, while it runs (tests join it).
        self.cleaning: threading.Thread | None = None
        # The WAL's copy into the database, while it runs (tests join it).
        self.checkpointing: threading.Thread | None = None
        self._open()

    # --- open and close --------------------------------------------------------------

    def _open(self) -> None:
        """Opens the cache directory (UnsafeCacheDir if it is not ours: the mount is
        refused) and the database in it, set aside and made again if bad."""
        self._root_fd = open_root(self._root)
        self._remove_old_layout()
        try:
            self._connect()
        except (_Damaged, UnsafeCacheDir, sqlite3.DatabaseError, ValueError) as exc:
            if isinstance(exc, sqlite3.OperationalError):
                self._to_memory(str(exc))
                return
            self._make_again(str(exc))
        except OSError as exc:
            self._to_memory(str(exc))

    def _connect(self) -> None:
        self._close_conn()
        for suffix in _SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                fd = open_file(self._root_fd, NAME + suffix, os.O_RDONLY, self.path + suffix)
                try:
                    if not suffix:
                        _check_file(fd, self.path)
                finally:
                    os.close(fd)
        with contextlib.suppress(FileExistsError):
            # Made 0600 by us before SQLite opens it (it gives -wal and -shm its mode).
            os.close(
                open_file(self._root_fd, NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.path)
            )
        conn = sqlite3.connect(
            self.path, timeout=LOCK_WAIT, check_same_thread=False, isolation_level=None
        )
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Both only take effect on a new database, before its first table.
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a cache: a crash may lose the last batch
        # Checkpoints (the only fsyncs) run in a thread of their own, never in a commit
        # on the trio thread: see _checkpoint_soon.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        conn.executescript(_SCHEMA)
        found = [r[0] for r in conn.execute("SELECT value FROM format")]
        if not found:
            conn.execute("INSERT INTO format VALUES (?)", (FORMAT,))
        elif found != [FORMAT]:
            raise _Damaged(f"format {found!r}, not {FORMAT!r}")
        # Two queries: SQLite finds min() or max() alone at one end of the ids, but
        # both in one query by reading every row (a million at a million records).
        (low,) = conn.execute("SELECT min(id) FROM documents").fetchone()
        (high,) = conn.execute("SELECT max(id) FROM documents").fetchone()
        self._oldest_id = int(low or 1)
        self._next_id = int(high or 0) + 1

    def _to_memory(self, reason: str) -> None:
        log.warning(
            "metadata cache %s: %s; keeping records in memory until the mount ends",
            self.path,
            reason,
        )
        self._close_conn()
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._prepare(conn)
        self._conn = conn

    def _make_again(self, reason: str) -> None:
        """Sets the database aside (removes it) and makes a new one, or keeps the
        records in memory if that cannot be."""
        log.warning("metadata cache %s is unusable (%s); making it again", self.path, reason)
        self._set_aside()
        try:
            self._connect()
        except (_Damaged, UnsafeCacheDir, sqlite3.Error, ValueError, OSError) as exc:
            self._to_memory(str(exc))

    def _set_aside(self) -> None:
        self._close_conn()
        for suffix in _SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(NAME + suffix, dir_fd=self._root_fd)

    def _remove_old_layout(self) -> None:
        try:
            st = os.stat(OLD_DIR, dir_fd=self._root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        root_fd = os.dup(self._root_fd)

        def remove() -> None:
            try:
                # fd-based: never follows a link out of the cache directory.
                shutil.rmtree(OLD_DIR, dir_fd=root_fd)
                log.info("metadata cache: removed %s of an older cache layout", OLD_DIR)
            except OSError as exc:
                log.warning("metadata cache: cannot remove the older %s/: %s", OLD_DIR, exc)
            finally:
                os.close(root_fd)

        self.cleaning = threading.Thread(target=remove, name="amigofs-old-meta", daemon=True)
        self.cleaning.start()

    def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self._writes = 0

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._close_conn()
            if self._root_fd >= 0:
                os.close(self._root_fd)
                self._root_fd = -1

    # --- the connection, checked -------------------------------------------------------

    def _usable(self) -> sqlite3.Connection | None:
        """The connection; the database made again first if the cache directory was
        removed under the mount (a cleaner's rm -rf). Called with the lock held."""
        if self._root_fd < 0:
            return None
        if removed(self._root_fd):
            log.warning("metadata cache: %s was removed while mounted; making it again", self.path)
            self._close_conn()
            os.close(self._root_fd)
            self._root_fd = -1
            try:
                self._open()
            except (OSError, UnsafeCacheDir) as exc:
                self._to_memory(str(exc))
        return self._conn

    def _failed(self, exc: sqlite3.Error, doing: str) -> None:
        """A write or read that SQLite refused: damage sets the database aside and makes
        it again; a full disk or a lock costs what the batch held, with one warning."""
        if self._conn is not None and self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        self._writes = 0
        if not is_damage(exc):
            message = f"metadata cache {self.path}: cannot {doing}: {exc}"
            if message != self._warned:
                log.warning("%s", message)
                self._warned = message
            return
        self._make_again(str(exc))

    def _wrote(self, conn: sqlite3.Connection) -> None:
        """Counts a write of the open batch; commits it now if it is full or the last
        commit was a while ago (a write alone), else soon, with the writes to come."""
        self._writes += 1
        wait = self._committed + COMMIT_AFTER - _now()
        if self._writes >= COMMIT_EVERY or wait <= 0:
            self._commit(conn)
        elif self._timer is None:
            self._timer = threading.Timer(wait, self.flush)
            self._timer.daemon = True
            self._timer.start()

    def _begin(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            conn.execute("BEGIN")

    def _commit(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("COMMIT")
            self._checkpoint_soon()
        self._writes = 0
        self._committed = _now()
        self._warned = ""

    def _checkpoint_soon(self) -> None:
        """Copies the WAL into the database, in a thread with a connection of its own,
        once it holds WAL_LIMIT: the WAL counts toward --cache-size, and the copy's
        fsyncs must not hold up the commit (on the trio thread) or the lock."""
        if self.checkpointing is not None and self.checkpointing.is_alive():
            return
        try:
            size = os.stat(NAME + "-wal", dir_fd=self._root_fd, follow_symlinks=False).st_size
        except OSError:
            return  # in memory, or gone with the directory
        if size < WAL_LIMIT:
            return

        def checkpoint(path: str) -> None:
            try:
                with contextlib.closing(sqlite3.connect(path, timeout=LOCK_WAIT)) as conn:
                    # PASSIVE: never waits on the writer; the next write starts the WAL
                    # again from its beginning (cut to WAL_LIMIT) once all of it is copied.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                log.debug("metadata cache %s: checkpoint failed: %s", path, exc)

        self.checkpointing = threading.Thread(
            target=checkpoint, args=(self.path,), name="amigofs-meta-checkpoint", daemon=True
        )
        self.checkpointing.start()

    def flush(self) -> None:
        """Commits the writes of the open batch (the timer's work; also for tests)."""
        with self._lock:
            timer, self._timer = self._timer, None
            if timer is not None and timer is not threading.current_thread():
                timer.cancel()
            conn = self._conn
            if conn is None:
                return
            try:
                self._commit(conn)
            except sqlite3.Error as exc:
                self._failed(exc, "write")

    # --- documents ---------------------------------------------------------------------

    def load(self, parse: Callable[[object], T], *parts: str) -> T | None:
        """The document saved under `parts`, made into what the caller wants by
        `parse` (which raises ValueError, TypeError, KeyError or ValidationError
        for one it cannot take); None when there is none or it was dropped."""
        name = _name(parts)
        key = _key(name)
        with self._lock:
            conn = self._usable()
            if conn is None:
                return None
            try:
                row = conn.execute(
                    "SELECT id, CAST(digest AS BLOB), CAST(body AS BLOB) FROM documents WHERE key = ?",
                    (key,),
                ).fetchone()
                if row is None:
                    return None
                row_id, digest, body = row
                try:
                    document = parse(_decode(name, digest, body))
                except _INVALID as exc:
                    self._drop(key, name, str(exc) or type(exc).__name__)
                    return None
                if row_id < (self._oldest_id + self._next_id) // 2:
                    # Used again: out of the older half, which shrink evicts first.
                    self._write(
                        f"write {name}",
                        "UPDATE documents SET id = ? WHERE id = ?",
                        (row_id,),
                        new_id=True,
                    )
                return document
            except sqlite3.Error as exc:
                self._failed(exc, f"read {name}")
                return None

    def save(self, document: object, *parts: str) -> None:
        name = _name(parts)
        raw = json.dumps(document, separators=(",", ":")).encode()
        if len(raw) > MAX_DOCUMENT:
            log.warning("metadata cache: %s not kept: larger than %d bytes", name, MAX_DOCUMENT)
            return
        # REPLACE: the old row goes, the new one has the newest id.
        self._write(
            f"write {name}",
            "INSERT OR REPLACE INTO documents (id, key, digest, body) VALUES (?, ?, ?, ?)",
            (_key(name), _digest(name, raw), _encode(raw)),
            new_id=True,
        )

    def discard(self, *parts: str) -> None:
        """Removes the document saved under `parts`, if any."""
        name = _name(parts)
        self._write(f"remove {name}", "DELETE FROM documents WHERE key = ?", (_key(name),))

    def _write(
        self, doing: str, sql: str, params: tuple[object, ...], *, new_id: bool = False
    ) -> None:
        """Runs `sql` in the open batch; with `new_id`, the newest id is its first
        parameter (the row becomes the most recently used)."""
        with self._lock:
            conn = self._usable()
            if conn is None:
                return
            try:
                self._begin(conn)
                conn.execute(sql, (self._next_id, *params) if new_id else params)
                if new_id:
                    self._next_id += 1
                self._wrote(conn)
            except sqlite3.Error as exc:
                self._failed(exc, doing)

    def _drop(self, key: int, name: str, reason: str) -> None:
        self._write(f"remove {name}", "DELETE FROM documents WHERE key = ?", (key,))
        log.warning(
            "metadata cache: dropped %s from %s (%s); fetching it again", name, self.path, reason
        )

    # --- the disk budget ---------------------------------------------------------------

    def disk_bytes(self) -> int:
        """What the database takes on disk: its file, -wal and -shm."""
        total = 0
        with self._lock:
            if self._root_fd < 0:
                return 0
            for suffix in _SUFFIXES:
                with contextlib.suppress(OSError):
                    st = os.stat(NAME + suffix, dir_fd=self._root_fd, follow_symlinks=False)
                    size = max(st.st_size, st.st_blocks * 512)
                    # The WAL at the size it may reach between checkpoints: a save must
                    # not take the cache back over its budget.
                    total += max(size, WAL_LIMIT) if suffix == "-wal" else size
        return total

    def shrink(self, nbytes: int) -> int:
        """Evicts the least recently used documents until the files are `nbytes`
        smaller (or empty); returns the bytes freed on disk."""
        if nbytes <= 0:
            return 0
        with self._lock:
            conn = self._usable()
            if conn is None:
                return 0
            before = self.disk_bytes()
            try:
                self._commit(conn)
                for round_ in range(SHRINK_ROUNDS):
                    # Free pages (of the evicted, and of rows replaced) back to the file
                    # system; executescript steps the pragma to its end (execute: one page).
                    conn.executescript("PRAGMA incremental_vacuum;")
                    if self.checkpointing is not None:
                        self.checkpointing.join(LOCK_WAIT)
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # the WAL, cut
                    freed = before - self.disk_bytes()
                    # Partly emptied pages free less than the rows held: another round.
                    if freed >= nbytes or round_ == SHRINK_ROUNDS - 1:
                        break
                    if self._evict(conn, nbytes - freed) is None:
                        break
            except sqlite3.Error as exc:
                self._failed(exc, "shrink")
            return max(before - self.disk_bytes(), 0)

    def _evict(self, conn: sqlite3.Connection, nbytes: int) -> int | None:
        """Deletes the oldest documents, about `nbytes` of them (committed); the last id
        deleted, None if none was left."""
        estimate = 0
        last: int | None = None
        oldest = conn.execute("SELECT id, length(body) FROM documents ORDER BY id")
        try:
            while estimate < nbytes and (rows := oldest.fetchmany(256)):
                for row_id, size in rows:
                    last = int(row_id)
                    estimate += int(size) + ROW_OVERHEAD
                    if estimate >= nbytes:
                        break
        finally:
            oldest.close()
        if last is None:
            return None
        conn.execute("DELETE FROM documents WHERE id <= ?", (last,))
        self._oldest_id = last + 1
        return last
