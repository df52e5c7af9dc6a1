"""The workspaces the root shows: their ids, their slugs (by-name), and the times shown:
each workspace's, and the tree's (the root's and the views' folders).

Owns the two listings that are not of calls: the root's workspace ids (kept on disk,
so that a remount shows the tree at once) and the workspaces' slugs. Calls are listed
by the call index alone (amigofs.cache.index, filled by amigofs.fs.listing).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from amigofs.api import errors as api
from amigofs.api.client import PlatformClient
from amigofs.api.models import is_identifier
from amigofs.cache.index import CallIndex
from amigofs.cache.meta import MetaStore
from amigofs.cache.singleflight import SingleFlight
from amigofs.fs.views import usable_slug
from amigofs.policy.failures import FailureMemory

log = logging.getLogger(__name__)

T = TypeVar("T")

# A folder's time while nothing is known of its calls: fixed, so that it does not move
# between mounts (the mount's start would, and backups would see a change each time).
UNKNOWN_TIME_NS = 0


@dataclass(slots=True, frozen=True)
class HeldTime:
    """A folder's time as one mount shows it, from its first look on.

    tar stats a directory before and after reading it (its subtree included) and
    exits 1 if the time changed ("file changed as we read it"): a time that moved
    because the listing tar itself caused told the index the newest call did that.
    So a time moves only when something newer than `floor` is known: newer than the
    first look's time, or, when the first look knew nothing (UNKNOWN_TIME_NS shown),
    newer than the mount's start: a call that arrived, not one a listing revealed.
    """

    floor: int
    first: int  # what the first look showed

    @classmethod
    def first_look(cls, newest: int | None, mount_start_ns: int) -> HeldTime:
        """`newest`: the newest call's start known now; None if none is."""
        return cls(mount_start_ns, UNKNOWN_TIME_NS) if newest is None else cls(newest, newest)

    def shown(self, newest: int | None) -> int:
        return newest if newest is not None and newest > self.floor else self.first


class KeptListing(Generic[T]):
    """A listing kept for `ttl` seconds, then served stale while one refresh runs.

    With a copy on disk from an earlier mount, the first look is answered from
    it at once (and refreshed in the background), so a remount does not wait on
    the API to show the tree.
    """

    def __init__(
        self,
        load: Callable[[], Awaitable[T]],
        ttl: float,
        what: str,
        *,
        restore: Callable[[], T | None] | None = None,
        persist: Callable[[T], None] | None = None,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._what = what
        self._restore = restore
        self._persist = persist
        self._value: T | None = None
        self._loaded_at = -ttl - 1.0
        # The last refresh that failed: the next waits another `ttl`, so a refused
        # or failing listing costs one request per `ttl`, not one per access.
        self._failure = FailureMemory(seconds=ttl)
        self._flight: SingleFlight[T] = SingleFlight()

    @property
    def cached(self) -> T | None:
        return self._value

    def invalidate(self) -> None:
        self._loaded_at = -self._ttl - 1.0
        self._failure.forget()

    def peek(self) -> T | None:
        """The listing as known without a request: loaded, or kept from an earlier mount."""
        if self._value is None and self._restore is not None:
            self._value, self._restore = self._restore(), None
            self.invalidate()  # from an earlier mount: good to show, due for a refresh
        return self._value

    async def get(self, nursery: trio.Nursery) -> T:
        value = self.peek()
        if value is None:
            return await self.refresh()
        now = trio.current_time()
        due = now - self._loaded_at > self._ttl and self._failure.recent(now) is None
        if due and None not in self._flight:
            nursery.start_soon(self._refresh_in_background)
        return value

    async def refresh(self) -> T:
        """Loads the listing now (joining a load under way)."""
        return await self._flight.run(None, self._reload)

    async def _reload(self) -> T:
        try:
            value = await self._load()
        except Exception as exc:
            self._failure.remember(exc, trio.current_time())
            raise
        self._value, self._loaded_at = value, trio.current_time()
        self._failure.forget()
        if self._persist is not None:
            # Written in a thread: the loop serves other requests meanwhile (the one
            # that asked for the listing waits for it, a small document now).
            await trio.to_thread.run_sync(self._persist, value)
        return value

    async def _refresh_in_background(self) -> None:
        try:
            await self.refresh()
        except api.AmigoError as exc:
            if isinstance(exc, api.AuthError) and exc.status == 403:
                # Said once, by WorkspaceAccess: not again at every refresh.
                log.debug("%s: refresh refused: %s", self._what, exc)
            else:
                log.warning("%s: refresh failed, keeping the cached listing: %s", self._what, exc)
        except Exception:
            log.exception("%s: refresh failed (a bug), keeping the cached listing", self._what)


class Workspaces:
    """The root's workspaces, their slugs, and the modification time each has shown."""

    def __init__(
        self,
        client: PlatformClient,
        nursery: trio.Nursery,
        index: CallIndex,
        meta: MetaStore | None,
        *,
        listed: Sequence[str] | None,
        identity: str,
        listing_ttl: float,
        mount_time_ns: int,
    ) -> None:
        self._client = client
        self._nursery = nursery
        self._index = index
        self._meta = meta
        self._listed = listed  # --workspace; None: every workspace the key can list
        self._identity = identity
        self._listing_ttl = listing_ttl
        self._mount_time_ns = mount_time_ns  # never shown: see HeldTime
        self._ids: KeptListing[list[str]] = KeptListing(
            self._list_ids,
            listing_ttl,
            "workspace listing",
            restore=self._restore_ids,
            persist=self._persist_ids,
        )
        self._slugs: KeptListing[dict[str, str]] = KeptListing(
            self._list_slugs, listing_ttl, "workspace names"
        )
        self._mtimes: dict[str, HeldTime] = {}  # see mtime
        self._tree_mtime: HeldTime | None = None  # see tree_mtime

    async def ids(self) -> list[str]:
        return await self._ids.get(self._nursery)

    async def slugs(self) -> dict[str, str]:
        """slug -> workspace id, of the workspaces whose slug can be a file name."""
        return await self._slugs.get(self._nursery)

    def invalidate(self) -> None:
        self._ids.invalidate()

    def mtime(self, workspace_id: str) -> int:
        """The workspace directory's time: its newest call's start, held (HeldTime).

        A workspace changes when a call is added: its newest call's time says so, and
        stays the same across remounts. Looking a workspace up must cost no listing (a
        stat of one of its calls would wait on it): until the index knows its newest
        call, it shows UNKNOWN_TIME_NS, never the mount's start (that would move at
        every remount).
        """
        newest = self._index.newest_ns(workspace_id)
        held = self._mtimes.get(workspace_id)
        if held is None:
            held = self._mtimes[workspace_id] = HeldTime.first_look(newest, self._mount_time_ns)
        return held.shown(newest)

    def tree_mtime(self) -> int:
        """The time of the root and of the views' folders: the newest of the shown
        workspaces' times (see mtime), from what is known without a request (the
        workspace listing kept from an earlier mount counts), held like theirs."""
        ids = self._ids.peek()
        newest = None if ids is None else max(map(self.mtime, ids), default=UNKNOWN_TIME_NS)
        if self._tree_mtime is None:
            self._tree_mtime = HeldTime.first_look(newest, self._mount_time_ns)
        return self._tree_mtime.shown(newest)

    async def _list_ids(self) -> list[str]:
        if self._listed is not None:
            return list(self._listed)
        return sorted(ws.id for ws in await self._client.list_workspaces())

    async def _list_slugs(self) -> dict[str, str]:
        """slug -> workspace id, for the workspaces whose slug can be a name, once each."""
        found: dict[str, list[str]] = {}
        for ws in await self._client.list_workspaces():
            if usable_slug(ws.slug):
                found.setdefault(ws.slug, []).append(ws.id)
        return {slug: ids[0] for slug, ids in found.items() if len(ids) == 1}

    def _persist_ids(self, ids: list[str]) -> None:
        # Only a listing of the server's: the --workspace list is not one, and kept, it
        # would stand for every workspace at the next mount without it.
        if self._listed is None and self._meta is not None:
            self._meta.save({"identity": self._identity, "workspaces": list(ids)}, "root")

    def _restore_ids(self) -> list[str] | None:
        if self._listed is not None or self._meta is None:
            return None
        document = self._meta.load(_parse_root, "root")
        if document is None or document[0] != self._identity:
            return None  # listed by another server or key: not shown, not trusted
        return document[1]


def _parse_root(document: object) -> tuple[str, list[str]]:
    """(identity, workspace ids) of a kept root listing."""
    if not isinstance(document, dict) or not isinstance(document.get("identity"), str):
        raise ValueError("not a root listing")
    ids = document.get("workspaces")
    if not isinstance(ids, list) or not all(isinstance(i, str) and is_identifier(i) for i in ids):
        raise ValueError("not a list of workspace ids")
    return document["identity"], ids


def kept_root_identity(meta: MetaStore) -> str | None:
    """Whose root listing (ApiKey.identity: server and key) an earlier mount kept on
    disk, or None when none was kept."""
    document = meta.load(_parse_root, "root")
    return None if document is None else document[0]
