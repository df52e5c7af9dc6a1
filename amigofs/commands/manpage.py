"""`amigofs man`: the man page, amigofs(1) in roff, made from the parser.

Made from the commands' own descriptions and flags each time it is printed, so the page
says what `--help` says, in man's form (NAME, SYNOPSIS, a section for each command, the
environment). Install it where man looks, for a user with ~/.local/bin on PATH:
`amigofs man > ~/.local/share/man/man1/amigofs.1`; or read it at once: `amigofs man |
man -l -`. No package (argparse-manpage) is needed: it would write the same page at build
time, which a pip install into a virtualenv puts where man does not look.
"""

from __future__ import annotations

import argparse
import sys

from amigofs import __version__, config
from amigofs.commands.arguments import KEY_ENV
from amigofs.commands.reference import Argument, Command, commands


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments: the page goes to stdout."""


def run(args: argparse.Namespace) -> int:
    from amigofs.commands.cli import build_parser  # the parser that runs this command

    sys.stdout.write(man_page(*commands(build_parser())))
    return 0


def man_page(top: Command, subcommands: tuple[Command, ...]) -> str:
    name_line = top.description.split(":", 1)[0].rstrip(".")
    lines = [
        ".\\\" amigofs(1), made by `amigofs man` from the commands' own flags.",
        f'.TH AMIGOFS 1 "" "amigofs {__version__}" "User Commands"',
        # Left-aligned and unhyphenated: paths, flags and URLs stay whole.
        ".nh",
        ".ad l",
        ".SH NAME",
        f"amigofs \\- {_text(name_line[:1].lower() + name_line[1:])}",
        ".SH SYNOPSIS",
    ]
    for command in subcommands:
        lines += (
            [".br", *_synopsis(command)] if command is not subcommands[0] else _synopsis(command)
        )
    lines += [".SH DESCRIPTION", _paragraph(top.description), ".SH OPTIONS", *_flags(top.flags)]
    lines.append(".SH COMMANDS")
    for command in subcommands:
        lines += [f'.SS "{_text(command.prog)}"', *_synopsis(command), ".PP"]
        lines.append(_paragraph(command.description or command.summary))
        for positional in command.positionals:
            lines += [".TP", f"\\fI{_text(positional.metavar)}\\fR", _paragraph(positional.help)]
        lines += _flags(command.flags)
        if command.epilog:
            lines += [".PP", _paragraph(command.epilog)]
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        f".B {KEY_ENV}",
        _paragraph("The API key, unless --api-key-file names a file holding it. The key is "
                   "never taken from the command line."),
        ".TP",
        f"\\fB{config.ENV_PREFIX}\\fR\\fIKEY\\fR",
        _paragraph(f"Each setting of mount's flags, as {config.ENV_PREFIX}CACHE_SIZE=20G or "
                   f"{config.ENV_PREFIX}WORKSPACES=a,b: a flag beats the environment, which "
                   "beats the config file, which beats the default."),
        ".TP",
        f".B {config.ENV_PREFIX}CONFIG",
        _paragraph("The config file when --config is not given."),
        ".SH SEE ALSO",
        # mount.fuse.amigofs has no page of its own: its --help says what it takes.
        ".BR fusermount3 (1),",
        ".BR fuse (8),",
        _paragraph("mount.fuse.amigofs --help (the fstab helper)"),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def _synopsis(command: Command) -> list[str]:
    words = [f"[\\fI{_text('OPTION')}\\fR]..."] if command.flags else []
    for positional in command.positionals:
        shown = f"\\fI{_text(positional.metavar)}\\fR" + ("..." if positional.repeatable else "")
        words.append(f"[{shown}]" if positional.optional else shown)
    return [f".B {_text(command.prog)}", *([" ".join(words)] if words else [])]


def _flags(flags: tuple[Argument, ...]) -> list[str]:
    lines = []
    for flag in flags:
        names = ", ".join(f"\\fB{_text(name)}\\fR" for name in flag.names)
        value = f" \\fI{_text(flag.metavar)}\\fR" if flag.metavar else ""
        lines += [".TP", names + value, _paragraph(flag.help)]
    return lines


def _paragraph(text: str) -> str:
    """One filled paragraph: a line that begins with a dot or a quote would be a request."""
    escaped = _text(" ".join(text.split()))
    return "\\&" + escaped if escaped.startswith((".", "'")) else escaped


def _text(text: str) -> str:
    """Text as roff prints it: a backslash is \\e; every - is \\-, so that a flag copied
    from the page is the ASCII hyphens it was (groff may print a plain - as a hyphen)."""
    return text.replace("\\", "\\e").replace("-", "\\-")
