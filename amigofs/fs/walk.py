"""Walk prefetch: the next calls' audio, fetched while a program reads a workspace whole.

rsync, cp -r, tar and `sha256sum */outbound.wav` read one file at a time, each from
its first byte to its last, in name order (rsync, a glob: they sort) or in listing
order (tar, cp: readdir's). Read so, every file pays its own round trips and one
throttled stream, one after another. Once such a walk is seen, the stored files of
the next calls are fetched ahead, several at once, into the disk cache, within a
budget of calls and bytes ahead of the reader; the files the walk reads in each call
(all of them, or only outbound.wav) say which stored files are wanted.

What makes a walk: files read whole, one after the other (one at a time: a
program reading several at once, such as `amigofs prefetch -j 4`, fetches in
parallel already and chose what it reads), each the next in the walk's order (the next file of the same call, or a file of the next call), two steps
at least, one of them to the next call (so the order is known). A file manager or
ffprobe peeking at headers, a player seeking, a single `cat` read nothing whole or
make no such steps: nothing is fetched for them. A whole read out of order ends the
walk: nothing more is started (what is in flight lands, within the budget).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from amigofs.api import errors as api
from amigofs.cache.index import CallIndex, CallRow
from amigofs.fs.errors import FsError
from amigofs.fs.records import CALL, INBOUND, METADATA, OUTBOUND, CallRecord, PresentedFile

log = logging.getLogger(__name__)

CALLS_AHEAD = 8
BYTES_AHEAD = 64 << 20
# Which stored files a presented file is read from.
_SOURCES = {INBOUND: (INBOUND,), OUTBOUND: (OUTBOUND,), CALL: (INBOUND, OUTBOUND), METADATA: ()}
# Gaps the kernel's readahead leaves between reads it sends out of order.
_MAX_PENDING_RANGES = 32


class WholeRead:
    """Whether one open file has been read from its first byte to its last: the
    reads, in whatever order the kernel sends them, leave no gap."""

    __slots__ = ("_begun", "_done", "_frontier", "_pending", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._begun = False  # a read has been asked for (it may be waiting for its bytes)
        self._frontier = 0  # [0, frontier) is read
        self._pending: list[tuple[int, int]] = []  # read ranges beyond a gap
        self._done = size == 0

    def begin(self) -> None:
        """A read of the file has been asked for: from now on it is being read."""
        self._begun = True

    @property
    def in_progress(self) -> bool:
        """Begun and not yet whole: a file being read now (its first read still waiting
        for its bytes counts: readers side by side ask at once)."""
        return self._begun and not self._done

    def on_read(self, offset: int, end: int) -> bool:
        """Records a read of [offset, end); True once, when the file is whole."""
        if self._done or self._frontier < 0:
            return False
        end = min(end, self._size)
        if offset > self._frontier:
            if len(self._pending) >= _MAX_PENDING_RANGES:
                self._pending = []
                self._frontier = -1  # too scattered to be a walk's read
                return False
            self._pending.append((offset, end))
            return False
        self._frontier = max(self._frontier, end)
        self._pending.sort()
        while self._pending and self._pending[0][0] <= self._frontier:
            self._frontier = max(self._frontier, self._pending.pop(0)[1])
        if self._frontier >= self._size:
            self._done = True
            return True
        return False


@dataclass(slots=True)
class _Walk:
    """One workspace's walk: where its reader is and what is fetched ahead of it."""

    last: CallRow
    last_name: str
    order: str | None = None  # "listing" or "name", once a step to the next call is seen
    steps: int = 0
    names: set[str] = field(default_factory=set)  # read whole in the reader's call
    pattern: set[str] = field(default_factory=set)  # the names each call is read for
    ahead: dict[str, int] = field(default_factory=dict)  # call SID -> bytes fetched ahead


class WalkPrefetch:
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
    ) -> None:
        self._index = index
        self._load = load  # the call's record, loaded ahead (not a visit)
        self._prefetch = prefetch  # fetch the first n stored bytes of a presented file
        self._nursery = nursery
        self._room = room  # bytes the disk cache can give prefetching now
        self._calls_ahead = calls_ahead
        self._bytes_ahead = bytes_ahead
        self._walks: dict[str, _Walk] = {}

    def interleaved(self, workspace_id: str) -> None:
        """A file was read whole while others of the workspace were being read: several
        readers at once (amigofs prefetch -j, a parallel copy), which fetch in parallel
        already and read only what they chose, not a walk to fetch ahead of."""
        self._walks.pop(workspace_id, None)

    def read_whole(self, workspace_id: str, call_sid: str, name: str) -> None:
        """A file of the workspace has been read whole, the only one being read."""
        row = self._index.by_sid(workspace_id, call_sid)
        if row is None:
            return
        walk = self._walks.get(workspace_id)
        step = None if walk is None else self._step(walk, row, name)
        if walk is None or step is None:
            # The first file, or one out of the walk's order: a walk (again) from here.
            self._walks[workspace_id] = _Walk(row, name, names={name})
            return
        if step == "file":
            walk.names.add(name)
        else:
            walk.order = step
            walk.pattern = walk.names
            walk.names = {name}
            walk.ahead.pop(row.call_sid, None)
        walk.last, walk.last_name = row, name
        walk.steps += 1
        if walk.order is not None and walk.steps >= 2:
            self._advance(workspace_id, walk)

    def _step(self, walk: _Walk, row: CallRow, name: str) -> str | None:
        """How the reader got from the last whole file to this one: the next file of
        the same call, the next call in listing or name order; None: no walk's step."""
        if row.row_id == walk.last.row_id:
            return "file" if name > walk.last_name else None
        orders = [walk.order] if walk.order is not None else ["listing", "name"]
        for order in orders:
            if row.call_sid in {r.call_sid for r in self._next(walk.last, order, 2)}:
                return order
        return None

    def _next(self, row: CallRow, order: str, limit: int) -> list[CallRow]:
        if order == "listing":
            return self._index.after(row.workspace_id, row.row_id, limit)
        return self._index.after_sid(row.workspace_id, row.call_sid, limit)

    def _advance(self, workspace_id: str, walk: _Walk) -> None:
        """Starts the next calls' fetches, up to the budget ahead of the reader."""
        assert walk.order is not None
        wanted = self._next(walk.last, walk.order, self._calls_ahead)
        keep = {r.call_sid for r in wanted}
        # Calls the reader has passed (or that left the window) are no longer ahead.
        for sid in [sid for sid in walk.ahead if sid not in keep]:
            del walk.ahead[sid]
        pattern = walk.pattern | walk.names
        budget = min(self._bytes_ahead, self._room())
        for next_row in wanted:
            if next_row.call_sid in walk.ahead:
                continue
            if sum(walk.ahead.values()) >= budget:
                break  # the cache is under pressure or the budget is spent
            walk.ahead[next_row.call_sid] = 0
            self._nursery.start_soon(self._fetch_call, workspace_id, walk, next_row, pattern)

    async def _fetch_call(
        self, workspace_id: str, walk: _Walk, row: CallRow, pattern: set[str]
    ) -> None:
        try:
            await self._fetch_call_ahead(workspace_id, walk, row, pattern)
        except (api.AmigoError, FsError) as exc:
            # Fetched ahead of need: whoever needs it later gets the error then.
            log.debug("%s/%s: walk prefetch: %s", workspace_id, row.call_sid, exc)
        except Exception:
            # A bug here must end only this prefetch, not the mount's nursery.
            log.exception("%s/%s: walk prefetch failed (a bug)", workspace_id, row.call_sid)

    async def _fetch_call_ahead(
        self, workspace_id: str, walk: _Walk, row: CallRow, pattern: set[str]
    ) -> None:
        record = await self._load(workspace_id, row.call_sid)
        if self._walks.get(workspace_id) is not walk or row.call_sid not in walk.ahead:
            return  # the walk ended, or moved past this call, while the record loaded
        sources = {source for name in pattern for source in _SOURCES.get(name, ())}
        # Never past the budget: a call longer than what is left is fetched ahead only
        # as far as it reaches (its reader's own readahead goes on from there).
        left = min(self._bytes_ahead, self._room()) - sum(walk.ahead.values())
        size = 0
        for source in sorted(sources):
            file = record.files.get(source)
            if file is None or file.stored is None or left <= 0:
                continue
            take = min(file.stored.size, left)
            self._prefetch(file, take)
            size += take
            left -= take
        walk.ahead[row.call_sid] = size
