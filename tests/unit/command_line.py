"""`amigofs ARGV` run in the test's own process (cli.main, no subprocess), and the
commands its parser declares: what the tests of errors, completion and the man page
read."""

from __future__ import annotations

import argparse

import pytest

from amigofs.commands import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`amigofs ARGV`: its exit status, stdout and stderr."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def commands() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser by its name."""
    root = cli.build_parser()
    action = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)
