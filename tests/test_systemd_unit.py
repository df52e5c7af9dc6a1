"""The systemd units as an administrator installs them: `systemd-analyze verify` passes
on each (with ExecStart pointed at this checkout's amigofs, where the unit names the
install path the README gives), and the system and user mount units stop retrying a
mistake to fix (exit status 2) but not a server that cannot be reached now (3), with a
start limit so that nothing is retried for ever."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amigofs.commands import exits

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
# Where the units expect amigofs: the README's installs (a root-owned virtualenv for the
# system units, the user's own ~/.local/amigofs for the user unit).
SYSTEM_INSTALL = "/opt/amigofs/bin/amigofs"
USER_INSTALL = "%h/.local/amigofs/bin/amigofs"
AMIGOFS = Path(sys.executable).parent / "amigofs"  # this checkout's, in the venv
MOUNT_UNITS = [SYSTEMD / "amigofs@.service", SYSTEMD / "user" / "amigofs@.service"]

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (package systemd): the units cannot be verified",
)


def _service(unit: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return parser


def _installed(unit: Path, into: Path, install: str, instance: str | None) -> Path:
    """The unit as installed, its ExecStart at this checkout's amigofs; a template
    (NAME@.service) as one of its instances, which verify needs."""
    text = unit.read_text()
    assert install in text, f"{unit.name} does not run {install}"
    name = unit.name.replace("@.", f"@{instance}.") if instance else unit.name
    path = into / name
    path.write_text(text.replace(install, str(AMIGOFS)))
    return path


def _verify(*argv: str | Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        ["systemd-analyze", *map(str, argv)],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    # verify warns on stderr (an unknown key, a missing binary) even where it exits 0.
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result


@needs_analyze
def test_the_system_units_verify(tmp_path: Path) -> None:
    assert AMIGOFS.exists()
    mount = _installed(SYSTEMD / "amigofs@.service", tmp_path, SYSTEM_INSTALL, "prod")
    metrics = _installed(
        SYSTEMD / "amigofs-metrics@.service", tmp_path, SYSTEM_INSTALL, "mnt-amigo"
    )
    timer = tmp_path / "amigofs-metrics@mnt-amigo.timer"
    shutil.copy(SYSTEMD / "amigofs-metrics@.timer", timer)
    _verify("verify", mount, metrics, timer)


@needs_analyze
def test_the_user_unit_verifies(tmp_path: Path) -> None:
    unit = _installed(SYSTEMD / "user" / "amigofs@.service", tmp_path, USER_INSTALL, "work")
    # The user's manager needs a runtime directory, which a test run may not have.
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    _verify("--user", "verify", unit, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})


@pytest.mark.parametrize("unit", MOUNT_UNITS, ids=["system", "user"])
def test_a_mistake_is_not_retried_and_nothing_for_ever(unit: Path) -> None:
    parsed = _service(unit)
    service, section = parsed["Service"], parsed["Unit"]
    assert service["Restart"] == "on-failure"
    prevented = {int(status) for status in service["RestartPreventExitStatus"].split()}
    assert exits.USAGE in prevented  # a wrong key is not sent again
    assert exits.UNREACHABLE not in prevented  # a server that is down is tried again
    assert exits.FAILED not in prevented
    # Retried at most StartLimitBurst times within StartLimitIntervalSec, then left failed.
    assert int(section["StartLimitBurst"]) > 0
    assert section["StartLimitIntervalSec"] not in ("0", "infinity")
