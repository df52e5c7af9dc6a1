"""mount(8)-style options (`key=value,...`, the keys of a config file) as the flags
of `amigofs mount` they stand for: what `-o` and the fstab helper take. Each value is
checked here, so a mistake is named as it was typed (`timeout=`, not `--timeout`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amigofs import config
from amigofs.commands.arguments import flag_name

# Options taking a value, and those that are a flag alone; each stands for the flag of
# `amigofs mount` of its name (cache_size: --cache-size).
_VALUED = (
    "base_url", "workspace", "api_key_file", "cache_dir", "cache_size", "cache_min_free",
    "kernel_readahead", "timeout", "listing_ttl", "negative_ttl", "timezone", "log_level",
    "log_file", "config",
)  # fmt: skip
_FLAGS = ("allow_other", "allow_non_empty", "insecure_http", "debug", "no_call_wav")
# What fuse's own mount option is called, for the flag it stands for.
_ALIASES = {"nonempty": "allow_non_empty"}
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

OPTIONS = (*_VALUED, "workspaces", *_FLAGS, *_ALIASES)
# As the shell completes them: a valued option with its "=", a switch alone.
OPTION_WORDS = tuple(
    name if name in _FLAGS or name in _ALIASES else f"{name}=" for name in OPTIONS
)


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
            name = _ALIASES.get(name, name)
            if name in _FLAGS and not has_value:
                argv.append(flag_name(name))
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
                argv += [flag_name(name), value]
    return argv


def mount_arguments(mountpoint: str, options: list[str]) -> list[str]:
    """`amigofs mount` arguments for a mount point and mount(8)-style options."""
    return ["mount", mountpoint, *option_flags(options)]
