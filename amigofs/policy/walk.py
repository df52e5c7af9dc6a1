"""Walk detection: whether a program is walking a workspace call after call, in which
order, and which calls come next; and whether one open file was read whole.

find, a file manager's preview pane, tar and cp -r go through a workspace in listing
order (readdir's); rsync and a glob sort, so they go in name order. Seen call after
call, such a walk is worth getting ahead of: the next calls' records (records ahead,
`RECORDS_WALK`: call directories entered) and the next calls' stored bytes (bytes
ahead, `BYTES_WALK`: files read whole, one at a time). One `Walk` decides both,
with a `WalkRule` that says what counts as a step; a lookup, a peek or a single
`cat` makes no walk.

A walk through calls not listed yet (rsync --files-from on a mount that has not
listed the workspace) has no listing to say which calls come next; entered in name
order, call after call (`UnlistedWalk`), it is worth the workspace's listing, after
which it is a walk like any other. How many records are loaded ahead at once
(`AheadLimit`) follows the API's 429 answers.

Plain code: the calls after a position, in listing or name order, come from a
callable the owner passes (the call index in the mount, a list in tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

Order = Literal["listing", "name"]
ORDERS: tuple[Order, ...] = ("listing", "name")  # tried in this order: listing first
# What a new position is to the walk: the same call again (no step), a later file of
# the same call, the next call in one of the orders, or a walk (again) from here (the
# first position, or one out of the walk's order).
Step = Literal["same", "file", "listing", "name", "start"]

# A step reaches the next call or the one after it: one call skipped goes on with
# the walk.
NEXT_CALLS = 2
# Steps that make a walk: one could be chance, in one order or the other.
WALK_STEPS = 2
# Calls not listed yet entered in name order, one after the other, before the
# workspace's listing is asked for: its cost, a request per 100 calls, is then a few
# percent of what loading those calls cost; `ls -l` of a few calls named on its
# command line (which it sorts) lists nothing.
UNLISTED_WALK_STEPS = 16
# Loads ahead at once when a walk begins (see AheadLimit): a server that takes
# fewer is not sent a burst of the whole cap.
FIRST_AHEAD = 4
# Gaps the kernel's readahead leaves between reads it sends out of order.
MAX_PENDING_RANGES = 32


class Call(Protocol):
    """A call as a walk sees it: one position in the workspace's orders."""

    @property
    def call_sid(self) -> str: ...


C = TypeVar("C", bound=Call)
# The calls after a call in an order, at most n: (order, call, n) -> calls.
Neighbours = Callable[[Order, C, int], Sequence[C]]


@dataclass(slots=True, frozen=True)
class WalkRule:
    """What counts as a step of a walk."""

    # True: positions are files read whole, and a later file (by name) of the same
    # call is a step, an earlier one or the same file again a walk from here (bytes
    # ahead). False: positions are call directories entered, and the same call again
    # is no step at all (its files being looked at: records ahead).
    files: bool
    # True: once a step to the next call has set the walk's order, a step in the
    # other order ends the walk (a walk from here). False: it counts as the first
    # step of a walk in that order.
    one_order: bool


RECORDS_WALK = WalkRule(files=False, one_order=False)
BYTES_WALK = WalkRule(files=True, one_order=True)


class Walk(Generic[C]):
    """One workspace's walk: where its reader is, in which order it goes, and how
    many steps it has made in a row."""

    __slots__ = ("_neighbours", "_rule", "last", "last_name", "order", "steps")

    def __init__(self, rule: WalkRule, neighbours: Neighbours[C]) -> None:
        self._rule = rule
        self._neighbours = neighbours
        self.last: C | None = None
        self.last_name = ""
        self.order: Order | None = None  # set by a step to the next call
        self.steps = 0

    @property
    def walking(self) -> Order | None:
        """The walk's order once it is a walk: WALK_STEPS steps, one to the next call."""
        return self.order if self.steps >= WALK_STEPS else None

    def ahead(self, n: int) -> Sequence[C]:
        """The next n calls of the walk after its reader; none if it is no walk."""
        order = self.walking
        if order is None or self.last is None:
            return []
        return self._neighbours(order, self.last, n)

    def step(self, call: C, name: str = "") -> Step:
        """Moves the reader to `call` (and its file `name`, for whole-file reads)."""
        step = self._step(call, name)
        if step == "same":
            return step
        if step == "start":
            self.order, self.steps = None, 0
        elif step == "file":
            self.steps += 1
        else:
            # The first step to the next call, or one more in the walk's order; one
            # in the other order begins a new count (only when the rule allows it).
            self.steps = self.steps + 1 if self.order in (None, step) else 1
            self.order = step
        self.last, self.last_name = call, name
        return step

    def _step(self, call: C, name: str) -> Step:
        last = self.last
        if last is None:
            return "start"
        if call.call_sid == last.call_sid:
            if not self._rule.files:
                return "same"
            return "file" if name > self.last_name else "start"
        orders = [self.order] if self._rule.one_order and self.order is not None else ORDERS
        for order in orders:
            if any(c.call_sid == call.call_sid for c in self._neighbours(order, last, NEXT_CALLS)):
                return order
        return "start"


class UnlistedWalk:
    """Whether calls not listed yet are being entered in name order, one after the
    other: a walk whose next calls only the workspace's listing can tell."""

    __slots__ = ("last", "steps")

    def __init__(self) -> None:
        self.last = ""
        self.steps = 0

    def step(self, call_sid: str) -> bool:
        """Enters call `call_sid`; True while the walk is long enough to list for."""
        if call_sid != self.last:
            # Sorted names: each after the last. Any other name begins a new count.
            self.steps = self.steps + 1 if self.last and call_sid > self.last else 0
            self.last = call_sid
        return self.steps >= UNLISTED_WALK_STEPS


class AheadLimit:
    """How many loads ahead may be in flight at once, as TCP's congestion window finds
    what a path takes without overrunning it: FIRST_AHEAD at first, one more for each
    load that ends well (twice as many a round trip) up to `cap`; once the API has
    answered 429 (it asks for fewer requests: the loads in flight wait out its
    Retry-After), halved, then one more only once as many loads as the limit have
    ended well (one more a round trip)."""

    __slots__ = ("_ended_well", "_throttled", "cap", "limit")

    def __init__(self, cap: int) -> None:
        self.cap = cap  # 0: nothing is loaded ahead
        self.limit = min(cap, FIRST_AHEAD)
        self._throttled = False  # since the first 429: one more a round trip
        self._ended_well = 0  # loads that ended well at this limit

    def throttled(self) -> None:
        # One load at a time at least: the walk goes on however busy the API.
        self.limit = min(self.cap, max(1, self.limit // 2))
        self._throttled = True
        self._ended_well = 0

    def succeeded(self) -> None:
        self._ended_well += 1
        if not self._throttled or self._ended_well >= self.limit:
            self.limit = min(self.cap, self.limit + 1)
            self._ended_well = 0

    def room(self, in_flight: int) -> int:
        """How many more loads may start with `in_flight` under way."""
        return max(0, self.limit - in_flight)


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
            if len(self._pending) >= MAX_PENDING_RANGES:
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
