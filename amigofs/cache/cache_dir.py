"""The cache directory, opened as a directory descriptor and trusted only if it is ours.

The cache holds recordings (often health or customer calls) and decides what the
mount serves, so another local user must not be able to read it, plant files in
it or redirect it with a symlink, even when it sits under a world-writable
directory such as /tmp. Every level amigofs creates is made 0700; the cache
directory and each directory inside it is opened with O_NOFOLLOW and refused
unless it is owned by the mounting user and not writable by group or others;
everything inside is created and opened relative to those descriptors with
O_NOFOLLOW (O_EXCL when new) and checked with fstat. Paths are never reopened by
name after the check.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeCacheDir(Exception):
    """The cache directory (or something in it) is not safe to use: the message
    names the path and why, in one line."""


def check_owned(fd: int, path: str, *, kind: int) -> os.stat_result:
    """Refuses `fd` unless it is a `kind` (stat.S_IFDIR or S_IFREG) owned by us and
    not writable by group or others; returns its stat."""
    st = os.fstat(fd)
    if stat.S_IFMT(st.st_mode) != kind:
        what = "a directory" if kind == stat.S_IFDIR else "a regular file"
        raise UnsafeCacheDir(f"{path} is not {what}")
    if st.st_uid != os.geteuid():
        raise UnsafeCacheDir(
            f"{path} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}); "
            "choose a cache directory of your own (--cache-dir)"
        )
    if st.st_mode & 0o022:
        raise UnsafeCacheDir(
            f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod go-w {path}"
        )
    return st


def removed(dir_fd: int) -> bool:
    """Whether the directory open as `dir_fd` was removed since (a cache cleaner's
    rm -rf): no links left, or, on NFS, a handle the server no longer knows (ESTALE)."""
    try:
        return os.fstat(dir_fd).st_nlink == 0
    except OSError:
        return True


def open_root(path: Path) -> int:
    """Opens (creating, 0700, with any missing parents) the cache directory; returns
    a descriptor of it, or raises UnsafeCacheDir."""
    path = Path(os.path.abspath(path))
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(level, 0o700)
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafeCacheDir(_open_failure(str(path), exc)) from None
    try:
        st = check_owned(fd, str(path), kind=stat.S_IFDIR)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)  # ours: nobody else need read it
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_subdir(parent_fd: int, name: str, path: str, *, create: bool = True) -> int:
    """Opens (creating, 0700) the directory `name` inside `parent_fd`; `path` names it
    in messages. FileNotFoundError if it is missing and `create` is false."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent_fd)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnsafeCacheDir(_open_failure(path, exc)) from None
    try:
        check_owned(fd, path, kind=stat.S_IFDIR)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_subdirs(root_fd: int, parts: tuple[str, ...], root: str, *, create: bool = True) -> int:
    """Opens root/parts[0]/parts[1]/... one level at a time; the caller closes it."""
    fd = os.dup(root_fd)
    path = root
    try:
        for part in parts:
            path = os.path.join(path, part)
            child = open_subdir(fd, part, path, create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(dir_fd: int, name: str, flags: int, path: str, *, mode: int = 0o600) -> int:
    """Opens a regular file of ours inside `dir_fd` (O_NOFOLLOW; add O_CREAT|O_EXCL to
    make a new one); raises UnsafeCacheDir for anything else found under that name."""
    try:
        fd = os.open(
            name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink planted under our name
            raise UnsafeCacheDir(_open_failure(path, exc)) from None
        raise
    try:
        check_owned(fd, path, kind=stat.S_IFREG)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_failure(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{path} is a symbolic link; amigofs does not follow links in its cache directory"
    if exc.errno == errno.ENOTDIR:
        return f"{path} is not a directory"
    return f"cannot open {path}: {exc.strerror}"
