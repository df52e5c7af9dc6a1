"""Logging set up as every amigofs process does it: the level reaches the fetch worker,
and the HTTP libraries, whose debug lines hold signed links, stay quiet."""

from __future__ import annotations

import logging
import os

import pytest

from amigofs.logs import LEVEL_ENV, QUIETED, setup_logging


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
