"""A bad flag value or an unknown flag is one line naming the command and the flag, exit
status 2; the usage comes with --help only, and the help breaks no word."""

from __future__ import annotations

import argparse
import os

import pytest

from amigofs import config
from amigofs.commands import cli
from tests.unit.command_line import commands, run


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "80")


def assert_one_line(result: tuple[int, str, str], starts: str) -> None:
    code, out, err = result
    assert code == 2, result
    assert out == "", out
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "usage:" not in err and "Traceback" not in err, err
    assert err.startswith(starts), err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["mount", "M", "--cache-size", "10"], "amigofs mount: --cache-size: must be at least 16M, not '10'"),
        (["mount", "M", "--cache-min-free", "lots"], "amigofs mount: --cache-min-free: expected a size"),
        (["mount", "M", "--kernel-readahead", "1G"], "amigofs mount: --kernel-readahead: must be at most 64M"),
        (["mount", "M", "--timeout", "soon"], "amigofs mount: --timeout: expected a number of seconds"),
        (["mount", "M", "--timezone", "Mars/Olympus"], "amigofs mount: --timezone: expected an IANA time zone"),
        (["mount", "M", "--log-level", "loud"], "amigofs mount: --log-level: invalid choice: 'loud'"),
        (["mount", "M", "--timeout"], "amigofs mount: --timeout: expected one argument"),
        (["prefetch", "P", "--jobs", "0"], "amigofs prefetch: --jobs/-j: must be a whole number from 1 to 64"),
        (["prefetch", "P", "--since", "yesterday"], "amigofs prefetch: --since: not a date"),
        (["emulator", "--port", "http"], "amigofs emulator: --port: invalid int value: 'http'"),
        (["workspaces", "--config"], "amigofs workspaces: --config: expected one argument"),
    ],
)  # fmt: skip
def test_a_bad_flag_value_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    assert_one_line(run(capsys, *argv), says)


@pytest.mark.parametrize(
    "argv",
    [["mount", "M"], ["unmount", "M"], ["workspaces"], ["stats", "M"], ["prefetch", "M"], ["demo"]],
)
def test_an_unknown_flag_after_a_command_names_that_command(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    command = argv[0]
    result = run(capsys, *argv, "--no-such-flag")
    assert_one_line(result, f"amigofs {command}: unrecognized arguments: --no-such-flag")
    assert f"amigofs {command} --help" in result[2]


def test_an_unknown_command_or_none_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line(run(capsys, "mnt"), "amigofs: COMMAND: invalid choice: 'mnt'")
    result = run(capsys)
    assert_one_line(result, "amigofs: the following arguments are required: COMMAND")
    assert "amigofs --help" in result[2]


def test_a_missing_mount_point_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line(
        run(capsys, "unmount"), "amigofs unmount: the following arguments are required: MOUNTPOINT"
    )


def test_help_still_shows_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "mount", "--help")
    assert (code, err) == (0, "")
    assert out.startswith("usage: amigofs mount")


# --- the help breaks no word ------------------------------------------------------------------


def _parsers() -> list[argparse.ArgumentParser]:
    return [cli.build_parser(), *commands().values()]


@pytest.mark.parametrize("columns", [40, 60, 80, 100, 132])
def test_the_help_breaks_no_word(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    # Every word of the help at a given width is a word of the help on one endless line.
    monkeypatch.setenv("COLUMNS", "100000")
    whole = {parser.prog: set(parser.format_help().split()) for parser in _parsers()}
    monkeypatch.setenv("COLUMNS", str(columns))
    for parser in _parsers():
        broken = set(parser.format_help().split()) - whole[parser.prog]
        assert not broken, (parser.prog, columns, sorted(broken))


def test_the_top_level_help_shows_metadata_json_whole(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "metadata.json}" in out
