"""A workspace's calls in listing order, newest first (`CallList`): those added at run time,
then the ones it started with, either made at once (a small workspace) or each made from its
position when asked for (a large one, up to a million calls and beyond, in constant memory)."""

from __future__ import annotations

import bisect
import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Protocol, overload

from amigofs.emulator import faults, seeded
from amigofs.emulator.calls import HISTORY_DAYS, Call, CallMaker, Workspace

EAGER_CALLS = 10_000
"""Workspaces of at most this many recorded calls are built up front, as they always were (their
bytes stay what earlier versions served); larger ones are made call by call (_LazyOriginals)."""

NEW_CALL_GAP_MAX = 60
"""Seconds between the start times of calls added at run time, at most (see _gap_seconds)."""


def _gap_seconds(count: int) -> int:
    """Mean seconds between the start times of a lazy workspace's calls: its calls span about
    HISTORY_DAYS, but never closer than 2 s (start times are whole seconds, and a gap of G with
    a jitter below G keeps them strictly decreasing)."""
    return max(2, HISTORY_DAYS * 86400 // max(count, 1))


class _Originals(Protocol):
    """The calls a workspace starts with, newest first (position q = 0 is the newest)."""

    count: int

    def call(self, q: int) -> Call: ...

    def started(self, q: int) -> datetime: ...

    def find(self, sid: str) -> int | None: ...

    def archived_sids(self) -> Iterator[str]: ...


class _EagerOriginals:
    """A small workspace's calls, built once (CallMaker.eager_calls)."""

    __slots__ = ("_by_sid", "_calls", "count")

    def __init__(self, calls: list[Call]) -> None:
        self._calls = calls
        self.count = len(calls)
        self._by_sid = {c.call_sid: q for q, c in enumerate(calls) if c.call_sid is not None}

    def call(self, q: int) -> Call:
        return self._calls[q]

    def started(self, q: int) -> datetime:
        return self._calls[q].started_at

    def find(self, sid: str) -> int | None:
        return self._by_sid.get(sid)

    def archived_sids(self) -> Iterator[str]:
        for call in self._calls:
            if call.recording is not None and call.recording.archived:
                yield call.recording.call_sid


_CACHE_CALLS = 1024
"""Lazily made calls kept per workspace: a request touches one call several times, and a client
reads a call's three files soon after listing it."""


class _LazyOriginals:
    """A large workspace's calls, each made from its position and the seed when asked for.

    Position q (0 the newest) starts at ``epoch - lead - q * gap - jitter(q)`` with the jitter
    in [0, gap): strictly decreasing, computable from q alone, so a date is a binary search over
    positions. Its serial is ``count - 1 - q`` and its SID encodes that (SidCodec). The few
    calls without a SID or recording sit at seeded positions (a sorted list); the recorded
    calls' rank (q minus the specials before it) places the archived ones oldest, the broken
    ones newest and the long ones at a seeded sample of ranks, as the eager path does.
    """

    __slots__ = (
        "_cache",
        "_gap",
        "_kinds",
        "_lead",
        "_long",
        "_long_listed",
        "_maker",
        "_service_ids",
        "_service_number",
        "_specials",
        "_ws",
        "_ws_index",
        "count",
        "recorded",
    )

    def __init__(self, maker: CallMaker, ws: Workspace, index: int) -> None:
        config = maker.config
        self._maker = maker
        self._ws = ws
        self._ws_index = index
        self.recorded = config.calls_per_workspace
        special = config.null_sid_calls + config.no_recording_calls
        self.count = self.recorded + special
        rng = seeded.rng(config.seed, "lazy-calls", ws.id)
        self._service_ids = [seeded.uuid4(rng) for _ in range(2)]
        self._service_number = f"+1415555{rng.randrange(10000):04d}"
        positions = rng.sample(range(self.count), special)
        self._kinds = {
            q: "null_sid" if n < config.null_sid_calls else "no_recording"
            for n, q in enumerate(positions)
        }
        self._specials = sorted(positions)
        # The seeded sample of long ranks, or of short ones when those are fewer (benchmarks ask
        # for every call long): a set of at most half the calls.
        self._long_listed = config.long_calls <= self.recorded // 2
        listed = config.long_calls if self._long_listed else self.recorded - config.long_calls
        self._long = set(rng.sample(range(self.recorded), listed))
        self._gap = _gap_seconds(self.count)
        longest = config.long_duration if config.long_calls else config.max_duration
        # Every call ends before the epoch, as in the eager path.
        self._lead = math.ceil(longest) + 60
        self._cache: OrderedDict[int, Call] = OrderedDict()

    def started(self, q: int) -> datetime:
        seconds = self._lead + q * self._gap + self._jitter(q)
        return self._maker.epoch - timedelta(seconds=seconds)

    def _jitter(self, q: int) -> int:
        return seeded.jitter(self._maker.seed, self._ws.id, "start", self.count - 1 - q, self._gap)

    def find(self, sid: str) -> int | None:
        decoded = self._maker.sid_codec.decode(sid)
        if decoded is None or decoded[0] != self._ws_index or decoded[1] >= self.count:
            return None
        q = self.count - 1 - decoded[1]
        return None if self._kinds.get(q) == "null_sid" else q

    def _rank(self, q: int) -> int:
        """Recorded calls newer than position q (q's rank among the recorded, newest 0)."""
        return q - bisect.bisect_left(self._specials, q)

    def archived_sids(self) -> Iterator[str]:
        archived = self._maker.config.archived_calls
        q = self.count
        while archived > 0 and q > 0:
            q -= 1
            if q not in self._kinds:
                archived -= 1
                yield self._maker.sid_codec.encode(self._ws_index, self.count - 1 - q)

    def call(self, q: int) -> Call:
        if not 0 <= q < self.count:
            raise IndexError(q)
        call = self._cache.get(q)
        if call is not None:
            # Tests read the ground truth from threads too: another may just have evicted it.
            with contextlib.suppress(KeyError):
                self._cache.move_to_end(q)
            return call
        call = self._make(q)
        self._cache[q] = call
        if len(self._cache) > _CACHE_CALLS:
            self._cache.popitem(last=False)
        return call

    def _make(self, q: int) -> Call:
        config = self._maker.config
        kind = self._kinds.get(q, "recorded")
        serial = self.count - 1 - q
        sid = None if kind == "null_sid" else self._maker.sid_codec.encode(self._ws_index, serial)
        rng = seeded.rng(config.seed, "call", self._ws.id, serial)
        rank = self._rank(q) if kind == "recorded" else -1
        if rank >= 0 and (rank in self._long) == self._long_listed:
            duration = config.long_duration
        else:
            duration = round(rng.uniform(config.min_duration, config.max_duration), 3)
        call = self._maker.call(
            self._ws,
            rng,
            kind,
            sid,
            self.started(q),
            duration,
            kind == "recorded" and rank >= self.recorded - config.archived_calls,
            self._service_ids,
            self._service_number,
        )
        plan = faults.fault_plan(config)
        if call.recording is not None and 0 <= rank < len(plan):
            call = faults.with_fault(call, *plan[rank])
        return call


class CallList(Sequence[Call]):
    """A workspace's calls in listing order, newest first: those added at run time (Dataset.
    add_calls), then the ones it started with. Indexing makes calls on demand for large
    workspaces, so iterate a million-call list only if you mean it."""

    __slots__ = (
        "_added_cache",
        "_gap",
        "_index",
        "_maker",
        "_newest",
        "_originals",
        "_ws",
        "added",
    )

    def __init__(self, maker: CallMaker, ws: Workspace, index: int, originals: _Originals) -> None:
        self._maker = maker
        self._ws = ws
        self._index = index
        self._originals = originals
        self.added = 0
        self._newest = originals.started(0) if originals.count else maker.epoch
        self._gap = min(NEW_CALL_GAP_MAX, _gap_seconds(originals.count))
        self._added_cache: OrderedDict[int, Call] = OrderedDict()

    def __len__(self) -> int:
        return self.added + self._originals.count

    @overload
    def __getitem__(self, position: int) -> Call: ...

    @overload
    def __getitem__(self, position: slice) -> list[Call]: ...

    def __getitem__(self, position: int | slice) -> Call | list[Call]:
        if isinstance(position, slice):
            return [self[p] for p in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(position)
        if position < self.added:
            return self._added_call(self.added - 1 - position)
        return self._originals.call(position - self.added)

    def __iter__(self) -> Iterator[Call]:
        for position in range(len(self)):
            yield self[position]

    def started(self, position: int) -> datetime:
        """The start time of the call at a position, without making the call."""
        if position < self.added:
            return self._added_start(self.added - 1 - position)
        return self._originals.started(position - self.added)

    def first_before(self, moment: datetime) -> int:
        """The first position whose call started before ``moment`` (start times only decrease
        along the list): a binary search, so a date filter costs a few dozen start times."""
        return bisect.bisect_left(range(len(self)), True, key=lambda p: self.started(p) < moment)

    def find(self, sid: str) -> int | None:
        """The position of the call with this SID, or None."""
        q = self._originals.find(sid)
        if q is not None:
            return self.added + q
        decoded = self._maker.sid_codec.decode(sid)
        if decoded is None or decoded[0] != self._index:
            return None
        k = decoded[1] - self._originals.count
        return self.added - 1 - k if 0 <= k < self.added else None

    def archived_sids(self) -> Iterator[str]:
        """The SIDs of the calls that start archived (never one added at run time)."""
        return self._originals.archived_sids()

    def _added_start(self, k: int) -> datetime:
        # After every original call and strictly increasing with k (jitter < gap).
        jitter = seeded.jitter(self._maker.seed, self._ws.id, "new-start", k, self._gap)
        return self._newest + timedelta(seconds=(k + 1) * self._gap - jitter)

    def _added_call(self, k: int) -> Call:
        call = self._added_cache.get(k)
        if call is not None:
            return call
        config = self._maker.config
        rng = seeded.rng(config.seed, "new-call", self._ws.id, k)
        service_rng = seeded.rng(config.seed, "new-call-service", self._ws.id)
        service_ids = [seeded.uuid4(service_rng) for _ in range(2)]
        service_number = f"+1415555{service_rng.randrange(10000):04d}"
        call = self._maker.call(
            self._ws,
            rng,
            "recorded",
            self._maker.sid_codec.encode(self._index, self._originals.count + k),
            self._added_start(k),
            round(rng.uniform(config.min_duration, config.max_duration), 3),
            False,
            service_ids,
            service_number,
        )
        self._added_cache[k] = call
        if len(self._added_cache) > _CACHE_CALLS:
            self._added_cache.popitem(last=False)
        return call


def workspace_calls(maker: CallMaker, ws: Workspace, index: int) -> CallList:
    """The calls of the workspace at `index`: made at once if there are at most EAGER_CALLS
    of them, as they always were (their bytes stay what earlier versions served), else each
    when asked for."""
    originals: _Originals
    if maker.config.calls_per_workspace > EAGER_CALLS:
        originals = _LazyOriginals(maker, ws, index)
    else:
        originals = _EagerOriginals(faults.inject_faults(maker.config, maker.eager_calls(ws)))
    return CallList(maker, ws, index, originals)
