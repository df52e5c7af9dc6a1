"""The store of kept listings and call records (amigofs.cache.meta): one SQLite file in the
cache directory, what is read back checked, anything damaged dropped or set aside and made
again (never an exception to the caller), its disk use counted and shrunk on demand."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs.cache import meta
from amigofs.cache.meta import MetaStore


def same(document: object) -> object:
    return document


def record(n: int, padding: int = 0) -> dict[str, object]:
    """A document shaped like a call record (about 1 KB of JSON, as the emulator's)."""
    return {
        "urls": {"call_sid": f"CA{n:032x}", "inbound_url": f"/v1/ws/recordings/CA{n:032x}/in"},
        "metadata": {"duration_seconds": n / 7, "direction": "inbound", "n": n},
        "metadata_size": 590 + n,
        "validators": {"inbound.wav": f'"{n:040x}"'},
        # Incompressible, as the same for the same n.
        "padding": random.Random(n).randbytes(padding).hex(),
    }


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(cache: Path) -> Iterator[MetaStore]:
    kept = MetaStore(cache)
    try:
        yield kept
    finally:
        kept.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def edit_rows(cache: Path, sql: str, params: tuple[object, ...] = ()) -> int:
    """Changes the closed store's rows behind its back, as a damaged disk or a user would."""
    conn = sqlite3.connect(cache / meta.NAME)
    try:
        changed = conn.execute(sql, params).rowcount
        conn.commit()
    finally:
        conn.close()
    return changed


def test_documents_are_kept_in_one_private_file_across_a_reopen(cache: Path) -> None:
    store = MetaStore(cache)
    try:
        store.save({"n": 1}, "root")
        store.save(record(1), "records", "ws", "CA1")
        store.save(record(2), "records", "ws", "CA2")
        store.save(record(3), "records", "ws", "CA2")  # replaces the one before
        store.discard("records", "ws", "CA1")
        store.discard("records", "ws", "never-saved")
        assert store.load(same, "records", "ws", "CA2") == record(3)
    finally:
        store.close()
    assert sorted(os.listdir(cache)) == [meta.NAME]  # no -wal left, no meta/ tree
    assert stat.S_IMODE(os.stat(cache / meta.NAME).st_mode) == 0o600
    store = MetaStore(cache)
    try:
        assert store.load(same, "root") == {"n": 1}
        assert store.load(same, "records", "ws", "CA1") is None
        assert store.load(same, "records", "ws", "CA2") == record(3)
        assert store.load(same, "records", "ws") is None
    finally:
        store.close()


class Clock:
    """The store's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_writes_are_committed_at_once_alone_and_in_batches_in_a_burst(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(meta, "_now", clock)
    # The timer's wait is of this clock's seconds: an hour of real time, never in a test.
    monkeypatch.setattr(meta, "COMMIT_AFTER", 3600.0)

    def committed() -> int:
        # What another process (or the next mount, after a kill) would find.
        conn = sqlite3.connect(cache / meta.NAME)
        try:
            return int(conn.execute("SELECT count(*) FROM documents").fetchone()[0])
        finally:
            conn.close()

    store = MetaStore(cache)
    try:
        clock.now += meta.COMMIT_AFTER
        store.save(record(0), "records", "ws", "CA0")  # alone: committed at once
        assert committed() == 1
        # A burst: the writes that follow wait for the batch.
        store.save(record(1), "records", "ws", "CA1")
        assert store.load(same, "records", "ws", "CA1") == record(1)  # read back at once
        assert committed() == 1  # a kill now loses it: fetched again
        store.flush()  # what the timer does, COMMIT_AFTER after the commit before
        assert committed() == 2
        for n in range(2, meta.COMMIT_EVERY + 1):
            store.save(record(n), "records", "ws", f"CA{n}")
        assert committed() == 2
        store.save(record(0), "records", "ws", "CA0")  # the batch's last: committed with it
        assert committed() == meta.COMMIT_EVERY + 1
        clock.now += meta.COMMIT_AFTER
        store.discard("records", "ws", "CA0")
        assert committed() == meta.COMMIT_EVERY
    finally:
        store.close()


def test_saves_from_threads_while_loading(store: MetaStore) -> None:
    def saver(first: int) -> None:
        for n in range(first, first + 200):
            store.save(record(n), "records", "ws", f"CA{n}")

    threads = [threading.Thread(target=saver, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for n in range(200):
        store.load(same, "records", "ws", f"CA{n}")
    for thread in threads:
        thread.join()
    for k in range(4):
        for n in (k * 1000, k * 1000 + 199):
            assert store.load(same, "records", "ws", f"CA{n}") == record(n)


ROW_DAMAGE = {
    "flipped body": "UPDATE documents SET body = substr(body, 1, 10) || x'00' || substr(body, 12)",
    "cut body": "UPDATE documents SET body = substr(body, 1, length(body) / 2)",
    "empty body": "UPDATE documents SET body = x''",
    "unknown encoding": "UPDATE documents SET body = x'07' || substr(body, 2)",
    "edited checksum": "UPDATE documents SET digest = zeroblob(16)",
    "a text body": "UPDATE documents SET body = 'text'",
}


@pytest.mark.parametrize("damage", sorted(ROW_DAMAGE))
def test_a_damaged_row_is_dropped_with_one_warning_and_saved_again(
    cache: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    MetaStore(cache).close()
    store = MetaStore(cache)
    store.save(record(1), "records", "ws", "CA1")
    store.save(record(2), "records", "ws", "CA2")
    store.close()
    key = meta._key("records/ws/CA1")
    assert edit_rows(cache, ROW_DAMAGE[damage] + " WHERE key = ?", (key,)) == 1
    store = MetaStore(cache)
    try:
        with caplog.at_level(logging.WARNING):
            assert store.load(same, "records", "ws", "CA1") is None
            assert store.load(same, "records", "ws", "CA1") is None  # gone: no second warning
        assert store.load(same, "records", "ws", "CA2") == record(2)
        [warning] = warnings_of(caplog)
        assert "records/ws/CA1" in warning and "fetching it again" in warning
        store.save(record(1), "records", "ws", "CA1")
        assert store.load(same, "records", "ws", "CA1") == record(1)
    finally:
        store.close()


def test_a_row_moved_under_another_name_is_not_served_as_it(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = MetaStore(cache)
    store.save(record(1), "records", "ws", "CA1")
    store.close()
    # A valid document, checksum and all, filed under another call's name.
    edit_rows(cache, "UPDATE documents SET key = ?", (meta._key("records/ws/CA2"),))
    store = MetaStore(cache)
    try:
        with caplog.at_level(logging.WARNING):
            assert store.load(same, "records", "ws", "CA2") is None
        assert len(warnings_of(caplog)) == 1
    finally:
        store.close()


def test_a_document_the_parser_refuses_is_dropped(
    store: MetaStore, caplog: pytest.LogCaptureFixture
) -> None:
    def parse(document: object) -> int:
        raise KeyError("urls")

    store.save({"not": "a record"}, "records", "ws", "CA1")
    with caplog.at_level(logging.WARNING):
        assert store.load(parse, "records", "ws", "CA1") is None
    assert store.load(same, "records", "ws", "CA1") is None
    [warning] = warnings_of(caplog)
    assert "records/ws/CA1" in warning and "urls" in warning


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xff not a database \x80\n" * 300)


def cut_short(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def another_format(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE format SET value = 'amigofs-meta 99'")
    conn.commit()
    conn.close()


def scribbled_pages(path: Path) -> None:
    """Pages past the header overwritten: SQLite finds it damaged only when reading them."""
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(os.path.getsize(path) - 4096))


@pytest.mark.parametrize("damage", [garbage, cut_short, another_format, scribbled_pages])
def test_a_damaged_database_is_set_aside_and_made_again(
    cache: Path, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    store = MetaStore(cache)
    for n in range(300):
        store.save(record(n), "records", "ws", f"CA{n}")
    store.close()
    assert callable(damage)
    damage(cache / meta.NAME)
    with caplog.at_level(logging.WARNING):
        store = MetaStore(cache)
        try:
            for n in range(300):
                assert store.load(same, "records", "ws", f"CA{n}") in (None, record(n))
            store.save(record(7), "records", "ws", "CA7")
            assert store.load(same, "records", "ws", "CA7") == record(7)
        finally:
            store.close()
    found = warnings_of(caplog)
    assert found and all(str(cache / meta.NAME) in w for w in found), found
    assert sum("making it again" in w for w in found) == 1, found
    store = MetaStore(cache)  # made again: a good database now
    try:
        assert store.load(same, "records", "ws", "CA7") == record(7)
    finally:
        store.close()


def test_a_database_replaced_by_a_symlink_is_not_followed(
    tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere"
    other = MetaStore(elsewhere)
    other.save({"planted": True}, "root")
    other.close()
    before = (elsewhere / meta.NAME).read_bytes()
    MetaStore(cache).close()
    (cache / meta.NAME).unlink()
    (cache / meta.NAME).symlink_to(elsewhere / meta.NAME)
    with caplog.at_level(logging.WARNING):
        store = MetaStore(cache)
        try:
            assert store.load(same, "root") is None
            store.save({"ours": True}, "root")
        finally:
            store.close()
    assert not (cache / meta.NAME).is_symlink()
    assert (elsewhere / meta.NAME).read_bytes() == before
    [warning] = warnings_of(caplog)
    assert "symbolic link" in warning and "making it again" in warning


def test_a_database_locked_by_another_process_is_not_set_aside(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = MetaStore(cache)
    store.save({"n": 1}, "root")
    store.close()
    monkeypatch.setattr(meta, "LOCK_WAIT", 0.05)
    # An `sqlite3` shell holding the file in its old rollback mode, mid-transaction.
    shell = sqlite3.connect(cache / meta.NAME, isolation_level=None)
    shell.execute("PRAGMA journal_mode=DELETE")
    shell.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING):
            store = MetaStore(cache)  # never raises: the records live in memory meanwhile
            try:
                store.save({"n": 2}, "root")
                assert store.load(same, "root") == {"n": 2}
            finally:
                store.close()
        assert any("in memory" in w for w in warnings_of(caplog))
    finally:
        shell.execute("ROLLBACK")
        shell.close()
    store = MetaStore(cache)
    try:
        assert store.load(same, "root") == {"n": 1}  # the file was left as it was
    finally:
        store.close()


def test_the_older_layout_of_a_file_per_document_is_removed(cache: Path) -> None:
    old = cache / meta.OLD_DIR / "records" / "ws"
    old.mkdir(parents=True, mode=0o700)
    (old / "CA1.json").write_bytes(b"amigofs-meta 2 0\n{}")
    store = MetaStore(cache)
    try:
        assert store.cleaning is not None
        store.cleaning.join(10)
        assert not (cache / meta.OLD_DIR).exists()
        assert store.load(same, "records", "ws", "CA1") is None
    finally:
        store.close()


def on_disk(cache: Path) -> int:
    """What the store's files take, its WAL counted at least at the size it may reach
    between checkpoints (as DiskCache must count it)."""
    total = 0
    for p in cache.iterdir():
        if p.name.startswith(meta.NAME):
            size = max(p.stat().st_size, p.stat().st_blocks * 512)
            total += max(size, meta.WAL_LIMIT) if p.name.endswith("-wal") else size
    if not (cache / f"{meta.NAME}-wal").exists():
        total += meta.WAL_LIMIT
    return total


def test_disk_bytes_counts_the_database_and_its_wal(store: MetaStore, cache: Path) -> None:
    empty = store.disk_bytes()
    assert empty == on_disk(cache) > 0
    for n in range(500):
        store.save(record(n, padding=200), "records", "ws", f"CA{n}")
    store.flush()
    assert (cache / f"{meta.NAME}-wal").exists()
    assert store.disk_bytes() == on_disk(cache) > empty


def test_shrink_evicts_the_least_recently_used_and_the_file_gets_smaller(
    store: MetaStore, cache: Path
) -> None:
    count = 2000
    for n in range(count):
        store.save(record(n, padding=300), "records", "ws", f"CA{n}")
    # The first ten used again: no longer the least recently used.
    for n in range(10):
        assert store.load(same, "records", "ws", f"CA{n}") == record(n, padding=300)
    store.flush()
    assert store.shrink(0) == 0
    store.shrink(1)  # the WAL cut: what follows is evicted from the database itself
    before, file_before = store.disk_bytes(), os.path.getsize(cache / meta.NAME)
    freed = store.shrink(before // 2)
    after = store.disk_bytes()
    assert freed >= before // 2
    assert before - after == freed
    assert os.path.getsize(cache / meta.NAME) < file_before
    kept = [n for n in range(count) if store.load(same, "records", "ws", f"CA{n}") is not None]
    assert all(n in kept for n in range(10))  # used again: kept
    assert 10 < len(kept) < count
    assert min(n for n in kept if n >= 10) > count // 3  # the oldest went first
    # Asking for more than there is empties it, and it still works.
    store.shrink(10 * before)
    assert store.load(same, "records", "ws", f"CA{count - 1}") is None
    assert store.disk_bytes() < before // 4
    store.save(record(1), "records", "ws", "CA1")
    assert store.load(same, "records", "ws", "CA1") == record(1)


def test_the_wal_is_copied_into_the_database_and_stays_small(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A smaller WAL, and batches to match: fewer writes to fill it.
    monkeypatch.setattr(meta, "WAL_LIMIT", 64 << 10)
    monkeypatch.setattr(meta, "COMMIT_EVERY", 16)
    wal = cache / f"{meta.NAME}-wal"
    store = MetaStore(cache)
    try:
        for n in range(600):  # about 600 KB of pages written
            store.save(record(n, padding=300), "records", "ws", f"CA{n}")
            if store.checkpointing is not None:
                store.checkpointing.join(10)
            assert os.path.getsize(wal) < 3 * meta.WAL_LIMIT
        assert os.path.getsize(cache / meta.NAME) > 3 * meta.WAL_LIMIT
        assert store.load(same, "records", "ws", "CA0") == record(0, padding=300)
    finally:
        store.close()


@pytest.mark.parametrize("how", ["writable by others", "another user's"])
def test_a_database_not_ours_alone_is_set_aside(
    cache: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = MetaStore(cache)
    store.save({"n": 1}, "root")
    store.close()
    path = cache / meta.NAME
    if how == "writable by others":
        path.chmod(0o666)
    elif os.geteuid() == 0:
        os.chown(path, 4242, 4242)
    else:
        pytest.skip("only root can give a file to another user")
    with caplog.at_level(logging.WARNING):
        store = MetaStore(cache)
        try:
            assert store.load(same, "root") is None  # what another user may have written
            store.save({"n": 2}, "root")
        finally:
            store.close()
    [warning] = warnings_of(caplog)
    assert "making it again" in warning
    st = os.stat(path)
    assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600
