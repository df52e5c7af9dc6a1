"""What the commands share: the user's mistakes (UsageError), the server and mount
flags, the API key and the settings they resolve to."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from amigofs import config
from amigofs.api.client import DEFAULT_BASE_URL
from amigofs.api.secret import ApiKey, KeyFileError

KEY_ENV = "AMIGO_API_KEY"
_DEFAULTS = config.Settings()  # the defaults the help text names
T = TypeVar("T")


class UsageError(Exception):
    """A mistake of the user's: printed as one line, exit status 2, no traceback."""


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the API is and the key for it: what every command that asks it takes."""
    # Defaults live in amigofs.config: None here means "not given on the command line".
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read settings from this TOML file (flags and AMIGOFS_* variables override it)",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help=f"the Platform API server (default: {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help=f"read the API key from FILE (mode 0600) instead of ${KEY_ENV}",
    )
    parser.add_argument(
        "--insecure-http",
        action="store_true",
        default=None,
        help="allow an http:// --base-url to another machine (the key crosses the network "
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
        help="debug, info (default), warning or error",
    )
    parser.add_argument(
        "--allow-other",
        action="store_true",
        default=None,
        help="let other users use the mount (needs user_allow_other in /etc/fuse.conf for non-root)",
    )
    parser.add_argument(
        "--timeout",
        type=flag_type(config.parse_positive),
        metavar="SECONDS",
        help="longest any file operation waits on the network before failing with EIO "
        f"(default: {_DEFAULTS.timeout:g})",
    )
    parser.add_argument(
        "--listing-ttl",
        type=flag_type(config.parse_positive),
        metavar="SECONDS",
        help="how long listings are kept before they are refreshed in the background "
        f"(default: {_DEFAULTS.listing_ttl:g})",
    )
    parser.add_argument(
        "--timezone",
        type=flag_type(config.parse_timezone),
        metavar="ZONE",
        help="the time zone of by-date's days and times, an IANA name such as Europe/Berlin "
        "(default: UTC)",
    )
    parser.add_argument(
        "--no-call-wav",
        action="store_false",
        dest="call_wav",
        default=None,
        help="leave out each call's stereo call.wav (for backups of the stored files only)",
    )
    parser.add_argument(
        "--negative-ttl",
        type=flag_type(config.parse_positive),
        metavar="SECONDS",
        help="how long a call SID the API says does not exist stays missing "
        f"(default: {_DEFAULTS.negative_ttl:g})",
    )
    parser.add_argument(
        "-o",
        action="append",
        dest="options",
        metavar="KEY=VALUE[,...]",
        help="settings as fstab options and config keys name them, e.g. "
        "-o cache_size=20G,timeout=60,allow_other (see mount.fuse.amigofs --help)",
    )
    parser.add_argument(
        "--cache-size",
        type=flag_type(config.parse_size),
        metavar="SIZE",
        help="most bytes of audio kept in --cache-dir, e.g. 500M or 20G "
        f"(default: {config.format_size(_DEFAULTS.cache_size)}); "
        "least recently used blocks go first",
    )
    parser.add_argument(
        "--cache-min-free",
        type=flag_type(config.parse_min_free),
        metavar="SIZE",
        help="free space the disk cache leaves on its disk: it evicts rather than fill it "
        f"past this, nor past 95%% of the disk (default: {config.format_size(_DEFAULTS.cache_min_free)})",
    )
    parser.add_argument(
        "--kernel-readahead",
        type=flag_type(config.parse_readahead),
        metavar="SIZE",
        help="the kernel's readahead for the mount, which sets its read request size "
        f"(default: {config.format_size(_DEFAULTS.kernel_readahead)}; needs root; "
        "0 keeps the kernel's own)",
    )


def flag_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of config's parsers, so a flag and the same key in
    the environment or the file are read alike."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "amigofs"


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
    flags = {
        "mountpoint": flag("mountpoint"),
        "base_url": base_url,
        "workspaces": workspaces,
        "api_key_file": flag("api_key_file"),
        "cache_dir": flag("cache_dir"),
        "cache_size": flag("cache_size"),
        "cache_min_free": flag("cache_min_free"),
        "kernel_readahead": flag("kernel_readahead"),
        "allow_other": flag("allow_other"),
        "insecure_http": flag("insecure_http"),
        "timeout": flag("timeout"),
        "listing_ttl": flag("listing_ttl"),
        "negative_ttl": flag("negative_ttl"),
        "timezone": flag("timezone"),
        "call_wav": flag("call_wav"),
        "log_level": "debug" if flag("debug") else flag("log_level"),
    }
    config_file = flag("config")
    if config_file is None and os.environ.get(config.ENV_PREFIX + "CONFIG"):
        config_file = Path(os.environ[config.ENV_PREFIX + "CONFIG"])
    try:
        return config.resolve(flags, os.environ, config_file)
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from None


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
