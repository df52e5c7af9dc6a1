"""Mount settings from flags, the environment, a TOML file and defaults, in that order.

    base_url = "https://api.platform.amigo.ai"
    workspaces = ["3f0c...", "77aa..."]
    api_key_file = "/etc/amigofs/prod.key"
    cache_dir = "/var/cache/amigofs/prod"
    cache_size = "20G"
    cache_min_free = "1G"
    listing_ttl = "5m"     # durations: 30s, 5m, 1h30m, or a number of seconds

Every key can also come from the environment as AMIGOFS_<KEY> (AMIGOFS_CACHE_SIZE=20G,
AMIGOFS_WORKSPACES=a,b); a flag beats the environment, which beats the file, which
beats the default. A key the file should not have, or a value of the wrong type,
is a one-line ConfigError naming it: a typo must not silently mount the wrong thing.
The API key itself is never a setting (only the path of the file holding it), and no
error echoes a value that could hold a secret (the key file's path, the base URL, a key
the file should not have).

The file decides where the API key is sent, so it must be the user's own: owned by
them or root and writable by no one else, as the key file must be. A base URL of plain
http to another machine is refused unless insecure_http says it is meant.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from amigofs.api.client import DEFAULT_BASE_URL
from amigofs.api.secret import TrustedFileError, read_trusted_file
from amigofs.logs import LEVELS

ENV_PREFIX = "AMIGOFS_"
LOG_LEVELS = LEVELS
MIN_CACHE_SIZE = 16 << 20
MAX_KERNEL_READAHEAD = 64 << 20
# Past this many records loaded ahead at once, a walk would be the API's heaviest user.
MAX_RECORDS_IN_FLIGHT = 256


class ConfigError(Exception):
    """A setting that cannot be used; its message names the key and where it came from."""


@dataclass(slots=True, frozen=True)
class Settings:
    """What the user chose, each default written here and nowhere else: the commands
    show these defaults in their help, and the daemon takes a Settings as it is."""

    mountpoint: Path | None = None
    base_url: str = DEFAULT_BASE_URL
    workspaces: tuple[str, ...] | None = None  # None: every workspace the key lists
    api_key_file: Path | None = None
    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/amigofs or ~/.cache/amigofs
    cache_size: int = 4 << 30
    # The disk cache keeps at least this much free on its disk (and at least 5% of it).
    cache_min_free: int = 1 << 30
    # Larger kernel read requests: a quarter as many round trips through the FUSE loop
    # as the kernel's default 128K window gives (needs root; see mount.py).
    kernel_readahead: int = 1 << 20
    allow_other: bool = False
    # Mount over a mount point that holds files (hidden while mounted); refused otherwise.
    allow_non_empty: bool = False
    # Plain http to a host other than this machine: the key would cross in cleartext.
    insecure_http: bool = False
    timeout: float = 30.0
    listing_ttl: float = 60.0
    negative_ttl: float = 5.0
    # Call records a walk (rsync, find) has loaded ahead of it: at most this many at
    # once and this many past the walker's last call; 0 loads none ahead.
    records_in_flight: int = 32
    # by-date's days and times: an IANA zone name; None: UTC.
    timezone: str | None = None
    # The stereo call.wav beside each call's two channels (off for backups of the stored files).
    call_wav: bool = True
    log_level: str = "info"
    # None: CACHE_DIR/mount.log for a daemon, stderr in the foreground.
    log_file: Path | None = None


KEYS = tuple(f.name for f in dataclasses.fields(Settings))


def default_cache_dir() -> Path:
    """Where the cache is kept when cache_dir is not set: $XDG_CACHE_HOME/amigofs, or
    ~/.cache/amigofs without it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "amigofs"


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


def parse_min_free(value: object) -> int:
    """The free space the disk cache leaves on its disk, such as 1G or 500M; 0 for none
    beyond the 5% it always leaves."""
    return _bytes(value)


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


def parse_records_in_flight(value: object) -> int:
    """Call records loaded ahead of a walk at once: a whole number from 0 (none) to 256."""
    wrong = f"expected a whole number from 0 to {MAX_RECORDS_IN_FLIGHT}, not {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(wrong)
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(wrong) from None
    if not 0 <= number <= MAX_RECORDS_IN_FLIGHT:
        raise ValueError(wrong)
    return number


# Durations as rclone and systemd take them: a number with a unit, several in a row
# (1h30m), or a plain number of seconds as before. Units are lower case only: 5M is a
# size, and reading it as five minutes would hide the mistake.
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_DURATION_EXAMPLES = "durations take a unit: 30s, 5m, 1h30m"


def parse_duration(value: object) -> float:
    """A time such as 30s, 5m, 1h, 1h30m or 500ms, or a number of seconds (30, 2.5);
    more than 0. In seconds."""
    seconds = _seconds(value)
    if not seconds > 0:
        raise ValueError(f"must be more than 0, not {seconds!r}")
    return seconds


def _seconds(value: object) -> float:
    wrong = f"expected a number of seconds, not {value!r} ({_DURATION_EXAMPLES})"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(wrong)
    if isinstance(value, str):
        text = value.strip()
        if _DURATION.fullmatch(text):
            return sum(
                float(number) * _DURATION_UNITS[unit]
                for number, unit in _DURATION_PART.findall(text)
            )
        try:
            value = float(text)
        except ValueError:
            raise ValueError(wrong) from None
    if not math.isfinite(value):
        raise ValueError(wrong)
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
    """The API server's root URL, http(s) with a host; without a trailing slash.
    Errors never show a user name, password, query or path: any could be a secret."""
    url = _string(value)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError("must be an http(s) URL with a host (this one cannot be parsed)") from None
    if "@" in parts.netloc:
        raise ValueError(
            "must not hold a user name or password (the API key goes in AMIGO_API_KEY "
            "or api_key_file)"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host, such as https://api.example.com")
    if parts.query or parts.fragment or (parts.path not in ("", "/")):
        raise ValueError(
            f"must be the server's root URL, {parts.scheme}://{parts.netloc}, "
            "without a path, query or fragment"
        )
    return url.rstrip("/")


def is_cleartext_to_another_host(url: str) -> bool:
    """Whether requests to `url` would leave this machine unencrypted: plain http to a
    host that is not loopback (localhost, 127.0.0.0/8, ::1)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False  # RFC 6761: always loopback
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True  # a name: it may resolve anywhere
    mapped = getattr(address, "ipv4_mapped", None)
    return not (address.is_loopback or (mapped is not None and mapped.is_loopback))


def parser(key: str) -> Callable[[Any], Any]:
    """The function that reads the value of setting `key` (ValueError if it is wrong)."""
    return _PARSERS[key]


def parse_path(value: object) -> Path:
    return _path(value)


def _path(value: object) -> Path:
    return Path(os.path.expanduser(_string(value)))


def _secret_path(value: object) -> Path:
    # The key file's path: a key pasted here by mistake must not be printed back.
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected the path of the file holding the API key")
    return Path(os.path.expanduser(value.strip()))


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def is_workspace_id(name: str) -> bool:
    """Workspace ids are UUIDs (the API's `format: uuid`): a name of another shape is
    refused before any request is made."""
    return _UUID.fullmatch(name) is not None


def parse_workspaces(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of workspace ids, not {value!r}")
    bad = [item for item in value if not is_workspace_id(item)]
    if bad:
        raise ValueError(
            f"{bad[0]!r} is not a workspace id (a UUID such as 3f0c0e6a-1b2c-4d5e-8f90-a1b2c3d4e5f6; "
            "`amigofs workspaces` lists them)"
        )
    return tuple(dict.fromkeys(value)) or None


def parse_timezone(value: object) -> str:
    """An IANA time zone name, such as Europe/Berlin or UTC."""
    import zoneinfo

    name = _string(value)
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError(
            f"expected an IANA time zone such as Europe/Berlin, not {value!r}"
        ) from None
    return name


def _log_level(value: object) -> str:
    level = _string(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return level


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "mountpoint": _path,
    "base_url": parse_base_url,
    "workspaces": parse_workspaces,
    "api_key_file": _secret_path,
    "cache_dir": _path,
    "cache_size": parse_size,
    "cache_min_free": parse_min_free,
    "kernel_readahead": parse_readahead,
    "allow_other": _bool,
    "allow_non_empty": _bool,
    "insecure_http": _bool,
    "timeout": parse_duration,
    "listing_ttl": parse_duration,
    "negative_ttl": parse_duration,
    "records_in_flight": parse_records_in_flight,
    "timezone": parse_timezone,
    "call_wav": _bool,
    "log_level": _log_level,
    "log_file": _path,
}
_PATHS = ("mountpoint", "api_key_file", "cache_dir", "log_file")
# What TOML must give for each key: the environment's strings are parsed, but in the
# file `allow_other = "no"` or `workspaces = "3f0c..."` is a mistake worth naming.
_TOML_TYPES: dict[str, tuple[type, ...]] = {
    "mountpoint": (str,),
    "base_url": (str,),
    "workspaces": (list,),
    "api_key_file": (str,),
    "cache_dir": (str,),
    "cache_size": (int, str),
    "cache_min_free": (int, str),
    "kernel_readahead": (int, str),
    "allow_other": (bool,),
    "allow_non_empty": (bool,),
    "insecure_http": (bool,),
    "timeout": (int, float, str),
    "listing_ttl": (int, float, str),
    "negative_ttl": (int, float, str),
    "records_in_flight": (int, str),
    "timezone": (str,),
    "call_wav": (bool,),
    "log_level": (str,),
    "log_file": (str,),
}
# Keys whose value may hold a secret (a key pasted as the path, a password in the
# URL): their errors name the key and what was expected, never the value.
_SECRET_BEARING = ("api_key_file", "base_url")
# Names that say someone tried to put the key itself in the file.
_KEY_LIKE = re.compile(r"key|token|secret|passw|bearer|auth|credential", re.IGNORECASE)
# What a setting's name looks like; an unknown key of another shape is not echoed
# (a line of a key file, say, read as TOML).
_NAME_LIKE = re.compile(r"[a-z][a-z_]{0,39}")
_DURATION_KEYS = ("timeout", "listing_ttl", "negative_ttl")
# What a key of several types takes, when "a number or a string" would not say it.
_WANTED = dict.fromkeys(_DURATION_KEYS, f"a number of seconds or a string ({_DURATION_EXAMPLES})")
_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    int: "a number",
    float: "a number",
    bool: "true or false",
}


# --- sources -----------------------------------------------------------------------------


def load_file(path: Path) -> dict[str, Any]:
    """The settings a TOML file gives; relative paths in it are relative to the file.
    Refused unless it is the user's own (see the module's docstring)."""
    try:
        data = read_trusted_file(path, "config", private=False, instead="a config file of your own")
    except TrustedFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in document.items():
        if key not in _PARSERS:
            raise ConfigError(f"config {path}: {unknown_key(key)}")
        types = _TOML_TYPES[key]
        if not isinstance(raw, types) or (isinstance(raw, bool) and bool not in types):
            wanted = _WANTED.get(key) or " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))
            given = (
                type(raw).__name__ if key in _SECRET_BEARING else f"{type(raw).__name__} {raw!r}"
            )
            raise ConfigError(f"config {path}: {key}: expected {wanted}, not {given}")
        try:
            value = _PARSERS[key](raw)
        except ValueError as exc:
            raise ConfigError(f"config {path}: {key}: {exc}") from None
        if key in _PATHS and not value.is_absolute():
            value = path.parent.absolute() / value
        values[key] = value
    return values


def unknown_key(key: str, known: tuple[str, ...] = KEYS, what: str = "key") -> str:
    """What to say of a name that is no setting (a file's key, an fstab option)."""
    shown = repr(key) if _NAME_LIKE.fullmatch(key) else "(not shown: it could be a secret)"
    if _KEY_LIKE.search(key):
        return (
            f"unknown {what} {shown}: the API key itself is never a setting; put it in a file "
            "only you can read (mode 0600) and name that file with api_key_file"
        )
    close = difflib.get_close_matches(key, known, n=1) if _NAME_LIKE.fullmatch(key) else []
    hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
    return f"unknown {what} {shown} ({hint})"


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
    settings = Settings(**merged)
    if not settings.insecure_http and is_cleartext_to_another_host(settings.base_url):
        if flags.get("base_url") is not None:
            where = "--base-url"
        elif ENV_PREFIX + "BASE_URL" in environ:
            where = ENV_PREFIX + "BASE_URL"
        else:
            where = f"config {config_file}: base_url"
        raise ConfigError(
            f"{where} {settings.base_url} is plain http to another machine: the API key "
            "would cross the network unencrypted; use https, or allow it with "
            "--insecure-http (insecure_http = true, AMIGOFS_INSECURE_HTTP=1)"
        )
    return settings
