"""`mount.fuse.amigofs`: the helper mount(8) runs for fstab entries of type fuse.amigofs.

    none  /mnt/amigo  fuse.amigofs  base_url=https://...,workspace=UUID,api_key_file=/etc/amigofs/key,cache_dir=/var/cache/amigofs,_netdev  0 0

mount(8) calls it as `mount.fuse.amigofs none /mnt/amigo -o OPTIONS` (from /sbin,
where it must be linked). It turns the options into `amigofs mount` flags and
returns once the mount is live, the daemon running on in its own session.
Options meant for mount(8) or systemd (_netdev, nofail, noauto, x-systemd.*...)
are ignored; anything else unknown is an error naming it.
"""

from __future__ import annotations

import sys

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
    "log_level": "--log-level",
    "config": "--config",
}
_FLAGS = {"allow_other": "--allow-other", "insecure_http": "--insecure-http", "debug": "--debug"}
# For mount(8), systemd or the kernel's generic handling; amigofs is read-only whatever
# they say, so rw and ro change nothing.
_IGNORED = {
    "rw", "ro", "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group",
    "_netdev", "nofail", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime",
    "noatime", "relatime", "strictatime", "nodiratime", "sync", "async", "loop",
}  # fmt: skip
_IGNORED_PREFIXES = ("x-", "comment=", "fsname=", "subtype=")


class OptionError(Exception):
    pass


def mount_arguments(mountpoint: str, options: list[str]) -> list[str]:
    """`amigofs mount` arguments for a mount point and mount(8)-style options."""
    argv = ["mount", mountpoint]
    for group in options:
        for option in group.split(","):
            option = option.strip()
            if not option or option in _IGNORED or option.startswith(_IGNORED_PREFIXES):
                continue
            name, has_value, value = option.partition("=")
            if name == "workspaces" and has_value:
                # Several at once: workspaces=UUID:UUID (a comma would end the option).
                for workspace in filter(None, value.split(":")):
                    argv += ["--workspace", workspace]
            elif name in _VALUED:
                if not has_value or not value:
                    raise OptionError(f"option {name!r} needs a value ({name}=...)")
                argv += [_VALUED[name], value]
            elif name in _FLAGS and not has_value:
                argv.append(_FLAGS[name])
            else:
                raise OptionError(f"unknown option {option!r}")
    return argv


def _parse(argv: list[str]) -> tuple[str, list[str]]:
    positional: list[str] = []
    options: list[str] = []
    items = iter(argv)
    for item in items:
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
            raise OptionError(f"unknown flag {item!r}")
        else:
            positional.append(item)
    if len(positional) != 2:
        raise OptionError("usage: mount.fuse.amigofs none MOUNTPOINT -o key=value,...")
    return positional[1], options


def main(argv: list[str] | None = None) -> int:
    from amigofs import cli

    try:
        mountpoint, options = _parse(sys.argv[1:] if argv is None else argv)
        arguments = mount_arguments(mountpoint, options)
    except OptionError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1  # mount(8): incorrect invocation
    return cli.main(arguments)


if __name__ == "__main__":
    sys.exit(main())
