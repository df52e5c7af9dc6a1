"""`amigofs completion bash|zsh`: a shell completion script made from the parser.

The script is static: completing runs no Python (argcomplete runs the program again on
every Tab), it needs no package beyond amigofs, and being made from the parser each time
it is printed it names exactly the commands and flags of this version. Commands and
flags complete by name, a flag's choices by name (--log-level), paths where a flag or
argument takes one (directories for a mount point and --cache-dir).
"""

from __future__ import annotations

import argparse
import sys

from amigofs.commands.arguments import flag_name
from amigofs.commands.mount_options import OPTION_WORDS
from amigofs.commands.reference import DIRS, FILES, WORDS, Argument, Command, commands

SHELLS = ("bash", "zsh")
# The flag whose value is mount(8)-style options (`-o cache_size=20G,allow_other`):
# completed with the options' names.
OPTIONS_FLAG = "-o"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or zsh")


def run(args: argparse.Namespace) -> int:
    from amigofs.commands.cli import build_parser  # the parser that runs this command

    top, subcommands = commands(build_parser())
    script = bash_script(top, subcommands) if args.shell == "bash" else zsh_script(top, subcommands)
    sys.stdout.write(script)
    return 0


# --- bash ----------------------------------------------------------------------------------


def bash_script(top: Command, subcommands: tuple[Command, ...]) -> str:
    lines = [
        "# bash completion for amigofs; made by `amigofs completion bash` from its own flags.",
        "# Install: amigofs completion bash > ~/.local/share/bash-completion/completions/amigofs",
        "",
        '_amigofs_words() { COMPREPLY=($(compgen -W "$1" -- "$cur")); }',
        "_amigofs_files() {",
        "    local IFS=$'\\n'",
        "    compopt -o filenames 2>/dev/null",
        '    COMPREPLY=($(compgen -f -- "$cur"))',
        "}",
        "_amigofs_options() {",
        '    COMPREPLY=($(compgen -W "$1" -- "$cur"))',
        "    # cache_size= wants its value next: no space after it.",
        "    [[ ${COMPREPLY[0]} == *= ]] && compopt -o nospace 2>/dev/null",
        "}",
        "_amigofs_dirs() {",
        "    local IFS=$'\\n'",
        "    compopt -o filenames 2>/dev/null",
        '    COMPREPLY=($(compgen -d -- "$cur"))',
        "}",
        "",
        "_amigofs() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        '    local command="" i',
        "    # The command: the first word after amigofs that is not a flag (amigofs's own",
        "    # flags take no value).",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        if [[ ${COMP_WORDS[i]} != -* ]]; then command=${COMP_WORDS[i]}; break; fi",
        "    done",
        "    COMPREPLY=()",
        "    case $command in",
        '    "")',
        f'        if [[ $cur == -* ]]; then _amigofs_words "{_names(top.flags)}"',
        f'        else _amigofs_words "{" ".join(c.name for c in subcommands)}"; fi',
        "        ;;",
    ]
    for command in subcommands:
        lines += [f"    {command.name})", *_bash_command(command), "        ;;"]
    lines += ["    esac", "}", "", "complete -F _amigofs amigofs", ""]
    return "\n".join(lines)


def _bash_command(command: Command) -> list[str]:
    """The lines of one command's case: a flag's value after the flag, else its flags
    or its positional argument."""
    by_values: dict[str, list[str]] = {}
    for flag in command.flags:
        if OPTIONS_FLAG in flag.names:
            by_values.setdefault("options", []).extend(flag.names)
        elif flag.metavar:
            by_values.setdefault(_values_key(flag), []).extend(flag.names)
    lines = []
    if by_values:
        lines.append("        case $prev in")
        for key, names in by_values.items():
            lines.append(f"        {'|'.join(names)}) {_bash_values(key)}; return ;;")
        lines.append("        esac")
    positional = command.positionals[0] if command.positionals else None
    otherwise = _bash_values(_values_key(positional)) if positional else ":"
    lines += [
        f'        if [[ $cur == -* ]]; then _amigofs_words "{_names(command.flags)}"',
        f"        else {otherwise}; fi",
    ]
    return lines


def _values_key(argument: Argument) -> str:
    return f"words:{' '.join(argument.choices)}" if argument.values == WORDS else argument.values


def _bash_values(key: str) -> str:
    if key == "options":
        return f'_amigofs_options "{" ".join(OPTION_WORDS)}"'
    if key.startswith("words:"):
        return f'_amigofs_words "{key.removeprefix("words:")}"'
    return {FILES: "_amigofs_files", DIRS: "_amigofs_dirs"}.get(key, ":")


def _names(flags: tuple[Argument, ...]) -> str:
    return " ".join(name for flag in flags for name in flag.names)


# --- zsh -----------------------------------------------------------------------------------


def zsh_script(top: Command, subcommands: tuple[Command, ...]) -> str:
    lines = [
        "#compdef amigofs",
        "# zsh completion for amigofs; made by `amigofs completion zsh` from its own flags.",
        "# Install: amigofs completion zsh > ~/.zfunc/_amigofs, with fpath=(~/.zfunc $fpath)",
        "# before compinit in ~/.zshrc.",
        "",
        "_amigofs() {",
        "    local curcontext=$curcontext state line ret=1",
        "    typeset -A opt_args",
        "    _arguments -C \\",
        *[f"        {spec} \\" for spec in _zsh_flags(top.flags)],
        "        '1:command:_amigofs_commands' \\",
        "        '*::argument:->argument' && ret=0",
        "    case $state in",
        "    argument)",
        "        curcontext=${curcontext%:*:*}:amigofs-$words[1]:",
        "        case $words[1] in",
    ]
    for command in subcommands:
        specs = [*_zsh_flags(command.flags), *map(_zsh_positional, command.positionals)]
        lines.append(f"        {command.name})")
        # Every command has --help: the list of specs is never empty.
        lines += ["            _arguments -s \\", *[f"                {spec} \\" for spec in specs]]
        lines[-1] = lines[-1].removesuffix(" \\") + " && ret=0"
        lines.append("            ;;")
    lines += [
        "        esac",
        "        ;;",
        "    esac",
        "    return ret",
        "}",
        "",
        "_amigofs_commands() {",
        "    local -a commands=(",
        *[f"        {_quote(c.name + ':' + _zsh_text(_short(c.summary)))}" for c in subcommands],
        "    )",
        "    _describe -t commands 'amigofs command' commands",
        "}",
        "",
        *_zsh_options(subcommands),
        '_amigofs "$@"',
        "",
    ]
    return "\n".join(lines)


def _zsh_flags(flags: tuple[Argument, ...]) -> list[str]:
    specs = []
    for flag in flags:
        exclusive = "" if flag.repeatable else f"({' '.join(flag.names)})"
        if flag.names[0] in ("-h", "--help", "--version"):
            exclusive = "(- *)"  # nothing else after these
        for name in flag.names:
            spec = f"{exclusive}{'*' if flag.repeatable else ''}{name}"
            if flag.metavar:
                # --flag=: the value in the next word or after "="; -o+: in the same word too.
                spec += "=" if name.startswith("--") else "+"
            spec += f"[{_zsh_text(_short(flag.help))}]"
            if flag.metavar:
                spec += f":{_zsh_text(flag.metavar)}:{_zsh_action(flag)}"
            specs.append(_quote(spec))
    return specs


def _zsh_options(subcommands: tuple[Command, ...]) -> list[str]:
    """_amigofs_options: the names of -o's options, each with its flag's help, the
    values of those that take one as the flag's are."""
    taking = next((c for c in subcommands if any(OPTIONS_FLAG in f.names for f in c.flags)), None)
    if taking is None:
        return []
    flags = {name: flag for flag in taking.flags for name in flag.names}
    specs = []
    for word in OPTION_WORDS:
        name = word.removesuffix("=")
        flag = flags.get(flag_name(name))
        spec = f"{name}[{_zsh_text(_short(flag.help)) if flag else ''}]"
        if word.endswith("="):
            metavar, action = (flag.metavar, _zsh_action(flag)) if flag else ("VALUE", " ")
            spec += f":{_zsh_text(metavar)}:{action}"
        specs.append(f"        {_quote(spec)} \\")
    specs[-1] = specs[-1].removesuffix(" \\")
    return ["_amigofs_options() {", "    _values -s , option \\", *specs, "}", ""]


def _zsh_positional(argument: Argument) -> str:
    prefix = "*" if argument.repeatable else ""
    colons = "::" if argument.optional and not argument.repeatable else ":"
    return _quote(f"{prefix}{colons}{_zsh_text(argument.metavar)}:{_zsh_action(argument)}")


def _zsh_action(argument: Argument) -> str:
    if OPTIONS_FLAG in argument.names:
        return "_amigofs_options"
    if argument.values == WORDS:
        return "(" + " ".join(argument.choices) + ")"
    return {FILES: "_files", DIRS: "_files -/"}.get(argument.values, " ")


def _short(help_text: str) -> str:
    """The gist of a help text for a completion menu: up to its first parenthesis or
    semicolon."""
    for end in (" (", ";"):
        help_text = help_text.split(end, 1)[0]
    return help_text.rstrip(" ,.")


def _zsh_text(text: str) -> str:
    """Text inside an _arguments spec, where brackets and colons mean something."""
    for char in "\\[]:":
        text = text.replace(char, "\\" + char)
    return text


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
