"""The `amigofs` command: mount, unmount, workspaces, stats, prefetch, demo and emulator."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import logging
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from amigofs import __version__, config
from amigofs.api.client import DEFAULT_BASE_URL
from amigofs.api.secret import ApiKey, KeyFileError

log = logging.getLogger("amigofs")

KEY_ENV = "AMIGO_API_KEY"
MOUNT_WAIT_SECONDS = 30.0
MAX_LOG_SHOWN = 1 << 20
_DEFAULTS = config.Settings()  # the defaults the help text names
T = TypeVar("T")


class UsageError(Exception):
    """A mistake of the user's: printed as one line, exit status 2, no traceback."""


def main(argv: list[str] | None = None, *, via_options: bool = False) -> int:
    """`via_options`: called by mount.fuse.amigofs, whose user typed `key=value`
    options, not flags; messages name them so."""
    _print_paths_as_bytes()
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        expanded = _expand_options(given)
    except UsageError as exc:
        print(f"amigofs: {exc}", file=sys.stderr)
        return 2
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
        return 2
    except KeyboardInterrupt:
        return 130


def _expand_options(argv: list[str]) -> list[str]:
    """`amigofs mount ... -o key=value,...` (as sshfs and rclone take them, with the
    names of fstab and the config file) as the flags they stand for."""
    from amigofs import fstab

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
                out += fstab.option_flags([value])
            except fstab.OptionError as exc:
                raise UsageError(str(exc)) from None
        else:
            out.append(item)
    return out


def _print_paths_as_bytes() -> None:
    """Paths that are not UTF-8 (a mount point named by whatever bytes) print as
    those bytes, as ls prints them, instead of ending the command with a
    UnicodeEncodeError under a locale whose stdout is strict. (stderr already
    writes them as \\x escapes, and must go on writing whatever it is given.)"""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="surrogateescape")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amigofs",
        description="Mount the call recordings of the Amigo Platform API as a read-only "
        "filesystem: MOUNT/<workspace_id>/<call_sid>/{inbound.wav,outbound.wav,call.wav,"
        "metadata.json}.",
    )
    parser.add_argument("--version", action="version", version=f"amigofs {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    mount = commands.add_parser(
        "mount",
        help="mount the recordings at a directory",
        description="Mount the call recordings at MOUNTPOINT (read-only). The API key comes "
        f"from the environment variable {KEY_ENV} or from --api-key-file, never from the "
        "command line. Settings come from flags, then AMIGOFS_<KEY> environment variables, "
        "then --config FILE, then defaults. Before mounting it checks that the server "
        "answers, takes the key and shows the workspaces asked for. Unmount with: "
        "amigofs unmount MOUNTPOINT",
    )
    mount.add_argument(
        "mountpoint",
        nargs="?",
        type=Path,
        metavar="MOUNTPOINT",
        help="where to mount (or `mountpoint` in the config file)",
    )
    add_mount_arguments(mount)
    mount.set_defaults(run=run_mount)

    from amigofs import demo, prefetch, unmount, workspaces
    from amigofs.emulator import cli as emulator_cli

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

    stats = commands.add_parser(
        "stats",
        help="show what a running mount has done: requests, bytes, cache, errors",
        description="Show the counters of the amigofs mount at MOUNTPOINT: requests by kind, "
        "bytes fetched, reads served from the disk cache or waiting for it, blocks fetched "
        "and checked, retries, errors, bytes in flight and the size of the disk cache. Only "
        "the user who mounted it can read them.",
    )
    stats.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    output = stats.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the counters as JSON")
    output.add_argument(
        "--prometheus",
        action="store_true",
        help="print them in the Prometheus text format (for node_exporter's textfile collector)",
    )
    stats.set_defaults(run=run_stats)

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
    return parser


def _add_command(commands: Any, name: str, module: Any, *, help: str, description: str) -> None:
    """A command whose module has add_arguments(parser) and run(args)."""
    parser = commands.add_parser(name, help=help, description=description)
    module.add_arguments(parser)
    parser.set_defaults(run=module.run)


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
        type=_flag_type(config.parse_positive),
        metavar="SECONDS",
        help="longest any file operation waits on the network before failing with EIO "
        f"(default: {_DEFAULTS.timeout:g})",
    )
    parser.add_argument(
        "--listing-ttl",
        type=_flag_type(config.parse_positive),
        metavar="SECONDS",
        help="how long listings are kept before they are refreshed in the background "
        f"(default: {_DEFAULTS.listing_ttl:g})",
    )
    parser.add_argument(
        "--timezone",
        type=_flag_type(config.parse_timezone),
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
        type=_flag_type(config.parse_positive),
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
        type=_flag_type(config.parse_size),
        metavar="SIZE",
        help="most bytes of audio kept in --cache-dir, e.g. 500M or 20G "
        f"(default: {config.format_size(_DEFAULTS.cache_size)}); "
        "least recently used blocks go first",
    )
    parser.add_argument(
        "--cache-min-free",
        type=_flag_type(config.parse_min_free),
        metavar="SIZE",
        help="free space the disk cache leaves on its disk: it evicts rather than fill it "
        f"past this, nor past 95%% of the disk (default: {config.format_size(_DEFAULTS.cache_min_free)})",
    )
    parser.add_argument(
        "--kernel-readahead",
        type=_flag_type(config.parse_readahead),
        metavar="SIZE",
        help="the kernel's readahead for the mount, which sets its read request size "
        f"(default: {config.format_size(_DEFAULTS.kernel_readahead)}; needs root; "
        "0 keeps the kernel's own)",
    )


def _flag_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of config's parsers, so a flag and the same key in
    the environment or the file are read alike."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def setup_logging(level: str = "info") -> None:
    # The fetch worker reads it too, so --debug traces its downloads as well.
    os.environ["AMIGOFS_LOG_LEVEL"] = level
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="amigofs[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Their debug output repeats ours with full URLs (signed download links);
    # amigofs.api logs each request itself, without secrets.
    for noisy in ("httpx", "httpcore", "hpack", "hypercorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    from amigofs.mount_table import is_mounted
    from amigofs.unmount_guard import is_dead_mount

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


def run_mount(args: argparse.Namespace) -> int:
    from amigofs.mount import MountOptions

    settings = mount_settings(args)
    if settings.mountpoint is None:
        raise UsageError("no mount point: give MOUNTPOINT or `mountpoint` in --config FILE")
    api_key = read_api_key(settings.api_key_file, via_options=args.via_options)
    base_url = settings.base_url
    # As the kernel will name it in /proc/mounts (no `..`, no links), and so in the log
    # and the stats. The cache directory is not resolved: a link there is refused.
    mountpoint = Path(os.path.realpath(Path(settings.mountpoint).absolute()))
    check_mountpoint(mountpoint)
    cache_dir = Path(settings.cache_dir or default_cache_dir()).absolute()
    options = MountOptions(
        mountpoint=mountpoint,
        base_url=base_url,
        workspaces=settings.workspaces,
        cache_dir=cache_dir,
        allow_other=settings.allow_other,
        timeout=settings.timeout,
        listing_ttl=settings.listing_ttl,
        negative_ttl=settings.negative_ttl,
        timezone=settings.timezone,
        call_wav=settings.call_wav,
        cache_size_bytes=settings.cache_size,
        cache_min_free_bytes=settings.cache_min_free,
        kernel_readahead=settings.kernel_readahead,
    )
    # Checked here, before anything is mounted, in the foreground as in the daemon.
    cache_fd = _open_cache_dir(cache_dir)
    try:
        if not args.foreground:
            return _detach(args.argv, mountpoint, cache_dir, cache_fd)
    finally:
        os.close(cache_fd)
    setup_logging(settings.log_level)
    return _mount_foreground(_checked(options, api_key), api_key)


def _checked(options: Any, api_key: ApiKey) -> Any:
    """The options with only the workspaces the key can see, once the server has said
    it takes the key (amigofs.preflight); UsageError when the mount must not go ahead."""
    import dataclasses

    from amigofs import preflight

    try:
        checked = preflight.run_check(
            options.base_url, api_key, options.workspaces, options.cache_dir, options.timeout
        )
    except preflight.Refused as exc:
        raise UsageError(str(exc)) from None
    for warning in checked.warnings:
        logging.getLogger("amigofs.preflight").warning("%s", warning)
    return dataclasses.replace(options, workspaces=checked.workspaces)


def run_stats(args: argparse.Namespace) -> int:
    import json

    from amigofs.control import NotAMount, format_stats, read_stats
    from amigofs.metrics import render

    try:
        document = read_stats(Path(os.path.realpath(Path(args.mountpoint).absolute())))
    except NotAMount as exc:
        raise UsageError(str(exc)) from None
    if args.prometheus:
        sys.stdout.write(render(document))
    else:
        print(json.dumps(document, indent=2) if args.json else format_stats(document))
    return 0


def _mount_foreground(options: object, api_key: ApiKey) -> int:
    import trio

    from amigofs.mount import MountOptions, MountRefused, serve

    assert isinstance(options, MountOptions)
    try:
        try:
            trio.run(serve, options, api_key)
        finally:
            # Unmounted: what is left is the interpreter's exit, during which Python puts
            # back the default handlers, so a second SIGTERM/SIGINT would kill the process
            # by the signal. Ignored signals stay ignored; the stop is done already.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except MountRefused as exc:
        raise UsageError(str(exc)) from None
    except RuntimeError as exc:
        # pyfuse3.init reports a failed mount (no /dev/fuse, no permission) this way.
        if "mount" in str(exc).lower() or "fuse" in str(exc).lower():
            raise UsageError(f"cannot mount {options.mountpoint}: {exc}") from None
        raise
    return 0


def _open_cache_dir(cache_dir: Path) -> int:
    """The cache directory, created 0700 if missing, as a descriptor; refused unless it
    is the mounting user's and no one else can write it (amigofs.cache.cache_dir)."""
    from amigofs.cache.cache_dir import UnsafeCacheDir, open_root

    try:
        fd = open_root(cache_dir)
    except UnsafeCacheDir as exc:
        raise UsageError(f"cache directory {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot create cache directory {cache_dir}: {exc.strerror}") from None
    try:
        _check_writable(fd, cache_dir)
    except BaseException:
        os.close(fd)
        raise
    return fd


PROBE_NAME = ".amigofs-probe"


def _check_writable(fd: int, cache_dir: Path) -> None:
    """A directory that cannot hold files (under /proc or /sys, on a read-only disk)
    is refused here in one line, not by a traceback once the cache opens."""
    try:
        probe = os.open(
            PROBE_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600, dir_fd=fd,
        )  # fmt: skip
    except FileExistsError:
        probe = -1  # left by a mount that was killed: the directory takes files
    except OSError as exc:
        raise UsageError(
            f"cache directory {cache_dir} cannot hold files ({exc.strerror}): "
            "choose a directory on a disk (--cache-dir)"
        ) from None
    if probe >= 0:
        os.close(probe)
    with contextlib.suppress(OSError):
        os.unlink(PROBE_NAME, dir_fd=fd)


def _open_log(cache_fd: int, log_path: Path) -> int:
    """mount.log, opened inside the checked cache directory and never through a link:
    whoever planted one there would have the daemon append to a file of their choice."""
    from amigofs.cache.cache_dir import UnsafeCacheDir, check_owned

    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(log_path.name, flags, 0o600, dir_fd=cache_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"{log_path} is a symbolic link; amigofs logs only to a file of its own: "
                "remove the link"
            ) from None
        raise UsageError(f"cannot open {log_path}: {exc.strerror}") from None
    try:
        check_owned(fd, str(log_path), kind=stat.S_IFREG)
    except UnsafeCacheDir as exc:
        os.close(fd)
        raise UsageError(str(exc)) from None
    os.set_blocking(fd, True)
    return fd


STOP_SECONDS = 15.0


def _stop_daemon(child: subprocess.Popen[bytes], mountpoint: Path) -> None:
    """Stops a daemon that has not come up (SIGTERM, SIGKILL if it lingers) and leaves
    no mount of it behind. The mount point was checked to be free before it started,
    so an amigofs mount found there now is its own."""
    from amigofs.mount_table import FUSE_TYPE, mount_type

    # Ctrl-C again while we clean up must not leave the daemon running.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child.terminate()
        try:
            child.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        target = os.path.realpath(mountpoint)
        if mount_type(target) == FUSE_TYPE:
            subprocess.run(["fusermount3", "-u", "-z", target], capture_output=True, check=False)
    finally:
        signal.signal(signal.SIGINT, previous)


_WARNING = re.compile(rb"^amigofs\[\d+\] WARNING amigofs\.preflight: (.*)$", re.MULTILINE)


def _pass_on_warnings(log_text: bytes) -> None:
    """The daemon's warnings about what it mounted (a workspace left out, a server not
    answering) reach the user who ran the command, not only mount.log."""
    for match in _WARNING.finditer(log_text):
        print(f"amigofs: warning: {match.group(1).decode('utf-8', 'replace')}", file=sys.stderr)


def _detach(argv: list[str], mountpoint: Path, cache_dir: Path, cache_fd: int) -> int:
    """Starts the mount again in the foreground as a new session, returning once it is live.

    trio and pyfuse3 do not survive fork(), so the daemon is a fresh process.
    Its log goes to mount.log in the cache directory; if it fails to come up,
    the parent shows why and passes on its exit status.
    """
    from amigofs.mount_table import wait_until_mounted

    log_fd = _open_log(cache_fd, cache_dir / "mount.log")
    try:
        argv = [sys.executable, "-m", "amigofs", *argv, "--foreground"]
        start = os.lseek(log_fd, 0, os.SEEK_END)
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_fd,
            start_new_session=True,
        )
        try:
            code = wait_until_mounted(mountpoint, child, MOUNT_WAIT_SECONDS)
        except TimeoutError:
            _stop_daemon(child, mountpoint)
            raise UsageError(
                f"the mount at {mountpoint} did not come up within {MOUNT_WAIT_SECONDS:.0f} s"
            ) from None
        except KeyboardInterrupt:
            # The daemon is in a session of its own, so the terminal's Ctrl-C reached
            # only us: stop it, or it would mount after we have said we were stopped.
            _stop_daemon(child, mountpoint)
            print("amigofs: interrupted; nothing was mounted", file=sys.stderr)
            return 130
        if code is None:
            _pass_on_warnings(os.pread(log_fd, MAX_LOG_SHOWN, start))
            return 0
        # What the daemon said before it gave up, from the same descriptor.
        sys.stderr.write(os.pread(log_fd, MAX_LOG_SHOWN, start).decode("utf-8", "replace"))
        return code or 1
    finally:
        os.close(log_fd)
