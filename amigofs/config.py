"""Mount settings from flags, the environment, a TOML file and defaults, in that order.

    base_url = "https://api.platform.amigo.ai"
    workspaces = ["3f0c...", "77aa..."]
    api_key_file = "/etc/amigofs/prod.key"
    cache_dir = "/var/cache/amigofs/prod"
    cache_size = "20G"

Every key can also come from the environment as AMIGOFS_<KEY> (AMIGOFS_CACHE_SIZE=20G,
AMIGOFS_WORKSPACES=a,b); a flag beats the environment, which beats the file, which
beats the default. A key the file should not have, or a value of the wrong type,
is a one-line ConfigError naming it: a typo must not silently mount the wrong thing.
The API key itself is never a setting (only the path of the file holding it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from amigofs.api.client import DEFAULT_BASE_URL
from amigofs.api.models import is_identifier

ENV_PREFIX = "AMIGOFS_"
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_CACHE_SIZE = 16 << 20
MAX_KERNEL_READAHEAD = 64 << 20


class ConfigError(Exception):
    """A setting that cannot be used; its message names the key and where it came from."""


@dataclass(slots=True, frozen=True)
class Settings:
    mountpoint: Path | None = None
    base_url: str = DEFAULT_BASE_URL
    workspaces: tuple[str, ...] | None = None  # None: every workspace the key lists
    api_key_file: Path | None = None
    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/amigofs or ~/.cache/amigofs
    cache_size: int = 4 << 30
    # Larger kernel read requests: a quarter as many round trips through the FUSE loop
    # as the kernel's default 128K window gives (needs root; see mount.py).
    kernel_readahead: int = 1 << 20
    allow_other: bool = False
    timeout: float = 30.0
    listing_ttl: float = 60.0
    negative_ttl: float = 5.0
    log_level: str = "info"


KEYS = tuple(f.name for f in dataclasses.fields(Settings))


# --- values ------------------------------------------------------------------------------
# Each parser takes what TOML gave (or a string from the environment or a flag) and
# returns the value, or raises ValueError with what was expected.

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: object) -> int:
    """A cache size such as 512M, 20G or 1048576 (bytes); at least 16M."""
    size = _bytes(value)
    if size < MIN_CACHE_SIZE:
        raise ValueError(f"must be at least 16M, not {value!r}")
    return size


def format_size(size: int) -> str:
    """A size as parse_size reads it, in the largest unit that divides it: 4G, 1M."""
    for unit in ("T", "G", "M", "K"):
        if size and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return str(size)


def parse_readahead(value: object) -> int:
    """The kernel's readahead for the mount, such as 1M or 256K; 0 keeps the kernel's own."""
    size = _bytes(value)
    if size > MAX_KERNEL_READAHEAD:
        raise ValueError(f"must be at most 64M, not {value!r}")
    return size


def _bytes(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size like 500M or 20G")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
        try:
            number = float(text[: len(text) - len(unit)])
            if not math.isfinite(number):
                raise ValueError
            size = int(number * _SIZE_UNITS[unit])
        except (ValueError, OverflowError):
            raise ValueError(f"expected a size like 500M or 20G, not {value!r}") from None
    else:
        raise ValueError(f"expected a size like 500M or 20G, not {value!r}")
    if size < 0:
        raise ValueError(f"must not be negative, not {value!r}")
    return size


def parse_positive(value: object) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number of seconds, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number of seconds, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be more than 0, not {value!r}")
    return float(value)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, not {value!r}")


def _string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, not {value!r}")
    return value.strip()


def parse_base_url(value: object) -> str:
    """The API server's root URL, http(s) with a host; without a trailing slash."""
    url = _string(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, not {url!r}")
    if parts.query or parts.fragment or (parts.path not in ("", "/")):
        raise ValueError(f"must be the server's root URL, not {url!r}")
    return url.rstrip("/")


def _path(value: object) -> Path:
    return Path(os.path.expanduser(_string(value)))


def parse_workspaces(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of workspace ids, not {value!r}")
    bad = [item for item in value if not is_identifier(item)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a workspace id")
    return tuple(dict.fromkeys(value)) or None


def _log_level(value: object) -> str:
    level = _string(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return level


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "mountpoint": _path,
    "base_url": parse_base_url,
    "workspaces": parse_workspaces,
    "api_key_file": _path,
    "cache_dir": _path,
    "cache_size": parse_size,
    "kernel_readahead": parse_readahead,
    "allow_other": _bool,
    "timeout": parse_positive,
    "listing_ttl": parse_positive,
    "negative_ttl": parse_positive,
    "log_level": _log_level,
}
_PATHS = ("mountpoint", "api_key_file", "cache_dir")
# What TOML must give for each key: the environment's strings are parsed, but in the
# file `allow_other = "no"` or `timeout = "30"` is a mistake worth naming.
_TOML_TYPES: dict[str, tuple[type, ...]] = {
    "mountpoint": (str,),
    "base_url": (str,),
    "workspaces": (list,),
    "api_key_file": (str,),
    "cache_dir": (str,),
    "cache_size": (int, str),
    "kernel_readahead": (int, str),
    "allow_other": (bool,),
    "timeout": (int, float),
    "listing_ttl": (int, float),
    "negative_ttl": (int, float),
    "log_level": (str,),
}
_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    int: "a number",
    float: "a number",
    bool: "true or false",
}


# --- sources -----------------------------------------------------------------------------


def load_file(path: Path) -> dict[str, Any]:
    """The settings a TOML file gives; relative paths in it are relative to the file."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in document.items():
        if key not in _PARSERS:
            raise ConfigError(f"config {path}: unknown key {key!r} (known: {', '.join(KEYS)})")
        types = _TOML_TYPES[key]
        if not isinstance(raw, types) or (isinstance(raw, bool) and bool not in types):
            wanted = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))
            raise ConfigError(
                f"config {path}: {key}: expected {wanted}, not {type(raw).__name__} {raw!r}"
            )
        try:
            value = _PARSERS[key](raw)
        except ValueError as exc:
            raise ConfigError(f"config {path}: {key}: {exc}") from None
        if key in _PATHS and not value.is_absolute():
            value = path.parent.absolute() / value
        values[key] = value
    return values


def load_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in KEYS:
        name = ENV_PREFIX + key.upper()
        if name not in environ:
            continue
        try:
            values[key] = _PARSERS[key](environ[name])
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return values


def resolve(
    flags: Mapping[str, Any], environ: Mapping[str, str], config_file: Path | None
) -> Settings:
    """Flags (None: not given), then AMIGOFS_* variables, then the file, then defaults."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(load_file(config_file))
    merged.update(load_environment(environ))
    merged.update({key: value for key, value in flags.items() if value is not None})
    return Settings(**merged)
