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

from amigofs.commands import cli
from amigofs.commands.mount_options import OptionError, mount_arguments

PROG = "mount.fuse.amigofs"

HELP = f"""\
usage: {PROG} none MOUNTPOINT -o OPTION[,OPTION...]

The helper mount(8) runs for /etc/fstab entries of type fuse.amigofs:

    none  /mnt/amigo  fuse.amigofs  base_url=URL,workspace=UUID,api_key_file=FILE,_netdev,nofail  0 0

It returns once the mount is live. Options (the keys of an amigofs config file):
  base_url=URL  workspace=UUID (repeatable)  workspaces=UUID:UUID  api_key_file=FILE
  cache_dir=DIR  cache_size=SIZE  cache_min_free=SIZE  kernel_readahead=SIZE
  timeout=DURATION  listing_ttl=DURATION  negative_ttl=DURATION  timezone=ZONE
  log_level=LEVEL  log_file=FILE  config=FILE  allow_other  insecure_http  no_call_wav  debug
  allow_non_empty (or nonempty: mount over a mount point that holds files)
Options of mount(8) and systemd (_netdev, nofail, noauto, x-systemd.*, rw, ...) are
ignored. The API key comes from api_key_file= (or AMIGO_API_KEY). See `amigofs mount --help`.
"""


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
