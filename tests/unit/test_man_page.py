"""`amigofs man` prints the man page, roff made from the parser itself: every command,
every flag with its help, so it cannot fall behind them."""

from __future__ import annotations

import re

import pytest

from amigofs import __version__
from tests.unit.command_line import commands, run


def man_page(capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = run(capsys, "man")
    assert (code, err) == (0, "")
    return out


def _plain(roff: str) -> str:
    """The text a reader sees, near enough: escapes undone, font changes dropped."""
    text = re.sub(r"\\f[BIRP]", "", roff).replace("\\-", "-").replace("\\e", "\\")
    return text.replace("\\&", "")


def test_the_man_page_is_a_section_1_page(capsys: pytest.CaptureFixture[str]) -> None:
    roff = man_page(capsys)
    assert roff.startswith('.\\"') or roff.startswith(".TH")
    assert re.search(rf'^\.TH AMIGOFS 1 .*"amigofs {re.escape(__version__)}"', roff, re.M)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENVIRONMENT", "SEE ALSO"):
        assert re.search(rf'^\.SH "?{section}"?$', roff, re.M), section
    # No line a roff reader would take for a request it does not know.
    for line in roff.splitlines():
        assert not line.startswith("'"), line
        if line.startswith("."):
            assert re.match(
                r"\.(\\\"|(TH|SH|SS|TP|PP|B|I|BR|IR|RS|RE|nf|fi|IP|br|nh|ad)\b)", line
            ), line


def test_the_man_page_names_every_command_and_flag(capsys: pytest.CaptureFixture[str]) -> None:
    text = _plain(man_page(capsys))
    for name, parser in commands().items():
        assert f"amigofs {name}" in text, name
        for action in parser._actions:
            for flag in action.option_strings:
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (name, flag)
    assert "--version" in text
    assert "AMIGO_API_KEY" in text and "AMIGOFS_" in text


def test_the_man_page_carries_the_help_of_each_flag(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_plain(man_page(capsys)).split())
    for phrase in (
        "longest any file operation waits on the network",
        "in seconds or with a unit: 90, 30s, 5m (default: 30)",
        "files read at once (default: 4)",
    ):
        assert phrase in text, phrase
