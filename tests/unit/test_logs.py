"""Logging set up as every amigofs process does it: the level reaches the fetch worker,
and the HTTP libraries, whose debug lines hold signed links, stay quiet; lines dated
unless the journal dates them; -v and -q; the log file, rotated, private, its one
writer this process; and the environment children start in."""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amigofs import config
from amigofs.logs import (
    LEVEL_ENV,
    LEVELS,
    QUIETED,
    LogFile,
    LogFileError,
    child_environment,
    child_stderr,
    close_log_file,
    formatter,
    log_to_file,
    open_log_file,
    setup_logging,
    shifted_level,
    under_journal,
)


@pytest.mark.parametrize("level", ["debug", "warning"])
def test_the_level_is_passed_on_and_http_libraries_stay_quiet(
    monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    root = logging.getLogger()  # put back as it was: logging is the process's
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    for name in QUIETED:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    setup_logging(level)

    assert os.environ[LEVEL_ENV] == level  # what the worker process reads
    for name in QUIETED:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name


ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")


@pytest.fixture
def root_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The root logger, put back as it was afterwards (with no log file left open)."""
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    try:
        yield root
    finally:
        close_log_file()


def test_levels_move_one_step_for_each_v_or_q_and_stop_at_the_ends() -> None:
    assert shifted_level("info", 1) == "debug"
    assert shifted_level("info", -1) == "warning"
    assert shifted_level("info", -2) == "error"
    assert shifted_level("warning", 1) == "info"  # -v from a config file's warning
    assert shifted_level("debug", 3) == "debug"
    assert shifted_level("error", -1) == "error"


@given(st.sampled_from(LEVELS), st.integers(-10, 10), st.integers(0, 10))
def test_more_v_never_logs_less(level: str, louder: int, more: int) -> None:
    quieter, noisier = shifted_level(level, louder), shifted_level(level, louder + more)
    assert LEVELS.index(noisier) <= LEVELS.index(quieter)


def test_lines_are_dated_iso_8601_with_the_zone() -> None:
    record = logging.makeLogRecord({"name": "amigofs.x", "levelname": "WARNING", "msg": "m"})
    line = formatter(dated=True).format(record)
    assert ISO_TIME.match(line), line
    assert line.endswith("WARNING amigofs.x: m")
    assert ISO_TIME.match(formatter(dated=False).format(record)) is None


def test_no_dates_on_stderr_when_it_is_the_journal(
    root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with open(tmp_path / "journal", "w") as journal:
        found = os.fstat(journal.fileno())
        monkeypatch.setattr(sys, "stderr", journal)
        monkeypatch.setenv("JOURNAL_STREAM", f"{found.st_dev}:{found.st_ino}")
        assert under_journal(journal)
        setup_logging("info")
        logging.getLogger("amigofs.test").warning("to the journal")
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # another stream: ours was redirected
        assert not under_journal(journal)
    line = (tmp_path / "journal").read_text()
    assert line.startswith("amigofs[") and "WARNING amigofs.test: to the journal" in line


def test_a_log_file_takes_earlier_records_then_its_childrens_lines_as_they_wrote_them(
    root_logging: logging.Logger, tmp_path: Path
) -> None:
    setup_logging("info", log_file_later=True)
    logging.getLogger("amigofs.test").warning("before the file")
    log_to_file(tmp_path / "mount.log")
    logging.getLogger("amigofs.test").info("after")
    logging.getLogger("amigofs.test").debug("not at info")
    child = child_stderr()
    assert child is not None
    os.write(child, b"2026-12-04T23:41:07.123+00:00 amigofs[9] INFO amigofs.w: from a child\n")
    close_log_file()
    lines = (tmp_path / "mount.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"amigofs[{os.getpid()}] WARNING amigofs.test: before the file",
        f"amigofs[{os.getpid()}] INFO amigofs.test: after",
        "amigofs[9] INFO amigofs.w: from a child",
    ]
    assert all(ISO_TIME.match(line) for line in lines)
    assert stat.S_IMODE((tmp_path / "mount.log").stat().st_mode) == 0o600
    assert child_stderr() is None


def test_the_log_file_is_rotated_and_stays_private(tmp_path: Path) -> None:
    handler = LogFile(tmp_path / "mount.log", max_bytes=1000)
    handler.setFormatter(formatter(dated=True))
    try:
        for n in range(100):
            handler.handle(logging.makeLogRecord({"msg": f"line {n:03} " + "x" * 50}))
    finally:
        handler.close()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["mount.log", "mount.log.1", "mount.log.2", "mount.log.3"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 1000
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "line 099" in (tmp_path / "mount.log").read_text()


def test_a_log_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("theirs\n")
    (tmp_path / "mount.log").symlink_to(victim)
    with pytest.raises(LogFileError, match="is a symbolic link"):
        open_log_file(tmp_path / "mount.log")
    assert victim.read_text() == "theirs\n"


def test_children_start_without_the_working_directory_on_their_module_path() -> None:
    env = child_environment(EXTRA="1")
    assert env["PYTHONSAFEPATH"] == "1" and env["EXTRA"] == "1"


def test_a_config_files_log_file_is_relative_to_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "amigofs.toml"
    config_file.write_text('log_file = "logs/amigofs.log"\nlog_level = "warning"\n')
    config_file.chmod(0o600)
    settings = config.resolve({}, {}, config_file)
    assert settings.log_file == tmp_path / "logs" / "amigofs.log"
    assert settings.log_level == "warning"


def test_a_log_file_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared.log"
    shared.write_text("")
    shared.chmod(0o666)
    with pytest.raises(LogFileError, match="writable by other users"):
        open_log_file(shared)
    with pytest.raises(LogFileError, match="not a regular file"):
        open_log_file(Path("/dev/null"))
