"""The commands and flags of `amigofs` as its argparse parser declares them, read once
for the shell completion (completion.py) and the man page (manpage.py): both are made
from the parser every run, so neither can name a flag that is gone or miss a new one.

argparse has no public way to walk a parser; this reads its actions (`_actions`, the
subparsers' `_choices_actions`) here and nowhere else, as argparse-manpage and shtab do.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

# What a value is completed with: one of `choices`, a file or directory name, or
# nothing (a size, a URL, a number: whatever the user types).
WORDS, FILES, DIRS, ANY = "words", "files", "dirs", "any"
# Metavars that name a directory, or any path, whatever the argument's type.
_DIR_METAVARS = frozenset({"DIR", "MOUNTPOINT"})
_FILE_METAVARS = frozenset({"FILE", "PATH"})


@dataclass(slots=True, frozen=True)
class Argument:
    """A flag (names: --cache-size) or a positional argument (names empty)."""

    names: tuple[str, ...]
    metavar: str  # "" for a flag that takes no value
    help: str
    values: str  # WORDS, FILES, DIRS or ANY
    choices: tuple[str, ...]
    repeatable: bool  # a flag given more than once, a positional taking several
    optional: bool  # a positional that may be left out


@dataclass(slots=True, frozen=True)
class Command:
    name: str  # "" for amigofs itself
    prog: str  # amigofs mount
    summary: str  # its line in the list of commands
    description: str
    epilog: str
    flags: tuple[Argument, ...]
    positionals: tuple[Argument, ...]


def commands(root: argparse.ArgumentParser) -> tuple[Command, tuple[Command, ...]]:
    """amigofs itself (its own flags), and each of its commands in the order of --help."""
    summaries: dict[str, str] = {}
    parsers: dict[str, argparse.ArgumentParser] = {}
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers = dict(action.choices)
            summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
    top = _command("", root, "")
    return top, tuple(
        _command(name, parser, summaries.get(name, "")) for name, parser in parsers.items()
    )


def _command(name: str, parser: argparse.ArgumentParser, summary: str) -> Command:
    formatter = parser._get_formatter()
    flags: list[Argument] = []
    positionals: list[Argument] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        argument = _argument(action, formatter)
        (flags if action.option_strings else positionals).append(argument)
    return Command(
        name=name,
        prog=parser.prog,
        summary=summary,
        description=" ".join((parser.description or "").split()),
        epilog=" ".join((parser.epilog or "").split()),
        flags=tuple(flags),
        positionals=tuple(positionals),
    )


def _argument(action: argparse.Action, formatter: argparse.HelpFormatter) -> Argument:
    choices = tuple(str(choice) for choice in action.choices or ())
    takes_value = action.nargs != 0
    if isinstance(action.metavar, str):
        metavar = action.metavar
    elif choices:
        metavar = "{" + ",".join(choices) + "}"
    else:
        metavar = action.dest.upper()
    if choices:
        values = WORDS
    elif metavar in _DIR_METAVARS:
        values = DIRS
    elif metavar in _FILE_METAVARS or action.type is Path:
        values = FILES
    else:
        values = ANY
    help_text = formatter._expand_help(action) if action.help else ""
    return Argument(
        names=tuple(action.option_strings),
        metavar=metavar if takes_value else "",
        help=" ".join(help_text.split()),
        values=values if takes_value else ANY,
        choices=choices,
        repeatable=isinstance(action, argparse._AppendAction | argparse._CountAction)
        or action.nargs in ("+", "*"),
        optional=action.nargs in ("?", "*"),
    )
