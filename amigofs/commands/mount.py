"""`amigofs mount`: checks what it is given, then serves the mount in the foreground
(amigofs.daemon.mount) or starts itself again as a daemon and waits until it is live."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from amigofs.api.secret import ApiKey
from amigofs.commands import exits
from amigofs.commands.arguments import (
    KEY_ENV,
    UsageError,
    add_mount_arguments,
    add_mountpoint_argument,
    check_mountpoint,
    mount_settings,
    read_api_key,
)
from amigofs.config import Settings, default_cache_dir
from amigofs.logs import (
    LogFileError,
    child_environment,
    close_log_file,
    open_log_file,
    setup_logging,
)

MOUNT_WAIT_SECONDS = 30.0
MAX_LOG_SHOWN = 1 << 20
DAEMON_LOG = "mount.log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_mountpoint_argument(parser, "where to mount (or `mountpoint` in the config file)")
    add_mount_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = mount_settings(args)
    if settings.mountpoint is None:
        raise UsageError("no mount point: give MOUNTPOINT or `mountpoint` in --config FILE")
    api_key = read_api_key(settings.api_key_file, via_options=args.via_options)
    # As the kernel will name it in /proc/mounts (no `..`, no links), and so in the log
    # and the stats. The cache directory is not resolved: a link there is refused.
    mountpoint = Path(os.path.realpath(Path(settings.mountpoint).absolute()))
    check_mountpoint(mountpoint)
    if not settings.allow_non_empty:
        _refuse_non_empty(mountpoint)
    cache_dir = Path(settings.cache_dir or default_cache_dir()).absolute()
    log_file = Path(settings.log_file).absolute() if settings.log_file else None
    settings = dataclasses.replace(
        settings, mountpoint=mountpoint, cache_dir=cache_dir, log_file=log_file
    )
    # Checked here, before anything is mounted, in the foreground as in the daemon.
    os.close(_open_cache_dir(cache_dir))
    if not args.foreground:
        # A daemon logs to a file: the user's, or mount.log in its cache directory.
        return _detach(args.argv, mountpoint, log_file or cache_dir / DAEMON_LOG)
    if log_file is not None:
        _check_log_file(log_file)
    # Read: the processes this one starts get the key over their socket (the fetch
    # worker) or not at all (the unmount guard), never with the environment.
    os.environ.pop(KEY_ENV, None)
    setup_logging(settings.log_level, log_file_later=log_file is not None)
    # Every path is absolute by now; the mount holds no directory of the user's busy.
    os.chdir("/")
    try:
        return _mount_foreground(_checked(settings, cache_dir, api_key), api_key)
    finally:
        close_log_file()


def _checked(settings: Settings, cache_dir: Path, api_key: ApiKey) -> Settings:
    """The settings with only the workspaces the key can see, once the server has said
    it takes the key (amigofs.daemon.preflight); UsageError when the mount must not go ahead."""
    from amigofs.daemon import preflight

    try:
        checked = preflight.run_check(
            settings.base_url, api_key, settings.workspaces, cache_dir, settings.timeout
        )
    except preflight.Refused as exc:
        raise UsageError(str(exc)) from None
    except preflight.Unreachable as exc:
        raise exits.Unavailable(str(exc)) from None
    for warning in checked.warnings:
        logging.getLogger(preflight.__name__).warning("%s", warning)
    return dataclasses.replace(settings, workspaces=checked.workspaces)


def _refuse_non_empty(mountpoint: Path) -> None:
    """A mount point that holds files is refused, as rclone refuses it: mounted over, they
    would be hidden until the unmount, and a backup or a program writing there would
    miss them without a word."""
    try:
        with os.scandir(mountpoint) as entries:
            holds = next(entries, None) is not None
    except OSError:
        return  # cannot look in it: fusermount3 decides whether it may be mounted on
    if holds:
        raise UsageError(
            f"mount point {mountpoint} is not empty: mounting would hide what it holds; "
            "choose an empty directory, or mount over it with --allow-non-empty (-o nonempty)"
        )


def _mount_foreground(settings: Settings, api_key: ApiKey) -> int:
    import trio

    from amigofs.daemon.mount import MountRefused, serve

    try:
        try:
            trio.run(serve, settings, api_key)
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
            raise UsageError(f"cannot mount {settings.mountpoint}: {exc}") from None
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


def _check_log_file(path: Path) -> None:
    """The log file, checked before anything starts: one line if it cannot be ours.
    Nothing is written to it here (the mount that writes it may yet be refused)."""
    try:
        os.close(open_log_file(path))
    except LogFileError as exc:
        raise UsageError(str(exc)) from None


STOP_SECONDS = 15.0


def _stop_daemon(child: subprocess.Popen[bytes], mountpoint: Path) -> None:
    """Stops a daemon that has not come up (SIGTERM, SIGKILL if it lingers) and leaves
    no mount of it behind. The mount point was checked to be free before it started,
    so an amigofs mount found there now is its own."""
    from amigofs.daemon.mount_table import FUSE_TYPE, mount_type

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


_WARNING = re.compile(
    rb"^(?:\S+ )?amigofs\[\d+\] WARNING amigofs\.daemon\.preflight: (.*)$", re.MULTILINE
)


def _pass_on_warnings(log_text: bytes) -> None:
    """The daemon's warnings about what it mounted (a workspace left out, a server not
    answering) reach the user who ran the command, not only its log."""
    for match in _WARNING.finditer(log_text):
        print(f"amigofs: warning: {match.group(1).decode('utf-8', 'replace')}", file=sys.stderr)


def _detach(argv: list[str], mountpoint: Path, log_file: Path) -> int:
    """Starts the mount again in the foreground as a new session, returning once it is live.

    trio and pyfuse3 do not survive fork(), so the daemon is a fresh process. Until it
    is mounted it speaks to us, through a file of our own: a mount refused (its cache
    directory another's) must not write into that other mount's log. Once it holds its
    cache directory it logs to `log_file`; if it fails to come up, we show why and pass
    on its exit status.
    """
    from amigofs.daemon.mount_table import wait_until_mounted

    _check_log_file(log_file)
    with tempfile.TemporaryFile() as said:
        argv = [sys.executable, "-m", "amigofs", *argv, "--foreground", "--log-file", str(log_file)]
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=said,
            start_new_session=True,
            env=child_environment(),
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
        text = os.pread(said.fileno(), MAX_LOG_SHOWN, 0)
    if code is None:
        _pass_on_warnings(text)
        return 0
    # What the daemon said before it gave up.
    sys.stderr.write(text.decode("utf-8", "replace"))
    return code or 1
