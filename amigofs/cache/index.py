"""The call index: the calls of each workspace, on disk in SQLite (CACHE_DIR/index.sqlite).

Workspaces hold 10^5 to 10^6 calls: their listing lives here, not in memory, and a
remount shows it at once. A call's row id is its place in the mount for good: the
offset a directory listing resumes from, and the base of its inode numbers, stable
across remounts. The sync of a workspace keeps its progress here (every page of the
listing it has read, and the listing's size each reported), so a sync cut short,
by a timeout or a kill, goes on where it stopped.

WAL mode, one writer connection used from a worker thread (writes never block the
trio thread) and one reader connection on the trio thread, which in WAL mode never
waits on the writer. A file that is damaged, of another format, or not this user's
is set aside and rebuilt from the API: the index is a cache, never served wrong. A
full disk, or a lock another process holds past LOCK_WAIT (an `sqlite3` shell in a
transaction), moves it into memory for the rest of the mount, with one warning.
Opening reads what does not grow with the calls indexed (the file's length and header,
its format); every page is checked after, in a thread, and damage found there has
the next mount rebuild it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from amigofs.api.models import CallSummary, from_time_ns, sane_duration, storable_ns
from amigofs.cache.meta import is_damage
from amigofs.policy.listing import PageRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

FORMAT = "amigofs-index 1"
NAME = "index.sqlite"
# Beside the index: a mark that the check of an earlier mount found it damaged.
DAMAGED_SUFFIX = ".damaged"
# How long after the mount starts its pages are checked: once it is live (a remount
# with a million calls cached is live within 2 s, issue 21).
CHECK_DELAY = 10.0
# How long a write waits on a lock another process holds on the index (an `sqlite3`
# shell in a transaction, a backup tool) before the index moves to memory.
LOCK_WAIT = 5.0
# The writer's page cache, and the WAL's size (in pages) at which it is checkpointed
# into the database (SQLite's defaults: 2 MiB, 1000 pages); see _connect.
WRITER_CACHE_KIB = 8 << 10
WAL_CHECKPOINT_PAGES = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS format (value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workspaces (
    id INTEGER PRIMARY KEY,
    workspace_id TEXT NOT NULL UNIQUE,
    complete INTEGER NOT NULL DEFAULT 0,   -- a whole listing is indexed
    synced_at REAL,                        -- wall clock of the last complete sync
    base_total INTEGER,                    -- the listing's size when this sync began
    newest_first INTEGER NOT NULL DEFAULT 1,
    newest_ns INTEGER                      -- the newest call's start
);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,                -- its place in listings, and its inodes
    ws INTEGER NOT NULL,
    call_sid TEXT NOT NULL,
    started_ns INTEGER,
    duration REAL,
    direction TEXT,
    listed INTEGER NOT NULL DEFAULT 1,     -- 0: known by a lookup, not from the listing
    UNIQUE (ws, call_sid)
);
CREATE INDEX IF NOT EXISTS calls_by_ws ON calls (ws, id);
CREATE INDEX IF NOT EXISTS calls_by_start ON calls (ws, started_ns);
-- The progress of a sync used to keep one page per offset: a page read again after
-- calls arrived replaced the earlier one and uncovered calls it had held.
DROP TABLE IF EXISTS pages;
CREATE TABLE IF NOT EXISTS sync_pages (    -- the progress of the current sync
    ws INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    total INTEGER NOT NULL,                -- the listing's size this page reported
    PRIMARY KEY (ws, offset, total)        -- one offset at two sizes: two pages
);
"""


@dataclass(slots=True, frozen=True)
class CallRow:
    row_id: int
    workspace_id: str
    call_sid: str
    started_ns: int | None
    duration: float | None
    direction: str | None
    listed: bool

    def summary(self) -> CallSummary:
        started = None if self.started_ns is None else from_time_ns(self.started_ns)
        return CallSummary(self.workspace_id, self.call_sid, started, self.duration, self.direction)


@dataclass(slots=True, frozen=True)
class SyncState:
    complete: bool
    synced_at: float | None
    base_total: int | None
    newest_first: bool
    pages: tuple[PageRecord, ...]


_CALL_COLUMNS = "c.id, w.workspace_id, c.call_sid, c.started_ns, c.duration, c.direction, c.listed"


def _row(values: tuple[object, ...]) -> CallRow:
    row_id, ws, sid, started, duration, direction, listed = values
    return CallRow(
        int(row_id),  # type: ignore[call-overload]
        str(ws),
        str(sid),
        None if started is None else int(started),  # type: ignore[call-overload]
        None if duration is None else float(duration),  # type: ignore[arg-type]
        None if direction is None else str(direction),
        bool(listed),
    )


def _check_length(path: Path, size: int) -> None:
    """Refuses a database file shorter than its header says: SQLite may open one cut
    short without complaint, and serve what is left as if it were whole."""
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100:
        if size:
            raise ValueError("shorter than an SQLite header")
        return
    if header[:16] != b"SQLite format 3\0":
        raise ValueError("not an SQLite database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if size < page_size * pages:
        raise ValueError(f"cut short: {size} bytes of {page_size * pages}")


def _locked(exc: sqlite3.Error) -> bool:
    """Whether another connection holds the lock (SQLITE_BUSY: "database is locked")."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_BUSY or "database is locked" in str(exc)


def _lock_reason(exc: sqlite3.Error) -> str:
    return f"locked by another process ({exc}, after {LOCK_WAIT:g} s)"


def started_ns(call: CallSummary) -> int | None:
    """The call's start as its row keeps it; None for a start an INTEGER cannot hold
    (before 1677, after 2262: Go's zero time 0001-01-01 has been seen). The call is
    kept without it, as a call listed without a start: it gets its time from its
    metadata, and no day of by-date. The listing's parser said so once."""
    return None if call.started_at is None else storable_ns(call.started_at)


def _call_row(ws: int, call: CallSummary, listed: bool) -> tuple[object, ...]:
    """A call's values as the calls table takes them (see _SCHEMA)."""
    # An absurd duration (1e308, negative, NaN) is kept as none: its metadata has one.
    duration = sane_duration(call.duration_seconds)
    return (ws, call.call_sid, started_ns(call), duration, call.direction, int(listed))


class CallIndex:
    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / NAME
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._in_memory = False
        self._ws_rows: dict[str, int] = {}
        self._check_stop = threading.Event()  # set: the check in a thread is not wanted

    # --- start and stop (blocking) ------------------------------------------------

    def open(self) -> None:
        """Opens the index, or sets a bad one aside and starts a new one. What opening
        reads does not grow with the calls indexed: the file's length, its header and its
        format row; its pages are checked after, in a thread (`check_in_background`)."""
        try:
            if os.path.lexists(self._damage_mark):
                raise ValueError(f"an earlier mount found it damaged ({self._damage_mark})")
            self._connect()
            self._check()
        except (sqlite3.Error, ValueError, OSError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and _locked(exc):
                # Another process's lock says nothing wrong of the file: not set aside.
                self._move_to_memory(_lock_reason(exc))
                return
            log.warning(
                "call index %s is unusable (%s); rebuilding it from the API", self.path, exc
            )
            self.close()
            for suffix in ("", "-wal", "-shm", DAMAGED_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            self._connect()
            self._check()

    def _connect(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise ValueError("not a regular file of this user's")
            _check_length(self.path, st.st_size)
        # The directory is ours and 0700 (see cache_dir): the file is made 0600 in it.
        old_umask = os.umask(0o077)
        try:
            self._writer = sqlite3.connect(
                self.path, timeout=LOCK_WAIT, check_same_thread=False, isolation_level=None
            )
        finally:
            os.umask(old_umask)
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA synchronous=NORMAL")  # a cache: a crash may lose the tail
        # A sync writes pages of 100 calls whose SIDs land all over the (ws, call_sid)
        # index: at a million calls each call dirties a page of its own. More room for
        # a batch's dirty pages (else they spill to the WAL mid-transaction), and fewer
        # checkpoints (each syncs the disk twice, holding the writer): a million calls
        # written 20 pages a transaction took 10.6 CPU-s, not 15.6 (a 32 MiB cache:
        # 9.2, for 29 MiB more of the mount's memory).
        self._writer.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        self._writer.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        # A WAL that grew past that (a reader kept it from restarting) is cut back.
        self._writer.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
        self._writer.executescript(_SCHEMA)
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Opens the WAL and its shared memory now, while they can be: a first read after
        # the cache directory was removed (a cleaner's rm -rf) could not, for the mount.
        self._reader.execute("SELECT value FROM format").fetchall()

    def _check(self) -> None:
        writer = self._conn(self._writer)
        found = [r[0] for r in writer.execute("SELECT value FROM format")]
        if not found:
            writer.execute("INSERT INTO format VALUES (?)", (FORMAT,))
        elif found != [FORMAT]:
            raise ValueError(f"format {found!r}, not {FORMAT!r}")

    @property
    def _damage_mark(self) -> str:
        return f"{self.path}{DAMAGED_SUFFIX}"

    def check_in_background(self, delay: float = CHECK_DELAY) -> threading.Thread | None:
        """Checks every page of the index (SQLite's quick_check), `delay` seconds from
        now, in a thread with a connection of its own, while the mount serves: it reads
        the whole file, seconds at a million calls, which a mount must not wait for at
        start, nor share the disk with while it starts. Damage found is said once, and
        the next mount sets the index aside and rebuilds it from the API; meanwhile a
        read that meets a damaged page fails (SQLite checks each page it reads). The
        thread, for tests to join; None for an index in memory."""
        if self._in_memory:
            return None
        path, mark = str(self.path), self._damage_mark
        stop = self._check_stop = threading.Event()

        def check() -> None:
            if stop.wait(delay):
                return  # closed before its turn
            try:
                with contextlib.closing(
                    sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True)
                ) as conn:
                    result = conn.execute("PRAGMA quick_check").fetchone()
            except sqlite3.Error as exc:
                if not is_damage(exc):
                    log.debug("call index %s: not checked: %s", path, exc)
                    return
                result = (str(exc),)
            if result is not None and result[0] == "ok":
                return
            log.warning(
                "call index %s is damaged (%s); it is rebuilt from the API at the next mount",
                path,
                None if result is None else result[0],
            )
            with contextlib.suppress(OSError):
                os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))

        thread = threading.Thread(target=check, name="amigofs-index-check", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._check_stop.set()
        for name in ("_reader", "_writer"):
            conn = getattr(self, name)
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                setattr(self, name, None)

    @staticmethod
    def _conn(conn: sqlite3.Connection | None) -> sqlite3.Connection:
        if conn is None:
            raise RuntimeError("the call index is not open")
        return conn

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` in one transaction of the writer. On a full disk the index moves
        into memory for the rest of the mount, with all it holds, and `work` is tried
        again: a listing must not fail for want of room for its index."""
        with self._write_lock:
            for attempt in range(2):
                writer = self._conn(self._writer)
                writer.execute("BEGIN")
                try:
                    result = work(writer)
                    writer.execute("COMMIT")
                    return result
                except sqlite3.OperationalError as exc:
                    with contextlib.suppress(sqlite3.Error):
                        writer.execute("ROLLBACK")
                    if attempt or self._in_memory:
                        raise
                    if _locked(exc):
                        self._move_to_memory(_lock_reason(exc))
                    elif "full" in str(exc).lower():
                        self._move_to_memory(str(exc))
                    else:
                        raise
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        writer.execute("ROLLBACK")
                    raise
        raise AssertionError("unreachable")

    def _move_to_memory(self, reason: str) -> None:
        log.warning(
            "call index %s: %s; keeping it in memory until the mount ends", self.path, reason
        )
        uri = f"file:amigofs-index-{id(self)}?mode=memory&cache=shared"
        memory = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            source = self._conn(self._writer)
            # A read first: backup() waits for ever on a file locked against readers.
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()
            source.backup(memory)
        except (sqlite3.Error, RuntimeError) as exc:  # RuntimeError: never opened
            # Locked against readers too (a file not in WAL mode): the calls are listed
            # again; the workspaces keep their row ids, which callers hold.
            log.warning("call index %s: not copied (%s); starting it empty", self.path, exc)
            memory.executescript(_SCHEMA)
            memory.execute("INSERT INTO format VALUES (?)", (FORMAT,))
            memory.executemany(
                "INSERT INTO workspaces (id, workspace_id) VALUES (?, ?)",
                [(row, ws) for ws, row in self._ws_rows.items()],
            )
        reader = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        # In a shared cache, connections lock tables, not files, and a reader's open
        # cursor (a readdir streaming rows) made the writer fail at once with "database
        # table is locked". Reading uncommitted rows takes no such lock; the one writer
        # is serialised by _write_lock, and a listing half written is shown anyway.
        reader.execute("PRAGMA read_uncommitted = 1")
        self.close()
        self._writer, self._reader, self._in_memory = memory, reader, True

    # --- reads: on the trio thread, quick, by key -------------------------------------

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        # The reader as it is once the arguments are made: making them (a workspace's
        # first row) may have moved the index into memory.
        return self._conn(self._reader).execute(sql, params)

    def workspace_row(self, workspace_id: str) -> int:
        """The workspace's row id, made if new (a write, but once per workspace)."""
        row = self._ws_rows.get(workspace_id)
        if row is None:

            def make(writer: sqlite3.Connection) -> int:
                writer.execute(
                    "INSERT OR IGNORE INTO workspaces (workspace_id) VALUES (?)", (workspace_id,)
                )
                found = writer.execute(
                    "SELECT id FROM workspaces WHERE workspace_id = ?", (workspace_id,)
                ).fetchone()
                return int(found[0])

            row = self._ws_rows[workspace_id] = self._transaction(make)
        return row

    def by_sid(self, workspace_id: str, call_sid: str) -> CallRow | None:
        found = self._read(
            f"SELECT {_CALL_COLUMNS} FROM calls c JOIN workspaces w ON w.id = c.ws "
            "WHERE c.ws = ? AND c.call_sid = ?",
            (self.workspace_row(workspace_id), call_sid),
        ).fetchone()
        return None if found is None else _row(found)

    def by_id(self, row_id: int) -> CallRow | None:
        found = self._read(
            f"SELECT {_CALL_COLUMNS} FROM calls c JOIN workspaces w ON w.id = c.ws WHERE c.id = ?",
            (row_id,),
        ).fetchone()
        return None if found is None else _row(found)

    def after(
        self, workspace_id: str, after_id: int, limit: int, *, listed_only: bool = False
    ) -> list[CallRow]:
        """The workspace's calls in listing order (row id) after `after_id`."""
        listed = " AND c.listed = 1" if listed_only else ""
        return [
            _row(r)
            for r in self._read(
                f"SELECT {_CALL_COLUMNS} FROM calls c JOIN workspaces w ON w.id = c.ws "
                f"WHERE c.ws = ? AND c.id > ?{listed} ORDER BY c.id LIMIT ?",
                (self.workspace_row(workspace_id), after_id, limit),
            )
        ]

    def after_sid(self, workspace_id: str, call_sid: str, limit: int) -> list[CallRow]:
        """The workspace's calls in name order after `call_sid` (as rsync, which sorts
        what it lists, walks them)."""
        return [
            _row(r)
            for r in self._read(
                f"SELECT {_CALL_COLUMNS} FROM calls c JOIN workspaces w ON w.id = c.ws "
                "WHERE c.ws = ? AND c.call_sid > ? ORDER BY c.call_sid LIMIT ?",
                (self.workspace_row(workspace_id), call_sid, limit),
            )
        ]

    def started_between(self, workspace_id: str, start_ns: int, end_ns: int) -> list[CallRow]:
        """The workspace's calls that started in [start_ns, end_ns), oldest first."""
        return [
            _row(r)
            for r in self._read(
                f"SELECT {_CALL_COLUMNS} FROM calls c JOIN workspaces w ON w.id = c.ws "
                "WHERE c.ws = ? AND c.started_ns >= ? AND c.started_ns < ? "
                "ORDER BY c.started_ns, c.call_sid",
                (self.workspace_row(workspace_id), start_ns, end_ns),
            )
        ]

    def first_start_from(self, workspace_id: str, start_ns: int) -> int | None:
        """The earliest call start at or after `start_ns` (days are found by jumping
        from one to the next: a query a day, whatever the number of calls)."""
        found = self._read(
            "SELECT min(started_ns) FROM calls WHERE ws = ? AND started_ns >= ?",
            (self.workspace_row(workspace_id), start_ns),
        ).fetchone()
        return None if found is None or found[0] is None else int(found[0])

    def newest_ns(self, workspace_id: str) -> int | None:
        found = self._read(
            "SELECT newest_ns FROM workspaces WHERE id = ?", (self.workspace_row(workspace_id),)
        ).fetchone()
        return None if found is None or found[0] is None else int(found[0])

    def sync_state(self, workspace_id: str, *, with_pages: bool = False) -> SyncState:
        """Where the workspace's sync stands; the pages read so far (thousands, for a
        large workspace in the middle of its sync) only `with_pages`: readers ask
        whether it is complete each time a page lands."""
        ws = self.workspace_row(workspace_id)
        complete, synced_at, base_total, newest_first = self._read(
            "SELECT complete, synced_at, base_total, newest_first FROM workspaces WHERE id = ?",
            (ws,),
        ).fetchone()
        pages: tuple[PageRecord, ...] = ()
        if with_pages:
            pages = tuple(
                PageRecord(int(o), int(e), int(t))
                for o, e, t in self._read(
                    "SELECT offset, entries, total FROM sync_pages WHERE ws = ? ORDER BY offset",
                    (ws,),
                )
            )
        return SyncState(
            bool(complete),
            None if synced_at is None else float(synced_at),
            None if base_total is None else int(base_total),
            bool(newest_first),
            pages,
        )

    def known(self, workspace_id: str, sids: Iterable[str]) -> set[str]:
        """Which of `sids` are in the listing already (listed, not only looked up)."""
        wanted = list(sids)
        if not wanted:
            return set()
        marks = ",".join("?" * len(wanted))
        return {
            str(r[0])
            for r in self._read(
                f"SELECT call_sid FROM calls WHERE ws = ? AND listed = 1 AND call_sid IN ({marks})",
                (self.workspace_row(workspace_id), *wanted),
            )
        }

    def listed_count(self, workspace_id: str) -> int:
        found = self._read(
            "SELECT count(*) FROM calls WHERE ws = ? AND listed = 1",
            (self.workspace_row(workspace_id),),
        ).fetchone()
        return int(found[0])

    # --- writes: blocking, call from a thread ----------------------------------------

    def restart_sync(self, workspace_id: str) -> None:
        """The listing is to be read whole again (its calls stay indexed meanwhile)."""
        ws = self.workspace_row(workspace_id)

        def restart(writer: sqlite3.Connection) -> None:
            writer.execute("DELETE FROM sync_pages WHERE ws = ?", (ws,))
            writer.execute(
                "UPDATE workspaces SET complete = 0, base_total = NULL WHERE id = ?", (ws,)
            )

        self._transaction(restart)

    def add(self, workspace_id: str, calls: list[CallSummary], *, listed: bool = True) -> None:
        """Adds calls (those known already are kept, with their row id: their place in
        listings and their inodes do not move), and a page's progress with them."""
        self.add_page(workspace_id, calls, None, listed=listed)

    def add_page(
        self,
        workspace_id: str,
        calls: list[CallSummary],
        page: PageRecord | None,
        *,
        listed: bool = True,
    ) -> None:
        self.add_pages(workspace_id, [(calls, page)], listed=listed)

    def add_pages(
        self,
        workspace_id: str,
        pages: Sequence[tuple[Sequence[CallSummary], PageRecord | None]],
        *,
        listed: bool = True,
    ) -> None:
        """Adds the calls of pages and the sync's progress they make, in one transaction:
        a sync stores the pages that landed while it wrote the last ones together, since
        a commit costs more than a page's rows (and a checkpoint's syncs follow commits)."""
        ws = self.workspace_row(workspace_id)
        rows = [_call_row(ws, c, listed) for calls, _ in pages for c in calls]
        records = [(ws, p.offset, p.entries, p.total) for _, p in pages if p is not None]
        newest = max((r[2] for r in rows if isinstance(r[2], int)), default=None)

        def add(writer: sqlite3.Connection) -> None:
            writer.executemany(
                "INSERT INTO calls (ws, call_sid, started_ns, duration, direction, listed) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ws, call_sid) DO UPDATE SET "
                "listed = max(listed, excluded.listed), "
                "started_ns = coalesce(started_ns, excluded.started_ns)",
                rows,
            )
            if newest is not None:
                writer.execute(
                    "UPDATE workspaces SET newest_ns = max(coalesce(newest_ns, 0), ?) WHERE id = ?",
                    (newest, ws),
                )
            writer.executemany(
                "INSERT OR REPLACE INTO sync_pages (ws, offset, entries, total) "
                "VALUES (?, ?, ?, ?)",
                records,
            )

        self._transaction(add)

    def begin_sync(self, workspace_id: str, base_total: int, newest_first: bool) -> None:
        """A new sync of the whole listing: its progress so far is dropped."""
        self._update_sync(workspace_id, base_total=base_total, newest_first=newest_first)

    def finish_sync(self, workspace_id: str, synced_at: float) -> None:
        self._update_sync(workspace_id, complete=True, synced_at=synced_at)

    def _update_sync(
        self,
        workspace_id: str,
        *,
        base_total: int | None = None,
        newest_first: bool = True,
        complete: bool = False,
        synced_at: float | None = None,
    ) -> None:
        ws = self.workspace_row(workspace_id)

        def update(writer: sqlite3.Connection) -> None:
            writer.execute("DELETE FROM sync_pages WHERE ws = ?", (ws,))
            if complete:
                writer.execute(
                    "UPDATE workspaces SET complete = 1, synced_at = ?, base_total = NULL "
                    "WHERE id = ?",
                    (synced_at, ws),
                )
            else:
                writer.execute(
                    "UPDATE workspaces SET base_total = ?, newest_first = ? WHERE id = ?",
                    (base_total, int(newest_first), ws),
                )

        self._transaction(update)


def lists_calls_of(cache_dir: Path, workspace_ids: Iterable[str]) -> bool:
    """Whether the index an earlier mount left in `cache_dir` lists calls of any of these
    workspaces (ids compared without regard to case). Read only: nothing is created,
    set aside or rebuilt, so it may be asked before the mount takes the directory."""
    path = cache_dir / NAME
    wanted = [w.lower() for w in workspace_ids]
    if not wanted or not path.is_file():
        return False
    marks = ",".join("?" * len(wanted))
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            # The workspaces' rows first, then one call of each by the (ws, id) index:
            # joined in one query, SQLite read every call of the index.
            rows = conn.execute(
                f"SELECT id FROM workspaces WHERE lower(workspace_id) IN ({marks})", wanted
            ).fetchall()
            found = any(
                conn.execute("SELECT 1 FROM calls WHERE ws = ? LIMIT 1", row).fetchone()
                for row in rows
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return False  # unreadable: a mount would rebuild it from the API, not serve it
    return found
