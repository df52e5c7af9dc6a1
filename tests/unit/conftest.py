"""The unit tier's rule, enforced: no mount, no subprocess, the whole tier in under a minute.

A unit test fails, with a message that says where it belongs, when it
- starts a process (subprocess, os.system, fork, posix_spawn, or anything built on them:
  trio.run_process, multiprocessing) or mounts (pyfuse3.init, opening /dev/fuse);
- carries the ``mount`` marker, uses the mount harness (tests/mounting.py,
  tests/emulator_proc.py) or asks for a fixture of the mount tier (one defined in tests/
  outside tests/unit).
The terminal summary says how much of its 60 s the tier took.
"""

from __future__ import annotations

import _posixsubprocess
import builtins
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BUDGET_SECONDS = 60.0
HARNESS_MODULES = ("tests.mounting", "tests.emulator_proc")
WHERE = "it belongs in the mount tier (tests/, outside tests/unit)"
_REFUSED = pytest.StashKey[str]()
_unit_seconds: list[float] = []


def _in_unit_tier(item: pytest.Item) -> bool:
    return Path(__file__).parent in item.path.parents


def _refusal(item: pytest.Item) -> str | None:
    """Why `item` cannot be a unit test, found without running it; None if it can."""
    if any(mark.name == "mount" for mark in item.iter_markers()):
        return "a unit test carries the mount marker: " + WHERE
    module = getattr(item, "module", None)
    for name, value in vars(module).items() if module is not None else ():
        if getattr(value, "__module__", None) in HARNESS_MODULES or (
            getattr(value, "__name__", None) in HARNESS_MODULES
        ):
            return f"a unit test module uses the mount harness ({name}): " + WHERE
    fixture_info = getattr(item, "_fixtureinfo", None)
    for name, definitions in fixture_info.name2fixturedefs.items() if fixture_info else ():
        for definition in definitions:
            # Where it is defined, as a node id: "" for pytest's and plugins' own.
            where = definition.baseid + "/"
            if where.startswith("tests/") and not where.startswith("tests/unit/"):
                return f"a unit test asks for the mount tier's fixture {name!r}: " + WHERE
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _in_unit_tier(item):
            reason = _refusal(item)
            if reason is not None:
                item.stash[_REFUSED] = reason


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"tests/unit starts no process and mounts nothing, but this test called "
                    f"{what}: {WHERE}", pytrace=True)  # fmt: skip

    return refused


_real_open = builtins.open
_real_os_open = os.open


def _is_fuse_device(path: object) -> bool:
    try:
        return os.path.realpath(os.fsdecode(path)) == "/dev/fuse"  # type: ignore[arg-type]
    except TypeError:  # a file descriptor, not a path
        return False


def _open(file: Any, *args: Any, **kwargs: Any) -> Any:
    if _is_fuse_device(file):
        _refuse("open('/dev/fuse')")()
    return _real_open(file, *args, **kwargs)


def _os_open(path: Any, *args: Any, **kwargs: Any) -> int:
    if _is_fuse_device(path):
        _refuse("os.open('/dev/fuse')")()
    return _real_os_open(path, *args, **kwargs)


@pytest.fixture(autouse=True)
def _unit_tier_rule(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    reason = request.node.stash.get(_REFUSED, None)
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    # Popen's own child-starting step, so the message names subprocess whoever called it.
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("subprocess.Popen"))
    monkeypatch.setattr(_posixsubprocess, "fork_exec", _refuse("a fork and exec"))
    for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse(f"os.{name}"))
    monkeypatch.setattr(builtins, "open", _open)
    monkeypatch.setattr(os, "open", _os_open)
    try:
        import pyfuse3
    except ImportError:  # pragma: no cover (the package depends on it)
        pass
    else:
        monkeypatch.setattr(pyfuse3, "init", _refuse("pyfuse3.init"))
    yield


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid.startswith("tests/unit/"):
        _unit_seconds.append(report.duration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _unit_seconds:
        total = sum(_unit_seconds)
        line = f"unit tier: {total:.1f} s of its {BUDGET_SECONDS:.0f} s budget"
        terminalreporter.write_line(line, red=total > BUDGET_SECONDS)
