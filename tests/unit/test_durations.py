"""Durations as users type them (30s, 5m, 1h, 1h30m; plain seconds as before) for every
duration setting, alike in a flag, `-o`, the environment and the config file; a bad one
is refused in one line that names the setting and what it takes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amigofs import config
from amigofs.commands import cli
from amigofs.commands.arguments import mount_settings

DURATIONS = ("timeout", "listing_ttl", "negative_ttl")


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("typed", "seconds"),
    [
        ("30", 30.0), (30, 30.0), (2.5, 2.5), ("2.5", 2.5), ("30s", 30.0), ("5m", 300.0),
        ("1h", 3600.0), ("1h30m", 5400.0), ("2m30s", 150.0), ("500ms", 0.5), ("1d", 86400.0),
        ("1.5h", 5400.0), (" 5m ", 300.0),
    ],
)  # fmt: skip
def test_a_duration_takes_a_unit_or_plain_seconds(typed: object, seconds: float) -> None:
    assert config.parse_duration(typed) == seconds


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_hours_minutes_and_seconds_add_up(hours: int, minutes: int, seconds: int) -> None:
    parts = [(hours, "h"), (minutes, "m"), (seconds, "s")]
    typed = "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"
    total = hours * 3600 + minutes * 60 + seconds
    if total == 0:
        with pytest.raises(ValueError, match="more than 0"):
            config.parse_duration(typed)
    else:
        assert config.parse_duration(typed) == total


@pytest.mark.parametrize(
    "typed", ["5x", "abc", "", "5 m", "m", "1h-5m", "5M", True, [5], "nan", "inf"]
)
def test_a_bad_duration_says_what_a_duration_is(typed: object) -> None:
    with pytest.raises(ValueError) as caught:
        config.parse_duration(typed)
    message = str(caught.value)
    assert "\n" not in message
    assert "seconds" in message and "5m" in message, message


@pytest.mark.parametrize("typed", ["0", "0s", 0, "-5", "-5s"])
def test_a_duration_is_more_than_zero(typed: object) -> None:
    with pytest.raises(ValueError):
        config.parse_duration(typed)


def _settings(*argv: str) -> config.Settings:
    return mount_settings(cli.build_parser().parse_args(["mount", "/mnt/a", *argv]))


@pytest.mark.parametrize("key", DURATIONS)
def test_every_duration_flag_takes_units(key: str) -> None:
    settings = _settings(config_flag(key), "1h30m")
    assert getattr(settings, key) == 5400.0


@pytest.mark.parametrize("key", DURATIONS)
def test_every_duration_option_takes_units(key: str) -> None:
    # -o as `amigofs mount` expands it: each option becomes its flag.
    expanded = cli._expand_options(["mount", "/mnt/a", "-o", f"{key}=5m"])
    settings = mount_settings(cli.build_parser().parse_args(expanded))
    assert getattr(settings, key) == 300.0


def test_the_environment_takes_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMIGOFS_LISTING_TTL", "2m")
    assert _settings().listing_ttl == 120.0


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "amigofs.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_config_file_takes_a_string_with_a_unit_or_a_number(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'timeout = "30s"\nlisting_ttl = "5m"\nnegative_ttl = 2.5\n')
    assert config.load_file(path) == {"timeout": 30.0, "listing_ttl": 300.0, "negative_ttl": 2.5}


def test_a_bad_duration_in_the_config_file_names_the_key(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'listing_ttl = "5 minutes"\n')
    with pytest.raises(config.ConfigError) as caught:
        config.load_file(path)
    message = str(caught.value)
    assert message.startswith(f"config {path}: listing_ttl: ") and "5m" in message
    assert "\n" not in message


def test_a_duration_of_the_wrong_type_in_the_config_file_says_what_it_takes(
    tmp_path: Path,
) -> None:
    path = _toml(tmp_path, "timeout = true\n")
    with pytest.raises(config.ConfigError, match=r"timeout: expected a number of seconds"):
        config.load_file(path)


@pytest.mark.parametrize("key", DURATIONS)
def test_a_bad_duration_flag_is_one_line_naming_the_flag(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["mount", "/mnt/a", config_flag(key), "5x"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage" not in err, err
    assert err.startswith(f"amigofs mount: {config_flag(key)}: expected a number of seconds"), err


def test_a_bad_duration_option_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["mount", "/mnt/a", "-o", "listing_ttl=5x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "option listing_ttl=: expected a number of seconds" in err and "5m" in err, err


def test_the_help_says_durations_take_units(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["mount", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for key in DURATIONS:
        assert f"{config_flag(key)} DURATION" in help_text, key
    assert "5m" in help_text


def config_flag(key: str) -> str:
    return "--" + key.replace("_", "-")
