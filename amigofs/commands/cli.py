"""The `amigofs` command: mount, unmount, workspaces, stats, prefetch, demo and emulator.

What this module imports when it is loaded is kept to the standard library's least:
the commands, and what they import, load inside main, where a Ctrl-C in the first
fraction of a second is one line and exit status 130, not a traceback of the import
it interrupted. Exit statuses: amigofs.commands.exits."""

from __future__ import annotations

import sys

from amigofs import __version__

TYPE_CHECKING = False  # typing itself is one more import to interrupt
if TYPE_CHECKING:
    import argparse
    from typing import Any


def main(argv: list[str] | None = None, *, via_options: bool = False) -> int:
    """`via_options`: called by mount.fuse.amigofs, whose user typed `key=value`
    options, not flags; messages name them so."""
    try:
        return _main(argv, via_options=via_options)
    except KeyboardInterrupt:
        # CPython marks a KeyboardInterrupt that left an exec() of a string at its start
        # (dataclasses and attrs make their methods so, as their modules are imported)
        # as unhandled, and then ends the process by SIGINT, not with this status. The
        # next exec() of a string clears the mark.
        exec("")
        print("amigofs: interrupted", file=sys.stderr)
        return 130  # exits.INTERRUPTED, which may not be imported yet


def _main(argv: list[str] | None, *, via_options: bool) -> int:
    from amigofs.commands import exits
    from amigofs.commands.arguments import UsageError

    _print_paths_as_bytes()
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        expanded = _expand_options(given)
    except UsageError as exc:
        print(f"amigofs: {exc}", file=sys.stderr)
        return exits.USAGE
    parser = build_parser()
    args = parser.parse_args(expanded)
    # What the daemon is started with again when the mount detaches.
    args.argv = given
    args.via_options = via_options
    try:
        result: int = args.run(args)
        return result
    except UsageError as exc:
        print(f"amigofs: {exc}", file=sys.stderr)
        return exits.USAGE
    except exits.Unavailable as exc:
        print(f"amigofs: {exc}", file=sys.stderr)
        return exits.UNREACHABLE


def _expand_options(argv: list[str]) -> list[str]:
    """`amigofs mount ... -o key=value,...` (as sshfs and rclone take them, with the
    names of fstab and the config file) as the flags they stand for."""
    from amigofs.commands.arguments import UsageError
    from amigofs.commands.mount_options import OptionError, option_flags

    if not argv or argv[0] != "mount":
        return argv
    out, items = [argv[0]], iter(argv[1:])
    for item in items:
        if item == "--":
            out += [item, *items]
            break
        if item == "-o" or (item.startswith("-o") and not item.startswith("--")):
            value = next(items, None) if item == "-o" else item[2:]
            if value is None:
                raise UsageError("-o needs options: -o key=value[,key=value...]")
            try:
                out += option_flags([value])
            except OptionError as exc:
                raise UsageError(str(exc)) from None
        else:
            out.append(item)
    return out


def _print_paths_as_bytes() -> None:
    """Paths that are not UTF-8 (a mount point named by whatever bytes) print as
    those bytes, as ls prints them, instead of ending the command with a
    UnicodeEncodeError under a locale whose stdout is strict. (stderr already
    writes them as \\x escapes, and must go on writing whatever it is given.)"""
    import io

    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="surrogateescape")


def build_parser() -> argparse.ArgumentParser:

    from amigofs.commands import (
        completion,
        demo,
        manpage,
        mount,
        prefetch,
        stats,
        unmount,
        workspaces,
    )
    from amigofs.commands.arguments import KEY_ENV, Parser
    from amigofs.emulator import cli as emulator_cli

    parser = Parser(
        prog="amigofs",
        description="Mount the call recordings of the Amigo Platform API as a read-only "
        "filesystem: MOUNT/<workspace_id>/<call_sid>/{inbound.wav,outbound.wav,call.wav,"
        "metadata.json}.",
    )
    parser.add_argument("--version", action="version", version=f"amigofs {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    _add_command(
        commands, "mount", mount,
        help="mount the recordings at a directory",
        description="Mount the call recordings at MOUNTPOINT (read-only). The API key comes "
        f"from the environment variable {KEY_ENV} or from --api-key-file, never from the "
        "command line. Settings come from flags, then AMIGOFS_<KEY> environment variables, "
        "then --config FILE, then defaults. Before mounting it checks that the server "
        "answers, takes the key and shows the workspaces asked for. Unmount with: "
        "amigofs unmount MOUNTPOINT",
    )  # fmt: skip

    _add_command(
        commands, "unmount", unmount,
        help="unmount a mount and wait until its daemon has exited",
        description="Unmount the amigofs mount at MOUNTPOINT (fusermount3 -u) and wait "
        "until the daemon serving it has exited. A mount that a program still uses is "
        "busy: --lazy detaches it at once.",
    )  # fmt: skip
    _add_command(
        commands, "workspaces", workspaces,
        help="list the workspaces the API key can see (id, slug, name)",
        description="List the workspaces the API key can list, with their ids (what "
        f"--workspace takes), slugs and names. The key comes from {KEY_ENV} or "
        "--api-key-file, the server from --base-url, as for mount.",
    )  # fmt: skip

    _add_command(
        commands, "stats", stats,
        help="show what a running mount has done: requests, bytes, cache, errors",
        description="Show the counters of the amigofs mount at MOUNTPOINT: requests by kind, "
        "bytes fetched, reads served from the disk cache or waiting for it, blocks fetched "
        "and checked, retries, errors, bytes in flight and the size of the disk cache. Only "
        "the user who mounted it can read them.",
    )  # fmt: skip

    _add_command(
        commands, "prefetch", prefetch,
        help="warm the disk cache of a mount for calls, a workspace or a date range",
        description="Read the audio of every call under each PATH (a call directory, a "
        "workspace, the mount's root, or files) through the mount, so that its disk cache "
        "holds them: later reads fetch nothing. Run again after an interruption, it fetches "
        "only what is missing.",
    )  # fmt: skip
    _add_command(
        commands, "demo", demo,
        help="run the bundled API emulator and mount it, to try amigofs without an account",
        description="Start the bundled Platform API emulator on a free loopback port with a "
        "handful of synthetic calls, mount it, and show what to try. Ctrl-C unmounts and stops.",
    )  # fmt: skip
    _add_command(
        commands, "emulator", emulator_cli,
        help="serve the bundled emulator of the Platform API (for tests and scripts)",
        description="Serve a deterministic emulator of the five Platform API operations "
        "amigofs uses, with synthetic calls and real audio, on loopback.",
    )  # fmt: skip
    _add_command(
        commands, "completion", completion,
        help="print a bash or zsh completion script",
        description="Print the completion script of amigofs for bash or zsh, made from "
        "its own flags. bash: amigofs completion bash > "
        "~/.local/share/bash-completion/completions/amigofs; zsh: amigofs completion zsh > "
        "~/.zfunc/_amigofs, with fpath=(~/.zfunc $fpath) before compinit in ~/.zshrc.",
    )  # fmt: skip
    _add_command(
        commands, "man", manpage,
        help="print the man page (roff)",
        description="Print the man page amigofs(1), made from the commands' own help. "
        "Read it with: amigofs man | man -l -; install it with: amigofs man > "
        "~/.local/share/man/man1/amigofs.1",
    )  # fmt: skip
    return parser


def _add_command(commands: Any, name: str, module: Any, *, help: str, description: str) -> None:
    """A command whose module has add_arguments(parser) and run(args)."""
    parser = commands.add_parser(name, help=help, description=description)
    module.add_arguments(parser)
    parser.set_defaults(run=module.run)
