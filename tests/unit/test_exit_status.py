"""The exit statuses (amigofs.commands.exits), in this process: the same failure is the
same status in every command, a server that cannot be reached now (3) is told apart from
a mistake to fix (2), and what the offline fallback accepts as a cache of this server.
The mounting tier (tests/test_refusals.py) shows the same through real processes."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from amigofs import config
from amigofs.api.client import ClientConfig
from amigofs.api.models import CallSummary
from amigofs.api.secret import ApiKey
from amigofs.cache.index import CallIndex
from amigofs.cache.meta import MetaStore
from amigofs.commands import cli, exits
from amigofs.commands import mount as mount_command
from amigofs.commands import workspaces as workspaces_command
from amigofs.commands.mount_options import option_flags
from amigofs.daemon import preflight

URL = "http://127.0.0.1:9"
KEY = ApiKey("the-key")
WORKSPACE = "3f0c0e6a-1b2c-4d5e-8f90-a1b2c3d4e5f6"


@pytest.fixture(autouse=True)
def no_mount(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The key set, no AMIGOFS_* setting, and no mount or daemon should a check be missed."""
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AMIGO_API_KEY", KEY.reveal())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def not_mounted(*args: object) -> int:
        raise AssertionError("the mount went ahead")

    monkeypatch.setattr(mount_command, "_detach", not_mounted)
    monkeypatch.setattr(mount_command, "_mount_foreground", not_mounted)
    yield


def _server_says(monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    async def list_workspaces(config: ClientConfig, api_key: ApiKey) -> list[object]:
        raise failure

    monkeypatch.setattr(preflight, "list_workspaces", list_workspaces)


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("amigofs: "), err
    return code, err


def _mount(tmp_path: Path, *extra: str) -> list[str | Path]:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir(exist_ok=True)
    return ["mount", mountpoint, "--base-url", URL, "--cache-dir", tmp_path / "cache", *extra]


def test_the_statuses_are_distinct_and_0_is_success() -> None:
    statuses = [exits.OK, exits.FAILED, exits.USAGE, exits.UNREACHABLE, exits.INTERRUPTED]
    assert len(set(statuses)) == len(statuses)
    assert exits.OK == os.EX_OK


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (preflight.Unreachable(f"{URL} gave no usable answer (refused)"), exits.UNREACHABLE),
        (preflight.Refused(f"the API key was refused by {URL} (HTTP 401)"), exits.USAGE),
    ],
    ids=["server down", "key refused"],
)
def test_the_same_failure_is_the_same_status_in_mount_and_workspaces(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    failure: Exception,
    status: int,
) -> None:
    _server_says(monkeypatch, failure)
    listed = _run(capsys, "workspaces", "--base-url", URL)
    mounted = _run(capsys, *_mount(tmp_path, "--foreground"))
    assert (listed[0], mounted[0]) == (status, status), (listed, mounted)


def test_ctrl_c_in_a_command_is_one_line_and_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(workspaces_command, "run", interrupted)
    assert _run(capsys, "workspaces") == (exits.INTERRUPTED, "amigofs: interrupted\n")


# --- a mount point that holds files --------------------------------------------------------


def test_a_mount_point_that_holds_files_is_refused_before_the_server_is_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _server_says(monkeypatch, AssertionError("the server was asked"))
    argv = _mount(tmp_path, "--foreground")
    (tmp_path / "mnt" / "notes.txt").write_text("mine\n")
    code, err = _run(capsys, *argv)
    assert code == exits.USAGE
    assert f"mount point {tmp_path / 'mnt'} is not empty" in err
    assert "--allow-non-empty" in err


@pytest.mark.parametrize(
    "allow",
    [["--allow-non-empty"], ["-o", "nonempty"], ["-o", "allow_non_empty"]],
    ids=["flag", "o nonempty", "o allow_non_empty"],
)
def test_allow_non_empty_lets_it_go_on_to_the_server(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    allow: list[str],
) -> None:
    _server_says(monkeypatch, preflight.Unreachable(f"{URL} gave no usable answer"))
    argv = _mount(tmp_path, "--foreground", *allow)
    (tmp_path / "mnt" / "notes.txt").write_text("mine\n")
    code, err = _run(capsys, *argv)
    assert code == exits.UNREACHABLE, err  # past the mount point, refused by the server


def test_nonempty_is_the_flag_allow_non_empty() -> None:
    assert option_flags(["nonempty,allow_other"]) == ["--allow-non-empty", "--allow-other"]


def test_the_config_file_may_allow_a_non_empty_mount_point(tmp_path: Path) -> None:
    path = tmp_path / "amigofs.toml"
    path.write_text("allow_non_empty = true\n")
    path.chmod(0o600)
    assert config.load_file(path) == {"allow_non_empty": True}


# --- what the offline fallback accepts as a cache of this server ------------------------------


def _check(cache: Path, base_url: str, workspaces: list[str] | None = None) -> preflight.Checked:
    config = preflight.client_config(base_url, 5.0)
    result: preflight.Checked = trio.run(preflight.check, config, KEY, workspaces, cache)
    return result


def _keep_root_listing(cache: Path, base_url: str) -> None:
    cache.mkdir(mode=0o700, exist_ok=True)
    meta = MetaStore(cache)
    try:
        meta.save({"identity": KEY.identity(base_url), "workspaces": [WORKSPACE]}, "root")
    finally:
        meta.close()


def test_a_cache_of_this_server_is_served_when_it_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _server_says(monkeypatch, preflight.Unreachable(f"{URL} gave no usable answer"))
    _keep_root_listing(tmp_path / "cache", URL)
    checked = _check(tmp_path / "cache", URL)
    assert "serving what the cache" in checked.warnings[0]


def test_a_cache_of_another_server_is_not_served(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    typo = "http://127.0.0.1:10"
    _server_says(monkeypatch, preflight.Unreachable(f"{typo} gave no usable answer"))
    _keep_root_listing(tmp_path / "cache", URL)
    with pytest.raises(preflight.Unreachable, match="holds nothing of this server and key"):
        _check(tmp_path / "cache", typo)


def test_a_mount_of_a_workspace_the_index_lists_is_served(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _server_says(monkeypatch, preflight.Unreachable(f"{URL} gave no usable answer"))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    MetaStore(cache).close()  # the listings' directory, as any mount leaves it
    index = CallIndex(cache)
    index.open()
    started = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    index.add(WORKSPACE, [CallSummary(WORKSPACE, "CA1", started, 3.0, "inbound")])
    index.close()
    assert _check(cache, URL, [WORKSPACE.upper()]).workspaces == (WORKSPACE.upper(),)
    other = "77aa0e6a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
    with pytest.raises(preflight.Unreachable):
        _check(cache, URL, [other])
