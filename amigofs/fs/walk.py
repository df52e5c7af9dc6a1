"""Getting ahead of a walk through a workspace: the next calls' records (`RecordsAhead`)
and the next calls' audio (`WalkPrefetch`). Whether a program is walking, and in which
order, is decided by one detector (amigofs.policy.walk); this module owns what is
loaded or fetched ahead of each walk, and the tasks that do it.

Records ahead: find, rsync and cp -r enter call directories one after another, each
costing its round trips before the next can start. Once call directories are entered
in listing order (find, tar: readdir's) or in name order (rsync, which sorts, and its
--files-from list), two steps in the same order, the next records in THAT order are
loaded ahead, each once: never more than the cap (`records_in_flight`) past the
walker's last call, at most the cap at once (fewer after the API answers 429, see
policy.walk.AheadLimit), and nothing new while the walker does not move on: a walker
that stops costs at most the cap extra. Opening one call, or a few out of order,
loads nothing extra. Calls entered in name order before the workspace is listed
(rsync --files-from on a fresh mount) have the workspace listed, in the background,
so that the calls after them are known.

Bytes ahead: rsync, cp -r, tar and `sha256sum */outbound.wav` read one file at a time,
each from its first byte to its last, in name order (rsync, a glob: they sort) or in
listing order (tar, cp: readdir's). Read so, every file pays its own round trips and
one throttled stream, one after another. Once such a walk is seen, the stored files of
the next calls are fetched ahead, several at once, into the disk cache, within a
budget of calls and bytes ahead of the reader; the files the walk reads in each call
(all of them, or only outbound.wav) say which stored files are wanted.

What makes a walk of whole reads: files read whole, one after the other (one at a
time: a program reading several at once, such as `amigofs prefetch -j 4`, fetches in
parallel already and chose what it reads), each the next in the walk's order (the next
file of the same call, or a file of the next call), two steps at least, one of them to
the next call (so the order is known). A file manager or ffprobe peeking at headers, a
player seeking, a single `cat` read nothing whole or make no such steps: nothing is
fetched for them. A whole read out of order ends the walk: nothing more is started
(what is in flight lands, within the budget).

How far into a file ahead: no further than the walk has shown its reader reads, the
largest file it read whole in the calls it has passed, or the first 7 MiB (`LARGE_READ`,
what `file` reads of a file's start) if that is more. `file` over a workspace reads the
short calls whole (one read of 7 MiB holds them) and the long ones only 7 MiB at each
end: to a walk of whole reads they look alike until it reaches a long call, and the
long calls ahead, fetched whole, cost many times what `file` reads of them. Files of
7 MiB or less are fetched whole ahead, whatever the reader (all of a short call's).
Only calls passed count: a long call's inbound.wav of 7 to 14 MiB is read whole by
`file` too (its two ends meet), but its outbound.wav, read in part, ends the walk before
it moves on. A walk of whole reads of long files (rsync, tar, a hash) has read long
files whole, and gets them whole ahead; a call longer than any before it is fetched
ahead as far as the longest, its reader's own readahead going on from there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from amigofs.api import errors as api
from amigofs.api.stats import ClientStats
from amigofs.cache.index import CallIndex, CallRow
from amigofs.fs.errors import FsError
from amigofs.fs.records import CALL, INBOUND, METADATA, OUTBOUND, CallRecord, PresentedFile
from amigofs.policy.readahead import LARGE_READ
from amigofs.policy.walk import (
    BYTES_WALK,
    RECORDS_WALK,
    AheadLimit,
    Neighbours,
    Order,
    UnlistedWalk,
    Walk,
    WholeRead,
)

# WholeRead is policy now; the namespace still imports it from here.
__all__ = [
    "BYTES_AHEAD",
    "CALLS_AHEAD",
    "RecordsAhead",
    "WalkPrefetch",
    "WholeRead",
]

log = logging.getLogger(__name__)

# Calls, and bytes, whose audio is fetched ahead of a walk of whole reads.
CALLS_AHEAD = 8
BYTES_AHEAD = 64 << 20
# Which stored files a presented file is read from.
_SOURCES = {INBOUND: (INBOUND,), OUTBOUND: (OUTBOUND,), CALL: (INBOUND, OUTBOUND), METADATA: ()}


def rate_limited(stats: ClientStats) -> int:
    """The 429 answers a client has had (retried or not): the API asking for fewer
    requests."""
    return sum(count for (_, status), count in stats.finished.items() if status == "429")


def _calls_after(index: CallIndex) -> Neighbours[CallRow]:
    """The walk's view of the call index: the calls after a call in either order."""

    def calls_after(order: Order, row: CallRow, limit: int) -> list[CallRow]:
        if order == "listing":
            return index.after(row.workspace_id, row.row_id, limit)
        return index.after_sid(row.workspace_id, row.call_sid, limit)

    return calls_after


async def _ahead_of_need(
    what: str, workspace_id: str, call_sid: str, work: Callable[[], Awaitable[object]]
) -> None:
    """Runs work done ahead of need, in the mount's nursery: its failure ends it alone."""
    try:
        await work()
    except (api.AmigoError, FsError) as exc:
        # Done ahead of need: whoever needs it later gets the error then.
        log.debug("%s/%s: %s failed: %s", workspace_id, call_sid, what, exc)
    except Exception:
        # A bug here must end only this task, not the mount's nursery.
        log.exception("%s/%s: %s failed (a bug)", workspace_id, call_sid, what)


class RecordsAhead:
    """Call records loaded ahead of a walk through a workspace's call directories."""

    def __init__(
        self,
        index: CallIndex,
        load: Callable[[str, str], Awaitable[object]],
        known: Callable[[str, str], bool],
        nursery: trio.Nursery,
        *,
        in_flight: int,
        list_workspace: Callable[[str], None] = lambda workspace_id: None,
        rate_limited: Callable[[], int] = lambda: 0,
    ) -> None:
        self._load = load  # the call's record, loaded ahead (not a visit)
        self._known = known  # loaded already, or known to be missing: nothing to load
        self._nursery = nursery
        self._list_workspace = list_workspace  # starts its listing, if not listed already
        self._rate_limited = rate_limited  # the client's 429 answers so far
        self._limit = AheadLimit(in_flight)
        self._throttles_seen = rate_limited()
        self._calls_after = _calls_after(index)
        self._index = index
        self._walks: dict[str, Walk[CallRow]] = {}  # each workspace's walk
        self._unlisted: dict[str, UnlistedWalk] = {}  # each workspace's calls not listed
        self._loading: set[tuple[str, str]] = set()  # loads ahead started, not yet ended

    def visit(self, workspace_id: str, call_sid: str) -> None:
        """A call directory of the workspace was entered (not loaded ahead)."""
        row = self._index.by_sid(workspace_id, call_sid)
        if row is None:
            unlisted = self._unlisted.setdefault(workspace_id, UnlistedWalk())
            if unlisted.step(call_sid):
                self._list_workspace(workspace_id)
            return
        walk = self._walks.get(workspace_id)
        if walk is None:
            walk = self._walks[workspace_id] = Walk(RECORDS_WALK, self._calls_after)
        if walk.step(row) == "same":
            return  # the same call directory again (its files being looked at)
        throttles = self._rate_limited()
        if throttles != self._throttles_seen:
            self._throttles_seen = throttles
            self._limit.throttled()
        # The cap past the walker, the limit at once: the rest of the window starts
        # on the walker's next steps.
        room = self._limit.room(len(self._loading))
        for next_row in walk.ahead(self._limit.cap):
            if room <= 0:
                break
            rkey = (workspace_id, next_row.call_sid)
            if self._known(*rkey) or rkey in self._loading:
                continue
            self._loading.add(rkey)
            room -= 1
            self._nursery.start_soon(self._load_ahead, workspace_id, next_row.call_sid)

    async def _load_ahead(self, workspace_id: str, call_sid: str) -> None:
        async def load() -> None:
            await self._load(workspace_id, call_sid)
            self._limit.succeeded()

        try:
            await _ahead_of_need("loading ahead", workspace_id, call_sid, load)
        finally:
            self._loading.discard((workspace_id, call_sid))


@dataclass(slots=True)
class _WalkAhead:
    """One workspace's walk of whole reads and what is fetched ahead of it."""

    walk: Walk[CallRow]
    names: set[str] = field(default_factory=set)  # read whole in the reader's call
    pattern: set[str] = field(default_factory=set)  # the names each call is read for
    ahead: dict[str, int] = field(default_factory=dict)  # call SID -> bytes fetched ahead
    largest: int = 0  # the largest file read whole in the calls the walk has passed
    current: int = 0  # the largest file read whole in the reader's call


class WalkPrefetch:
    """The next calls' stored bytes fetched ahead of a walk of whole reads."""

    def __init__(
        self,
        index: CallIndex,
        load: Callable[[str, str], Awaitable[CallRecord]],
        prefetch: Callable[[PresentedFile, int], None],
        nursery: trio.Nursery,
        *,
        room: Callable[[], int],
        calls_ahead: int = CALLS_AHEAD,
        bytes_ahead: int = BYTES_AHEAD,
        least_reach: int = LARGE_READ,
    ) -> None:
        self._index = index
        self._calls_after = _calls_after(index)
        self._load = load  # the call's record, loaded ahead (not a visit)
        self._prefetch = prefetch  # fetch the first n stored bytes of a presented file
        self._nursery = nursery
        self._room = room  # bytes the disk cache can give prefetching now
        self._calls_ahead = calls_ahead
        self._bytes_ahead = bytes_ahead
        self._least_reach = least_reach  # how far into a file ahead, whatever was read
        self._walks: dict[str, _WalkAhead] = {}

    def interleaved(self, workspace_id: str) -> None:
        """A file was read whole while others of the workspace were being read: several
        readers at once (amigofs prefetch -j, a parallel copy), which fetch in parallel
        already and read only what they chose, not a walk to fetch ahead of."""
        self._walks.pop(workspace_id, None)

    def read_whole(self, workspace_id: str, call_sid: str, name: str, size: int) -> None:
        """A file of the workspace, of `size` bytes, has been read whole, the only one
        being read."""
        row = self._index.by_sid(workspace_id, call_sid)
        if row is None:
            return
        state = self._walks.get(workspace_id)
        walk = Walk(BYTES_WALK, self._calls_after) if state is None else state.walk
        step = walk.step(row, name)
        if state is None or step == "start":
            # The first file, or one out of the walk's order: a walk (again) from
            # here, with nothing fetched ahead of it (what is in flight is dropped).
            self._walks[workspace_id] = _WalkAhead(walk, names={name}, current=size)
            return
        if step == "file":
            state.names.add(name)
            state.current = max(state.current, size)
        else:
            state.pattern = state.names
            state.names = {name}
            state.largest = max(state.largest, state.current)
            state.current = size
            state.ahead.pop(row.call_sid, None)
        if walk.walking is not None:
            self._advance(workspace_id, state)

    def _advance(self, workspace_id: str, state: _WalkAhead) -> None:
        """Starts the next calls' fetches, up to the budget ahead of the reader."""
        wanted = state.walk.ahead(self._calls_ahead)
        keep = {r.call_sid for r in wanted}
        # Calls the reader has passed (or that left the window) are no longer ahead.
        for sid in [sid for sid in state.ahead if sid not in keep]:
            del state.ahead[sid]
        pattern = state.pattern | state.names
        budget = min(self._bytes_ahead, self._room())
        for next_row in wanted:
            if next_row.call_sid in state.ahead:
                continue
            if sum(state.ahead.values()) >= budget:
                break  # the cache is under pressure or the budget is spent
            state.ahead[next_row.call_sid] = 0
            self._nursery.start_soon(
                _ahead_of_need,
                "walk prefetch",
                workspace_id,
                next_row.call_sid,
                partial(self._fetch_call, workspace_id, state, next_row, pattern),
            )

    async def _fetch_call(
        self, workspace_id: str, state: _WalkAhead, row: CallRow, pattern: set[str]
    ) -> None:
        record = await self._load(workspace_id, row.call_sid)
        if self._walks.get(workspace_id) is not state or row.call_sid not in state.ahead:
            return  # the walk ended, or moved past this call, while the record loaded
        sources = {source for name in pattern for source in _SOURCES.get(name, ())}
        # Never past the budget, nor further into a file than the walk has shown its
        # reader reads: a call longer than either is fetched ahead only as far as they
        # reach (its reader's own readahead goes on from there).
        left = min(self._bytes_ahead, self._room()) - sum(state.ahead.values())
        reach = max(self._least_reach, state.largest)
        size = 0
        for source in sorted(sources):
            file = record.files.get(source)
            if file is None or file.stored is None or left <= 0:
                continue
            take = min(file.stored.size, left, reach)
            self._prefetch(file, take)
            size += take
            left -= take
        state.ahead[row.call_sid] = size
