"""The check `amigofs mount` makes before it mounts: does the server answer, does it
take the key, and can the key see the workspaces asked for?

Without it a wrong key, a server that is down or a mistyped workspace mount with
status 0 and only `ls` fails later. One request (list-workspaces, a page per 100
workspaces) settles all three:

- 401/403: the key is refused; the mount is refused with one line.
- no answer (connection refused, timeout, 5xx after retries): refused, unless the
  cache directory holds a tree from an earlier mount (CACHE_DIR/meta is not empty):
  then the mount goes ahead, serving from the cache, with a warning.
- a `--workspace` the listing lacks: not visible to the key. If none of those asked
  for is visible the mount is refused; otherwise it goes ahead with the visible
  ones and a warning names the others.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from amigofs.api import errors
from amigofs.api.client import ClientConfig, PlatformClient, RetryPolicy
from amigofs.api.models import Workspace
from amigofs.api.secret import ApiKey

log = logging.getLogger(__name__)

# A check, not a file operation: a server that is down is reported within seconds.
CHECK_SECONDS = 10.0


class Refused(Exception):
    """The mount must not go ahead; the message says why in one line."""


class Unreachable(Exception):
    """The server gave no usable answer; the message says what happened."""


@dataclass(slots=True, frozen=True)
class Checked:
    workspaces: tuple[str, ...] | None  # the visible ones of those asked for (None: all)
    warnings: tuple[str, ...] = ()


def client_config(base_url: str, timeout: float) -> ClientConfig:
    seconds = min(CHECK_SECONDS, timeout)
    return ClientConfig(
        base_url=base_url,
        max_connections=2,
        connect_timeout=min(5.0, seconds / 2),
        read_timeout=min(5.0, seconds / 2),
        retry=RetryPolicy(max_attempts=5, deadline=seconds),
    )


async def list_workspaces(config: ClientConfig, api_key: ApiKey) -> list[Workspace]:
    """Every workspace the key can list; Refused for a refused key, Unreachable when the
    server gives no usable answer."""
    base_url = config.base_url
    try:
        async with PlatformClient(config, api_key) as client:
            return await client.list_workspaces()
    except errors.AuthError as exc:
        if exc.status == 401:
            raise Refused(
                f"the API key was refused by {base_url} (HTTP 401: missing or invalid)"
            ) from None
        raise Refused(
            f"the API key may not list workspaces at {base_url} (HTTP 403: not permitted)"
        ) from None
    except errors.AmigoError as exc:
        raise Unreachable(f"{base_url} gave no usable answer ({exc})") from None


def has_cached_tree(cache_dir: Path) -> bool:
    """Whether an earlier mount left listings in CACHE_DIR/meta to serve from."""
    try:
        with os.scandir(cache_dir / "meta") as entries:
            return next(entries, None) is not None
    except OSError:
        return False


async def check(
    config: ClientConfig, api_key: ApiKey, workspaces: Sequence[str] | None, cache_dir: Path
) -> Checked:
    base_url = config.base_url
    wanted = tuple(workspaces) if workspaces else None
    try:
        listed = await list_workspaces(config, api_key)
    except Unreachable as exc:
        if not has_cached_tree(cache_dir):
            raise Refused(f"cannot mount: {exc}; is the server up and --base-url right?") from None
        return Checked(
            wanted,
            (f"{exc}: serving what the cache in {cache_dir} holds from an earlier mount; "
             "the rest fails with EIO until the server answers",),
        )  # fmt: skip
    if wanted is None:
        return Checked(None)
    # Workspace ids are UUIDs: compared without regard to case, named as the server spells them.
    known = {ws.id.lower(): ws.id for ws in listed}
    good = tuple(known[w.lower()] for w in wanted if w.lower() in known)
    bad = [w for w in wanted if w.lower() not in known]
    if not good:
        names = ", ".join(bad)
        raise Refused(
            f"workspace {names} is not visible to this API key at {base_url} "
            "(`amigofs workspaces` lists those it can see)"
            if len(bad) == 1
            else f"workspaces {names} are not visible to this API key at {base_url} "
            "(`amigofs workspaces` lists those it can see)"
        )
    return Checked(
        good,
        tuple(f"workspace {w} is not visible to this API key: not mounted" for w in bad),
    )


def run_check(
    base_url: str,
    api_key: ApiKey,
    workspaces: Sequence[str] | None,
    cache_dir: Path,
    timeout: float,
) -> Checked:
    config = client_config(base_url, timeout)
    result: Checked = trio.run(check, config, api_key, workspaces, cache_dir)
    return result
