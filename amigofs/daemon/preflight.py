"""The check `amigofs mount` makes before it mounts: does the server answer, does it
take the key, and can the key see the workspaces asked for?

Without it a wrong key, a server that is down or a mistyped workspace mount with
status 0 and only `ls` fails later. One request (list-workspaces, a page per 100
workspaces) settles all three:

- 401/403: the key is refused; the mount is refused with one line.
- a TLS certificate that is not trusted: Refused (a trust store to fix, not a failure to wait out)
- no answer (connection refused, timeout, 5xx after retries): Unreachable (a failure
  worth trying again later, unlike the others), unless the cache directory holds a tree
  of this server and key from an earlier mount (the root listing it kept, which records
  whose it is, or for --workspace the call listing of one of those asked for): then the
  mount goes ahead, serving from the cache, with a warning. A cache of another server
  does not count: with a mistyped --base-url every `ls` would fail with EIO.
- a `--workspace` the listing lacks: not visible to the key. If none of those asked
  for is visible the mount is refused; otherwise it goes ahead with the visible
  ones and a warning names the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from amigofs.api import errors
from amigofs.api.client import ClientConfig, PlatformClient, RetryPolicy
from amigofs.api.models import Workspace
from amigofs.api.secret import ApiKey
from amigofs.cache.cache_dir import UnsafeCacheDir
from amigofs.cache.index import lists_calls_of
from amigofs.cache.meta import NAME as META_NAME
from amigofs.cache.meta import MetaStore
from amigofs.fs.workspaces import kept_root_identity

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
    except errors.CertificateError as exc:
        # A trust store to fix (SSL_CERT_FILE) or a server not to trust: no retry, and no
        # cache of it served in its place.
        raise Refused(str(exc)) from None
    except errors.AmigoError as exc:
        raise Unreachable(f"{base_url} gave no usable answer ({exc})") from None


def has_cached_tree(cache_dir: Path, identity: str, workspaces: Sequence[str] | None) -> bool:
    """Whether an earlier mount of this server and key (`identity`, ApiKey.identity) left
    a tree in the cache to serve: the root listing it kept, or, for a mount of some
    workspaces (which lists no root), the calls of one of them in the call index."""
    if not (cache_dir / META_NAME).is_file():
        return False  # no store of listings: nothing from any mount of this version
    try:
        meta = MetaStore(cache_dir)
    except (OSError, UnsafeCacheDir):
        return False
    try:
        if kept_root_identity(meta) == identity:
            return True
    finally:
        meta.close()
    return workspaces is not None and lists_calls_of(cache_dir, workspaces)


async def check(
    config: ClientConfig, api_key: ApiKey, workspaces: Sequence[str] | None, cache_dir: Path
) -> Checked:
    base_url = config.base_url
    wanted = tuple(workspaces) if workspaces else None
    try:
        listed = await list_workspaces(config, api_key)
    except Unreachable as exc:
        identity = api_key.identity(base_url)
        if not await trio.to_thread.run_sync(has_cached_tree, cache_dir, identity, wanted):
            raise Unreachable(
                f"cannot mount: {exc}, and the cache in {cache_dir} holds nothing of this "
                "server and key to serve; is the server up and --base-url right?"
            ) from None
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
