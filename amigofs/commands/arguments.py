"""What the commands share: the user's mistakes (UsageError), the server and mount
flags, the API key and the settings they resolve to.

Each setting's flag is written once here, its type is the parser amigofs.config reads
the same key with, and its help shows the default amigofs.config.Settings holds: a
flag not given is None, so the environment, the file and then the default decide."""

from __future__ import annotations

import argparse
import dataclasses
import os
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from amigofs import config
from amigofs.api.secret import ApiKey, KeyFileError
from amigofs.logs import MAX_LOG_BYTES, OLD_LOGS, shifted_level

KEY_ENV = "AMIGO_API_KEY"
_DEFAULTS = config.Settings()  # the defaults the help text names
T = TypeVar("T")


class UsageError(Exception):
    """A mistake of the user's: printed as one line, exit status 2, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse's parser as the commands use it: a mistake in the arguments is one line
    naming the command and the flag (`amigofs mount: --cache-size: must be at least
    16M, not '10'`), exit status 2, as a UsageError is; the usage is for --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        # A command names the flags it does not know itself: argparse leaves them to the
        # top level, which would blame `amigofs` and show its usage. No command takes
        # arguments it does not declare, so every parser refuses them here.
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        if message.startswith(("unrecognized arguments", "the following arguments are required")):
            message += f" (see {self.prog} --help)"
        self.exit(2, f"{self.prog}: {message}\n")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, wrapped between words only: a word longer than the line (a path,
    `{inbound.wav,...,metadata.json}`) overflows it rather than being cut in two, and a
    flag is never cut at its hyphens."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, **_WHOLE_WORDS)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            **_WHOLE_WORDS,
        )


_WHOLE_WORDS: dict[str, Any] = {"break_long_words": False, "break_on_hyphens": False}


def add_mountpoint_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """MOUNTPOINT, optional when `help` says what stands in for it."""
    parser.add_argument(
        "mountpoint", nargs="?" if help else None, type=Path, metavar="MOUNTPOINT", help=help
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the API is and the key for it: what every command that asks it takes."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read settings from this TOML file (flags and AMIGOFS_* variables override it)",
    )
    # No type: mount_settings reads it, naming the flag in an error that shows no secret.
    parser.add_argument(
        "--base-url", metavar="URL", help=f"the Platform API server (default: {_DEFAULTS.base_url})"
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help=f"read the API key from FILE (mode 0600) instead of ${KEY_ENV}",
    )
    _add_switch(
        parser,
        "insecure_http",
        "allow an http:// --base-url to another machine (the key crosses the network "
        "unencrypted); plain http to loopback needs no flag",
    )


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument(
        "--workspace",
        action="append",
        dest="workspaces",
        metavar="UUID",
        help="show only this workspace, by its id (a UUID: `amigofs workspaces` lists them); "
        "repeat for more (default: every workspace the key lists)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where cached data is kept (default: $XDG_CACHE_HOME/amigofs or ~/.cache/amigofs)",
    )
    parser.add_argument(
        "--foreground", "-f", action="store_true", help="stay in the foreground until unmounted"
    )
    parser.add_argument(
        "--debug", action="store_true", help="log every request (never the key); --log-level debug"
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=config.LOG_LEVELS,
        help=", ".join(
            f"{level} (default)" if level == _DEFAULTS.log_level else level
            for level in config.LOG_LEVELS[:-1]
        )
        + f" or {config.LOG_LEVELS[-1]}",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="count",
        default=0,
        help="log more: one level more for each -v, from --log-level or log_level "
        "(-v: debug, every request, never the key)",
    )
    parser.add_argument(
        "--quiet",
        "-q",
        action="count",
        default=0,
        help="log less: one level up for each -q (-q: warnings and errors only)",
    )
    _add_setting(
        parser,
        "log_file",
        "FILE",
        f"where the log goes, rotated at {MAX_LOG_BYTES >> 20}M with {OLD_LOGS} old ones kept "
        "(default: CACHE_DIR/mount.log for a daemon, stderr with --foreground)",
    )
    _add_switch(
        parser,
        "allow_other",
        "let other users use the mount (needs user_allow_other in /etc/fuse.conf for non-root)",
    )
    _add_switch(
        parser,
        "allow_non_empty",
        "mount even if MOUNTPOINT holds files, hiding them until the unmount "
        "(refused otherwise; -o nonempty)",
    )
    _add_setting(
        parser,
        "timeout",
        "DURATION",
        "longest any file operation waits on the network before failing with EIO, "
        f"in seconds or with a unit: 90, 30s, 5m (default: {_shown('timeout')})",
    )
    _add_setting(
        parser,
        "listing_ttl",
        "DURATION",
        "how long listings are kept before they are refreshed in the background, "
        f"in seconds or such as 5m, 1h (default: {_shown('listing_ttl')})",
    )
    _add_setting(
        parser,
        "timezone",
        "ZONE",
        "the time zone of by-date's days and times, an IANA name such as Europe/Berlin "
        "(default: UTC)",
    )
    parser.add_argument(
        "--no-call-wav",
        action="store_false",
        dest="call_wav",
        default=None,
        help="leave out each call's stereo call.wav (for backups of the stored files only)",
    )
    _add_setting(
        parser,
        "negative_ttl",
        "DURATION",
        "how long a call SID the API says does not exist stays missing, in seconds or "
        f"such as 10s, 1m (default: {_shown('negative_ttl')})",
    )
    _add_setting(
        parser,
        "records_in_flight",
        "N",
        "call records a walk (rsync, find) gets loaded ahead of it, at most N at once and N "
        f"past its last call; 0 for none (default: {_shown('records_in_flight')})",
    )
    parser.add_argument(
        "-o",
        action="append",
        dest="options",
        metavar="KEY=VALUE[,...]",
        help="settings as fstab options and config keys name them, e.g. "
        "-o cache_size=20G,timeout=1m,allow_other (see mount.fuse.amigofs --help)",
    )
    _add_setting(
        parser,
        "cache_size",
        "SIZE",
        "most bytes of audio kept in --cache-dir, e.g. 500M or 20G "
        f"(default: {_shown('cache_size')}); least recently used blocks go first",
    )
    _add_setting(
        parser,
        "cache_min_free",
        "SIZE",
        "free space the disk cache leaves on its disk: it evicts rather than fill it "
        f"past this, nor past 95%% of the disk (default: {_shown('cache_min_free')})",
    )
    _add_setting(
        parser,
        "kernel_readahead",
        "SIZE",
        "the kernel's readahead for the mount, which sets its read request size "
        f"(default: {_shown('kernel_readahead')}; needs root; 0 keeps the kernel's own)",
    )


def flag_name(key: str) -> str:
    """The flag of setting or option `key`: cache_size is --cache-size."""
    return "--" + key.replace("_", "-")


def _shown(key: str) -> str:
    """The default of setting `key` as the user would write it: 30, 4G."""
    default = getattr(_DEFAULTS, key)
    return config.format_size(default) if isinstance(default, int) else f"{default:g}"


def _add_setting(parser: argparse.ArgumentParser, key: str, metavar: str, help: str) -> None:
    """The flag of a setting that takes a value, read as the environment and the file read it."""
    parser.add_argument(
        flag_name(key), type=flag_type(config.parser(key)), metavar=metavar, help=help
    )


def _add_switch(parser: argparse.ArgumentParser, key: str, help: str) -> None:
    """The flag that turns a setting on; None when not given, so the rest may decide."""
    parser.add_argument(flag_name(key), action="store_true", default=None, help=help)


def flag_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of config's parsers, so a flag and the same key in
    the environment or the file are read alike."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def read_api_key(key_file: Path | None, *, via_options: bool = False) -> ApiKey:
    """The key from the key file if one is named, else from $AMIGO_API_KEY: a named
    file wins over the environment (it is the more deliberate of the two)."""
    if key_file is not None:
        try:
            return ApiKey.from_file(key_file)
        except KeyFileError as exc:
            raise UsageError(str(exc)) from None
    value = os.environ.get(KEY_ENV, "")
    if not value.strip():
        named = "the option api_key_file=FILE" if via_options else "--api-key-file FILE"
        raise UsageError(f"no API key: set {KEY_ENV} or pass {named}")
    try:
        return ApiKey(value)
    except ValueError as exc:
        raise UsageError(f"{KEY_ENV}: {exc}") from None


def mount_settings(args: argparse.Namespace) -> config.Settings:
    """Flags, then the environment, then the config file, then defaults. Commands
    that take only some of mount's flags (workspaces) leave the others to the rest."""

    def flag(name: str) -> Any:
        return getattr(args, name, None)

    try:
        workspaces = config.parse_workspaces(flag("workspaces")) if flag("workspaces") else None
    except ValueError as exc:
        raise UsageError(f"--workspace: {exc}") from None
    try:
        base_url = config.parse_base_url(flag("base_url")) if flag("base_url") else None
    except ValueError as exc:
        raise UsageError(f"--base-url: {exc}") from None
    # Every other flag's dest is its key, and its type has read it already.
    flags = {key: flag(key) for key in config.KEYS}
    flags["base_url"] = base_url
    flags["workspaces"] = workspaces
    flags["log_level"] = "debug" if flag("debug") else flag("log_level")
    config_file = flag("config")
    if config_file is None and os.environ.get(config.ENV_PREFIX + "CONFIG"):
        config_file = Path(os.environ[config.ENV_PREFIX + "CONFIG"])
    try:
        settings = config.resolve(flags, os.environ, config_file)
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    # -v and -q move whatever level the flags, the environment or the file chose.
    louder = (flag("verbose") or 0) - (flag("quiet") or 0)
    return dataclasses.replace(settings, log_level=shifted_level(settings.log_level, louder))


def check_mountpoint(mountpoint: Path) -> None:
    """Refuses a mount point something is mounted at (a live or a dead mount) or
    that is not a directory."""
    from amigofs.daemon.mount_table import is_mounted
    from amigofs.daemon.unmount_guard import is_dead_mount

    # Before anything stats it: a dead mount answers ENOTCONN.
    if is_mounted(mountpoint):
        if is_dead_mount(os.path.realpath(mountpoint), only_ours=False):
            raise UsageError(
                f"mount point {mountpoint} is a dead mount left by a process that is gone "
                f"(Transport endpoint is not connected); remove it with: "
                f"fusermount3 -u -z {mountpoint}"
            )
        raise UsageError(f"mount point {mountpoint} is already mounted (busy)")
    if not mountpoint.is_dir():
        raise UsageError(f"mount point {mountpoint} does not exist or is not a directory")
