"""The README's synopsis says what the commands take: read against their parsers, so a flag
added, renamed or dropped shows here before a user reads a synopsis that lies."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tests.unit.command_line import commands

README = Path(__file__).resolve().parents[2] / "README.md"
SHOWN = ("mount", "unmount", "workspaces", "completion", "man")


def _synopsis() -> dict[str, str]:
    """Each command's synopsis in the README: the indented `amigofs COMMAND ...` lines and
    the lines that continue them."""
    text = README.read_text()
    block = text[text.index("    amigofs mount [MOUNTPOINT]") :]
    block = block[: block.index("\n\n")]
    found: dict[str, str] = {}
    command = None
    for line in block.splitlines():
        words = line.split()
        if words[:1] == ["amigofs"]:  # a new command; `amigofs --version` is none
            command = words[1] if len(words) > 1 and not words[1].startswith("-") else None
            if command is not None:
                found[command] = ""
        if command is not None:
            found[command] += " " + line
    return found


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }


@pytest.mark.parametrize("command", SHOWN)
def test_the_synopsis_names_every_flag_the_command_takes_and_no_other(command: str) -> None:
    synopsis = _synopsis()
    assert command in synopsis, f"the README's synopsis lacks `amigofs {command}`"
    written = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", synopsis[command]))
    assert written == _flags(commands()[command])


def test_the_synopsis_shows_every_command_users_run() -> None:
    assert set(SHOWN) <= set(_synopsis())


def test_the_configuration_table_has_a_row_for_every_setting() -> None:
    from amigofs import config

    rows = set(re.findall(r"^\| `(\w+)` ", README.read_text(), re.MULTILINE))
    assert set(config.KEYS) <= rows
