"""`amigofs completion bash|zsh` prints a completion script made from the parser itself:
it names every command and every flag of each, so it cannot fall behind them."""

from __future__ import annotations

import argparse
import re

import pytest

from amigofs.commands.mount_options import OPTIONS
from tests.unit.command_line import commands, run


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions for name in action.option_strings}


def _words(script: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])-{1,2}[A-Za-z][\w-]*", script))


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_script_names_every_command_and_flag(
    capsys: pytest.CaptureFixture[str], shell: str
) -> None:
    code, script, err = run(capsys, "completion", shell)
    assert (code, err) == (0, "")
    for name, parser in commands().items():
        assert re.search(rf"(?<![\w-]){name}(?![\w-])", script), name
        missing = flags(parser) - _words(script)
        assert not missing, (name, sorted(missing))
    assert {"--help", "--version"} <= _words(script)


def test_the_bash_script_registers_itself(capsys: pytest.CaptureFixture[str]) -> None:
    _, script, _ = run(capsys, "completion", "bash")
    assert script.rstrip().endswith("complete -F _amigofs amigofs")
    # Values: choices by name, files and directories where a flag takes a path.
    assert "debug info warning error" in script
    assert "compgen -d" in script and "compgen -f" in script


def test_the_zsh_script_is_a_completion_function(capsys: pytest.CaptureFixture[str]) -> None:
    _, script, _ = run(capsys, "completion", "zsh")
    assert script.startswith("#compdef amigofs\n")
    assert "_arguments" in script and "_files -/" in script
    # Each command with what it does, as zsh lists them.
    assert "'mount:mount the recordings at a directory'" in script


def test_an_unknown_shell_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "completion", "fish")
    assert (code, out) == (2, "")
    assert (
        err.startswith("amigofs completion: SHELL: invalid choice: 'fish'") and err.count("\n") == 1
    )


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_options_of_mount_o_complete_by_name(
    capsys: pytest.CaptureFixture[str], shell: str
) -> None:
    _, script, _ = run(capsys, "completion", shell)
    for option in OPTIONS:
        assert re.search(rf"(?<![\w-]){option}(?![\w-])", script), option
