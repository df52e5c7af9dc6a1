"""The block files' index on disk (CACHE_DIR/blocks.sqlite): one row per block file,
what it takes on disk and when it was last used, so that a mount knows what the
cache holds and what to evict first without walking the cache at start, and without
keeping an entry in memory for every block file.

A row is (file hash, block index, bytes on disk, last use, fetched ahead and not read
yet); a running total of the rows' bytes is kept by triggers in the same transaction
as the rows, so it never disagrees with them. Last use is a counter, not a clock:
it only orders blocks, and survives a remount as it was.

Writes are coalesced and batched: the trio thread records what happened in dicts
(a block's last use many times over is one update) and `flush` writes them in one
transaction, every FLUSH_OPS changes or FLUSH_SECONDS, before eviction reads the
order, and at close. Reads only touch: a block's last use is kept in memory and
written with the next batch (blocks stored, found or lost, an eviction, unmount),
so a re-read of cached files writes nothing while it runs and costs a dict entry
per block read (it wrote every FLUSH_SECONDS, and read the clock per block); the
touches alone are written only once TOUCHES_HELD of them are held. A crash loses
the tail: a block file without a row (written just before), a row without a file
(evicted just before), the order of the last reads. All are tolerated: a block
file is found by its path when a read needs it (`DiskCache`) and gets its row then,
and checked against its CRC before it is served; a row whose file is gone is
evicted as any other, its unlink finding nothing; eviction's order is a little off.

On the trio thread only, but for `open` and `close` (blocking: a thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Generator
from pathlib import Path

from amigofs.cache.block_format import BLOCKS_DIR
from amigofs.cache.blocks import Where

log = logging.getLogger(__name__)

NAME = "blocks.sqlite"
SUFFIXES = ("", "-wal", "-shm")
IN_MEMORY = ":memory:"  # sqlite3's name for a database of this connection alone
FLUSH_OPS = 2048  # changes held before they are written
FLUSH_SECONDS = 5.0  # and how long at most
# Blocks whose last use is held in memory before it is written on its own (a dict
# entry each, about 150 bytes: 16K blocks of 256 KiB are 4 GiB read).
TOUCHES_HELD = 16384
_FORMAT = 1
# Its WAL counts toward --cache-size (16M at least): a quarter of a MiB at most.
WAL_PAGES = 64

_SCHEMA = f"""
PRAGMA user_version = {_FORMAT};
CREATE TABLE IF NOT EXISTS blocks (
    file BLOB NOT NULL,
    idx INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    used INTEGER NOT NULL,
    ahead INTEGER NOT NULL,
    PRIMARY KEY (file, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_use ON blocks (ahead, used);
CREATE TABLE IF NOT EXISTS total (
    one INTEGER PRIMARY KEY CHECK (one = 0),
    bytes INTEGER NOT NULL,
    clock INTEGER NOT NULL
);
INSERT OR IGNORE INTO total VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS blocks_in AFTER INSERT ON blocks
    BEGIN UPDATE total SET bytes = bytes + new.bytes; END;
CREATE TRIGGER IF NOT EXISTS blocks_out AFTER DELETE ON blocks
    BEGIN UPDATE total SET bytes = bytes - old.bytes; END;
CREATE TRIGGER IF NOT EXISTS blocks_resized AFTER UPDATE OF bytes ON blocks
    BEGIN UPDATE total SET bytes = bytes - old.bytes + new.bytes; END;
"""

_UPSERT = (
    "INSERT INTO blocks VALUES (?, ?, ?, ?, ?) ON CONFLICT (file, idx) DO UPDATE"
    " SET bytes = excluded.bytes, used = excluded.used, ahead = excluded.ahead"
)
# Its row kept if it has one (and its bytes, counted), else made: used now either way.
_FOUND = (
    "INSERT INTO blocks VALUES (?, ?, ?, ?, 0) ON CONFLICT (file, idx) DO UPDATE"
    " SET used = excluded.used, ahead = 0"
)
_TOUCH = "UPDATE blocks SET used = ?, ahead = 0 WHERE file = ? AND idx = ?"
_DELETE = "DELETE FROM blocks WHERE file = ? AND idx = ?"

# What happened to a block since the last flush: stored (bytes, ahead), found on disk
# (bytes), or lost (None).
_Stored = tuple[int, bool]


def _row_key(where: Where) -> tuple[bytes, int]:
    # The relative dir ends in the file's hash (block_format's layout).
    return bytes.fromhex(where[0].rsplit("/", 1)[-1]), where[1]


def _where(file: bytes, index: int) -> Where:
    named = file.hex()
    return f"{BLOCKS_DIR}/{named[:2]}/{named}", index


class BlockIndex:
    """Block files' bytes and use order, in SQLite (see the module's docstring)."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / NAME
        self._conn: sqlite3.Connection | None = None
        self._clock = 0
        self._total = 0
        self._stored: dict[Where, _Stored] = {}
        self._found: dict[Where, int] = {}
        self._lost: set[Where] = set()
        self._used: dict[Where, int] = {}
        self._flushed_at = time.monotonic()
        self._failed = False  # a write failed: said once, not for every flush

    # --- start and stop (blocking) ----------------------------------------------------

    def open(self) -> int:
        """Opens the index (a damaged one is set aside, and a new one started: its block
        files are then found as reads need them; one that cannot be made is kept in
        memory, for this mount's blocks); the bytes its rows count."""
        try:
            self._connect(str(self.path))
        except (sqlite3.Error, ValueError, OSError) as exc:
            log.warning("block index %s is unusable (%s); starting a new one", self.path, exc)
            self.close(flush=False)
            try:
                for suffix in SUFFIXES:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")
                self._connect(str(self.path))
            except (sqlite3.Error, ValueError, OSError) as again:
                log.warning("block index %s: %s; kept in memory until unmounted", self.path, again)
                self.close(flush=False)
                self._connect(IN_MEMORY)
        return self._total

    def _connect(self, path: str) -> None:
        if path != IN_MEMORY:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                    raise ValueError("not a regular file of this user's")
        old_umask = os.umask(0o077)  # the file is this user's alone, as the directory
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        finally:
            os.umask(old_umask)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a cache: a crash may lose the tail
        # Its files count toward --cache-size: a small WAL, cut back after a checkpoint.
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version not in (0, _FORMAT):
            raise ValueError(f"format {version}, not {_FORMAT}")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT bytes, clock FROM total").fetchone()
        self._total, self._clock = int(row[0]), int(row[1])

    def reopen(self, cache_dir: Path) -> None:
        """The cache directory was made again: a new, empty index in it (what was
        pending is of files gone with the old directory)."""
        self.close(flush=False)
        self.path = cache_dir / NAME
        self._forget_pending()
        try:
            self.open()
        except (sqlite3.Error, ValueError, OSError) as exc:
            log.warning("block index %s cannot be made again: %s", self.path, exc)
            self._conn = None

    def close(self, *, flush: bool = True) -> None:
        if flush:
            self.flush()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # --- what happened (the BlockTable tells) -------------------------------------------

    def stored(self, where: Where, nbytes: int, *, ahead: bool) -> None:
        self._lost.discard(where)
        self._found.pop(where, None)
        self._used.pop(where, None)
        self._stored[where] = (nbytes, ahead)

    def found(self, where: Where, nbytes: int) -> None:
        """A block file found on disk, perhaps without its row (a crash)."""
        if where not in self._stored:
            self._found[where] = nbytes
        self.served(where)

    def lost(self, where: Where) -> None:
        self._stored.pop(where, None)
        self._found.pop(where, None)
        self._used.pop(where, None)
        self._lost.add(where)

    def served(self, where: Where) -> bool:
        """A read copied from the block's file: its last use, held until the next batch
        (on every block of every read: no clock, no write). Whether the touches held
        are now to be written (TOUCHES_HELD of them)."""
        if self._stored:
            stored = self._stored.get(where)
            if stored is not None and stored[1]:
                self._stored[where] = (stored[0], False)
        self._clock += 1
        used = self._used
        used[where] = self._clock
        return len(used) >= TOUCHES_HELD

    def due(self) -> bool:
        """Whether the changes held (blocks stored, found, lost) are to be written now;
        touches ride with them and do not count."""
        pending = len(self._stored) + len(self._found) + len(self._lost)
        return pending >= FLUSH_OPS or (
            pending > 0 and time.monotonic() - self._flushed_at >= FLUSH_SECONDS
        )

    def _forget_pending(self) -> None:
        self._stored.clear()
        self._found.clear()
        self._lost.clear()
        self._used.clear()

    # --- writing and reading ----------------------------------------------------------

    def flush(self) -> int:
        """Writes what happened in one transaction; the bytes the rows now count."""
        self._flushed_at = time.monotonic()
        conn = self._conn
        if conn is None:
            self._forget_pending()
            return self._total
        if not (self._stored or self._found or self._lost or self._used):
            return self._total
        used = self._used
        stored = [
            (*_row_key(w), nbytes, used.get(w, self._clock), int(ahead))
            for w, (nbytes, ahead) in self._stored.items()
        ]
        found = [
            (*_row_key(w), nbytes, used.get(w, self._clock)) for w, nbytes in self._found.items()
        ]
        touched = [
            (u, *_row_key(w))
            for w, u in used.items()
            if w not in self._stored and w not in self._found
        ]
        lost = [_row_key(w) for w in self._lost]
        self._forget_pending()
        try:
            conn.execute("BEGIN")
            try:
                conn.executemany(_DELETE, lost)
                conn.executemany(_UPSERT, stored)
                conn.executemany(_FOUND, found)
                conn.executemany(_TOUCH, touched)
                conn.execute("UPDATE total SET clock = ?", (self._clock,))
                self._total = int(conn.execute("SELECT bytes FROM total").fetchone()[0])
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            self._failed = False
        except sqlite3.Error as exc:
            # A full disk, a damaged file: the order and sizes of these blocks are lost
            # (their files are found again by path as reads need them).
            if not self._failed:
                log.warning("block index %s: cannot write (%s)", self.path, exc)
            self._failed = True
        return self._total

    def oldest(self) -> Generator[tuple[Where, int]]:
        """(where, bytes) of every block file, those read least recently first, then
        those fetched ahead and not read yet. Flush first: it reads the rows."""
        if self._conn is None:
            return
        try:
            cursor = self._conn.execute("SELECT file, idx, bytes FROM blocks ORDER BY ahead, used")
            for file, index, nbytes in cursor:
                yield _where(file, index), nbytes
        except sqlite3.Error as exc:
            log.warning("block index %s: cannot read (%s)", self.path, exc)

    def disk_bytes(self) -> int:
        """What the index's own files take on disk, its WAL counted at the size it may
        reach between checkpoints: writing the rows of an eviction must not take the
        cache back over its budget."""
        total = sum(file_bytes(f"{self.path}{suffix}") for suffix in SUFFIXES)
        return total + max(0, WAL_PAGES * 4096 - file_bytes(f"{self.path}-wal"))


def file_bytes(path: str) -> int:
    """What a file takes: its disk blocks, or its length if more (`du -b` counts that)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return 0
    return max(st.st_size, st.st_blocks * 512)
