"""`mount.fuse.amigofs`: the helper mount(8) runs for fstab entries of type fuse.amigofs,
and the `-o key=value,...` options of `amigofs mount`.

    none  /mnt/amigo  fuse.amigofs  base_url=https://...,workspace=UUID,api_key_file=/etc/amigofs/key,cache_dir=/var/cache/amigofs,_netdev  0 0

mount(8) calls it as `mount.fuse.amigofs none /mnt/amigo -o OPTIONS` (from /sbin,
where it must be linked). It turns the options into `amigofs mount` flags and
returns once the mount is live, the daemon running on in its own session.
The options are the settings of a config file (amigofs.config) under the same
names, plus `workspace=` (repeatable), `config=` and `debug`; each value is checked
here, so a mistake is named as it was typed (`timeout=`, not `--timeout`).
Options meant for mount(8) or systemd (_netdev, nofail, noauto, x-systemd.*...)
are ignored; anything else unknown is an error naming it (one line, exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from amigofs import config

PROG = "mount.fuse.amigofs"

# Option -> flag of `amigofs mount` taking a value.
_VALUED = {
    "base_url": "--base-url",
    "workspace": "--workspace",
    "api_key_file": "--api-key-file",
    "cache_dir": "--cache-dir",
    "cache_size": "--cache-size",
    "cache_min_free": "--cache-min-free",
    "kernel_readahead": "--kernel-readahead",
    "timeout": "--timeout",
    "listing_ttl": "--listing-ttl",
    "negative_ttl": "--negative-ttl",
    "timezone": "--timezone",
    "log_level": "--log-level",
    "config": "--config",
}
_FLAGS = {
    "allow_other": "--allow-other",
    "insecure_http": "--insecure-http",
    "debug": "--debug",
    "no_call_wav": "--no-call-wav",
}
# For mount(8), systemd or the kernel's generic handling; amigofs is read-only whatever
# they say, so rw and ro change nothing.
_IGNORED = {
    "rw", "ro", "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group",
    "_netdev", "nofail", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime",
    "noatime", "relatime", "strictatime", "nodiratime", "sync", "async", "loop",
}  # fmt: skip
_IGNORED_PREFIXES = ("x-", "comment=", "fsname=", "subtype=")
# Names every option value is checked with, as the same key of a config file is.
_CHECKS: dict[str, Callable[[str], Any]] = {
    "workspace": lambda value: config.parse_workspaces([value]),
    "workspaces": lambda value: config.parse_workspaces(value.split(":")),
    "config": config.parse_path,  # any path: the file itself is checked when it is read
    **{name: config.parser(name) for name in _VALUED if name in config.KEYS},
}

HELP = f"""\
usage: {PROG} none MOUNTPOINT -o OPTION[,OPTION...]

The helper mount(8) runs for /etc/fstab entries of type fuse.amigofs:

    none  /mnt/amigo  fuse.amigofs  base_url=URL,workspace=UUID,api_key_file=FILE,_netdev,nofail  0 0

It returns once the mount is live. Options (the keys of an amigofs config file):
  base_url=URL  workspace=UUID (repeatable)  workspaces=UUID:UUID  api_key_file=FILE
  cache_dir=DIR  cache_size=SIZE  cache_min_free=SIZE  kernel_readahead=SIZE
  timeout=SECONDS  listing_ttl=SECONDS  negative_ttl=SECONDS  timezone=ZONE
  log_level=LEVEL  config=FILE  allow_other  insecure_http  no_call_wav  debug
Options of mount(8) and systemd (_netdev, nofail, noauto, x-systemd.*, rw, ...) are
ignored. The API key comes from api_key_file= (or AMIGO_API_KEY). See `amigofs mount --help`.
"""


OPTIONS = (*_VALUED, "workspaces", *_FLAGS)


class OptionError(Exception):
    pass


def option_flags(options: list[str]) -> list[str]:
    """`amigofs mount` flags for mount(8)-style option groups ("a=1,b,c=2"), each value
    checked as its config key is; OptionError names a bad one as it was typed."""
    argv: list[str] = []
    for group in options:
        for option in group.split(","):
            option = option.strip()
            if not option or option in _IGNORED or option.startswith(_IGNORED_PREFIXES):
                continue
            name, has_value, value = option.partition("=")
            if name in _FLAGS and not has_value:
                argv.append(_FLAGS[name])
                continue
            if name not in _VALUED and name != "workspaces":
                if name in _FLAGS:
                    raise OptionError(f"option {name} takes no value (just {name})")
                raise OptionError(config.unknown_key(name, OPTIONS, "option"))
            if not has_value or not value:
                raise OptionError(f"option {name}= needs a value ({name}=...)")
            try:
                _CHECKS[name](value)
            except ValueError as exc:
                raise OptionError(f"option {name}=: {exc}") from None
            if name == "workspaces":
                # Several at once: workspaces=UUID:UUID (a comma would end the option).
                for workspace in filter(None, value.split(":")):
                    argv += ["--workspace", workspace]
            else:
                argv += [_VALUED[name], value]
    return argv


def mount_arguments(mountpoint: str, options: list[str]) -> list[str]:
    """`amigofs mount` arguments for a mount point and mount(8)-style options."""
    return ["mount", mountpoint, *option_flags(options)]


def _parse(argv: list[str]) -> tuple[str, list[str]] | None:
    """(mount point, option groups), or None when help was asked for."""
    positional: list[str] = []
    options: list[str] = []
    items = iter(argv)
    for item in items:
        if item in ("-h", "--help"):
            return None
        if item == "-o":
            value = next(items, None)
            if value is None:
                raise OptionError("-o needs options")
            options.append(value)
        elif item.startswith("-o"):
            options.append(item[2:])
        elif item in ("-n", "-s", "-v", "-f", "-r", "-w"):
            # mount(8)'s: no mtab, sloppy, verbose, fake, read-only, read-write.
            if item == "-f":
                raise OptionError("-f (fake) is not supported")
            continue
        elif item.startswith("-"):
            raise OptionError(f"unknown flag {item!r} (see {PROG} --help)")
        else:
            positional.append(item)
    if len(positional) != 2:
        raise OptionError(f"usage: {PROG} none MOUNTPOINT -o key=value,... (see {PROG} --help)")
    return positional[1], options


def main(argv: list[str] | None = None) -> int:
    from amigofs import cli

    try:
        parsed = _parse(sys.argv[1:] if argv is None else argv)
        if parsed is None:
            print(HELP, end="")
            return 0
        arguments = mount_arguments(*parsed)
    except OptionError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2  # as `amigofs mount` does for a mistake of the user's
    return cli.main(arguments, via_options=True)


if __name__ == "__main__":
    sys.exit(main())
