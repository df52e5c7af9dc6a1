"""Settings the user's config file, flags and environment give, refused in one line that
never echoes a secret: what `amigofs mount` prints and its exit status, run in this
process (the refusals come before anything is mounted or sent). Moved here from
tests/test_config_security.py, which keeps what needs a second user, a mount or a
server; its SECRET and message rules are the same."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs import config
from amigofs.api.secret import ApiKey
from amigofs.commands import cli
from amigofs.commands import mount as mount_command
from amigofs.commands.mount_options import mount_arguments

SECRET = "SENTINEL-" + secrets.token_hex(8)  # a value that must never be printed


@pytest.fixture(autouse=True)
def refusals_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No API key and no AMIGOFS_* setting but those a test sets; and should a refusal
    be missed, no mount and no cache outside tmp_path, but a failed test."""
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX) or name == "AMIGO_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def not_refused(*args: object) -> int:
        raise AssertionError("the mount went ahead: it should have been refused")

    monkeypatch.setattr(mount_command, "_detach", not_refused)
    monkeypatch.setattr(mount_command, "_checked", not_refused)


def mount(
    capsys: pytest.CaptureFixture[str], *argv: str | Path, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """`amigofs mount ARGV` in this process: its exit status and what it printed."""
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        try:
            code = cli.main(["mount", *map(str, argv)])
        except SystemExit as exc:  # argparse's refusals
            code = int(exc.code or 0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    return code, err


def assert_refused(refused: tuple[int, str], *needles: str) -> str:
    """The one line a refusal is, exit status 2; it names each of `needles`."""
    code, err = refused
    assert code == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("amigofs: "), err
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def key_file(directory: Path, key: str, mode: int = 0o600) -> Path:
    path = directory / "api.key"
    path.write_text(key + "\n")
    path.chmod(mode)
    return path


@contextlib.contextmanager
def listener(host: str) -> Iterator[socket.socket]:
    """A TCP server socket nobody should connect to; `nothing_arrived` says if one did."""
    with socket.socket() as server:
        server.bind((host, 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def nothing_arrived(server: socket.socket) -> bool:
    # The command has returned: a connection it made would be queued by now.
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


@pytest.fixture
def nobody_listens() -> Iterator[tuple[str, socket.socket]]:
    """The URL of a server nobody should connect to, and its socket."""
    with listener("127.0.0.3") as server:
        host, port = server.getsockname()[:2]
        yield f"http://{host}:{port}", server


def test_a_private_key_file_reached_through_a_link_is_read(tmp_path: Path) -> None:
    # As systemd credentials and Kubernetes secrets are laid out.
    target = key_file(tmp_path, SECRET)
    link = tmp_path / "current.key"
    link.symlink_to(target)
    assert ApiKey.from_file(link).reveal() == SECRET


# --- the config file ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646, 0o620], ids=oct)
def test_a_config_others_can_write_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    nobody_listens: tuple[str, socket.socket],
    mode: int,
) -> None:
    url, server = nobody_listens
    path = tmp_path / "amigofs.toml"
    path.write_text(f'base_url = "{url}"\n')
    path.chmod(mode)
    refused = mount(
        capsys, tmp_path, "--config", path, "--foreground", env={"AMIGO_API_KEY": SECRET}
    )
    assert_refused(
        refused,
        f"config {path} is writable by group or others (mode {mode:04o})",
        f"run: chmod go-w {path}",
    )
    assert nothing_arrived(server)


def test_a_config_from_the_environment_gets_the_same_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "amigofs.toml"
    path.write_text('base_url = "http://127.0.0.3:9"\n')
    path.chmod(0o666)
    env = {"AMIGOFS_CONFIG": str(path), "AMIGO_API_KEY": SECRET}
    assert_refused(mount(capsys, tmp_path, "--foreground", env=env), f"config {path} is writable")


# --- errors never echo a secret ---------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        f'base_url = "https://amigo:{SECRET}@api.example.com"',
        f'base_url = "https://api.example.com/v1?token={SECRET}"',
        f'base_url = "ftp://{SECRET}@api.example.com"',
        f'api_key_file = ["{SECRET}"]',
        f'api_key_file = {{ key = "{SECRET}" }}',
        f'api_key = "{SECRET}"',
        f'token = "{SECRET}"',
        f'{SECRET} = "x"',
    ],
)
def test_a_config_error_does_not_echo_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str
) -> None:
    path = tmp_path / "amigofs.toml"
    path.write_text(line + "\n")
    assert_refused(mount(capsys, tmp_path, "--config", path, "--foreground"), f"config {path}")


def test_a_base_url_error_from_a_flag_or_the_environment_does_not_echo_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"https://amigo:{SECRET}@api.example.com"
    assert_refused(mount(capsys, tmp_path, "--base-url", url, "--foreground"), "--base-url")
    env = {"AMIGOFS_BASE_URL": url}
    assert_refused(mount(capsys, tmp_path, "--foreground", env=env), "AMIGOFS_BASE_URL")


def test_the_api_key_named_as_a_setting_says_where_it_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "amigofs.toml"
    path.write_text(f'api_key = "{SECRET}"\n')
    line = assert_refused(mount(capsys, tmp_path, "--config", path, "--foreground"))
    assert "the API key itself is never a setting" in line and "api_key_file" in line


# --- cache_min_free -----------------------------------------------------------------------


def test_cache_min_free_comes_from_a_flag_the_environment_the_file_or_fstab(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "amigofs.toml"
    path.write_text('cache_min_free = "2G"\n')
    assert config.resolve({}, {}, None).cache_min_free == 1 << 30
    assert config.resolve({}, {}, path).cache_min_free == 2 << 30
    assert config.resolve({}, {"AMIGOFS_CACHE_MIN_FREE": "0"}, path).cache_min_free == 0
    flag = config.parse_min_free("500M")
    assert config.resolve({"cache_min_free": flag}, {}, path).cache_min_free == 500 << 20
    assert mount_arguments("/mnt/a", ["cache_min_free=3G,insecure_http"])[2:] == [
        "--cache-min-free", "3G", "--insecure-http",
    ]  # fmt: skip
    env = {"AMIGO_API_KEY": SECRET}
    code, err = mount(capsys, tmp_path, "--cache-min-free=-1G", "--foreground", env=env)
    assert code == 2  # one line, naming the command and the flag (issue #20)
    assert err == "amigofs mount: --cache-min-free: must not be negative, not '-1G'\n"
    path.write_text("cache_min_free = true\n")
    assert_refused(
        mount(capsys, tmp_path, "--config", path, "--foreground", env=env), "cache_min_free"
    )
