"""Every block's state, in one place: the one owner the store and the disk cache ask.

A block of a stored file is, at any moment, in one of these states:

    ABSENT    nothing known of it (no entry)
    FETCHING  a download that will bring it is under way (`Block.fetch`)
    UNCHECKED a file an earlier mount left, to be checked against its CRC before
              a byte of it is served (`Block.file`, not verified)
    CHECKING  such a file being checked in a thread (`Block.checking`)
    READY     a file on disk checked in this mount, or its bytes held in memory
              because the disk had no room (`Block.memory`)

and is pinned (`Block.pins`) while readers wait to copy it out: eviction passes a
pinned block by. A fetch may be under way for a block whose file is gone or was
found wrong, so the parts are fields of one object rather than one enum value;
`Block.state` names the state they add up to.

`BlockTable` holds the blocks in use (fetching, checking, pinned, held in memory)
and a bounded number of idle ones with files, most recently used last: its memory
does not grow with the blocks ever looked up. A block file on disk that the table
has no entry for is found when a read asks for it (`find`: its path, then it is
UNCHECKED, as one an earlier mount left, unless it was checked in this mount and
dropped since: its verdict is kept apart, bounded), and what the files take and
their use order persist in a `BlockJournal` (the disk cache's SQLite index, which
eviction reads). Without a journal (tests' in-memory caches) the table holds every
block and its order is eviction's. It runs on the trio thread only.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Protocol

import trio

from amigofs.api.ranges import Version
from amigofs.cache.block_format import footprint

# Blocks read without room on disk, kept for the reads that follow (the kernel asks
# for a block in several requests).
MEMORY_BLOCKS = 64
# Idle blocks with files kept in the table (about 300 bytes each): a block dropped
# from it is found again on disk by the read that needs it (and checked again if its
# verdict, below, was dropped too).
IDLE_BLOCKS = 4096
# Verdicts of blocks checked in this mount and dropped from the table since (a dict
# entry each, about 150 bytes: 8 GiB of 256 KiB blocks): found again on disk, such a
# block is not read and checked again, only its header when its file is reopened, as
# for a block the table kept.
VERDICTS = 32768

Where = tuple[str, int]  # (a file's relative dir, block index)


class BlockState(enum.Enum):
    ABSENT = "absent"
    FETCHING = "fetching"
    UNCHECKED = "unchecked"
    CHECKING = "checking"
    READY = "ready"


class BlockFile:
    """A block's file in the cache. A new object each time a block is (re)stored, so
    that a check started on an earlier copy cannot vouch for this one."""

    __slots__ = ("advised", "crc", "length", "served", "verified")

    def __init__(self, length: int, crc: int | None, *, verified: bool, served: bool) -> None:
        self.length = length
        self.crc = crc  # None: not read yet (found by the scan at start)
        self.verified = verified
        # The kernel was asked to read it ahead (not verified yet): once is enough;
        # every window of read-ahead over it asked again until it was read.
        self.advised = False
        # False: fetched ahead (readahead, a walk) and not read yet. Eviction takes
        # such blocks last: in plain LRU order, a block fetched ahead is older than the
        # blocks read since, and would go before the reader gets to it.
        self.served = served


class Fetch:
    """A download of blocks [first, stop) that readers of those blocks wait on."""

    __slots__ = (
        "changed", "done", "error", "first", "first_landed", "landed", "started", "stop",
        "version",
    )  # fmt: skip

    def __init__(self, first: int, stop: int) -> None:
        self.first, self.stop = first, stop
        # This download's progress (its speed; what is left of it to get into memory
        # if the disk fills), not the blocks' state, which is each Block's.
        self.landed: set[int] = set()
        self.done = False
        self.changed = trio.Event()  # set (and replaced) as blocks land and at the end
        self.error: Exception | None = None
        self.started = trio.current_time()
        self.first_landed: tuple[float, int] | None = None  # when, and how many blocks
        # The version of the file its blocks are of: the store's, or (not known yet)
        # as the fetcher says from the first answer (validator None: unknown to it, or
        # the server sends none).
        self.version = Version()

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class Block:
    """One block's state (see the module's docstring)."""

    __slots__ = ("checking", "fetch", "file", "memory", "pins")

    def __init__(self) -> None:
        self.file: BlockFile | None = None
        self.fetch: Fetch | None = None
        self.checking: trio.Event | None = None  # set when the check in a thread ends
        self.memory: bytes | None = None
        self.pins = 0

    @property
    def state(self) -> BlockState:
        if self.memory is not None or (self.file is not None and self.file.verified):
            return BlockState.READY
        if self.checking is not None:
            return BlockState.CHECKING
        if self.file is not None:
            return BlockState.UNCHECKED
        if self.fetch is not None:
            return BlockState.FETCHING
        return BlockState.ABSENT

    def idle(self) -> bool:
        return (
            self.file is None
            and self.fetch is None
            and self.checking is None
            and self.memory is None
            and self.pins == 0
        )


class BlockJournal(Protocol):
    """Where what the block files take and their use order persist (`block_index`)."""

    def stored(self, where: Where, nbytes: int, *, ahead: bool) -> None: ...
    def found(self, where: Where, nbytes: int) -> None: ...
    def lost(self, where: Where) -> None: ...
    def served(self, where: Where) -> bool:
        """Held in memory; whether what is held is to be written now."""

    def due(self) -> bool: ...
    def flush(self) -> int:
        """Writes what it was told; the bytes of every block file it counts."""


class BlockTable:
    """The state of the blocks in use, and of recently used ones (see the module's
    docstring)."""

    def __init__(self, memory_blocks: int = MEMORY_BLOCKS, idle_blocks: int | None = None) -> None:
        # Least recently used first (of blocks with a file).
        self._blocks: OrderedDict[Where, Block] = OrderedDict()
        self._memory: OrderedDict[Where, None] = OrderedDict()  # blocks held in memory, LRU
        self._memory_blocks = memory_blocks
        self._idle_blocks = IDLE_BLOCKS if idle_blocks is None else idle_blocks
        # Of checked blocks dropped as idle: (data length, crc), least recent first.
        self._verdicts: OrderedDict[Where, tuple[int, int]] = OrderedDict()
        self._find: Callable[[Where], int | None] | None = None
        self._discard: Callable[[Where], None] | None = None
        self._journal: BlockJournal | None = None
        self.file_bytes = 0  # what the blocks' files take on disk
        # A read has copied from the block's file: now the most recently used. (The
        # dict's own method without a journal: it is called for every block of every
        # read.)
        self.served: Callable[[Where], None] = self._blocks.move_to_end

    def attach(
        self,
        find: Callable[[Where], int | None],
        discard: Callable[[Where], None],
        journal: BlockJournal,
        file_bytes: int,
    ) -> None:
        """From now on, block files not in the table are found on disk with `find` (the
        data length of a sound-looking file, or None), and a file lost (evicted, found
        wrong, of an old version) is removed with `discard`, or it would be found again;
        the table keeps only the blocks in use and IDLE_BLOCKS idle ones, and `journal`
        counts the files (`file_bytes` so far) and keeps their use order."""
        self._find = find
        self._discard = discard
        self._journal = journal
        self.file_bytes = file_bytes
        self.served = self._served

    def __len__(self) -> int:
        return len(self._blocks)

    def _lookup(self, where: Where) -> Block | None:
        """The block's entry; one for a file found on disk if it has none."""
        block = self._blocks.get(where)
        if block is not None or self._find is None:
            return block
        length = self._find(where)
        if length is None:
            return None
        block = self._blocks[where] = Block()
        verdict = self._verdicts.pop(where, None)
        if verdict is not None and verdict[0] == length:
            # Checked in this mount, then dropped as idle: its header is checked when
            # its file is opened again (`BlockReader`), its bytes not again.
            block.file = BlockFile(length, verdict[1], verified=True, served=True)
        else:
            # Left by an earlier mount: checked before served.
            block.file = BlockFile(length, None, verified=False, served=True)
        journal = self._journal
        assert journal is not None
        journal.found(where, footprint(length))
        if journal.due():
            self.flush()
        self._bound()
        return block

    def get(self, where: Where) -> Block | None:
        return self._lookup(where)

    def loaded(self, where: Where) -> Block | None:
        """The block's entry if the table holds one (nothing looked for on disk)."""
        return self._blocks.get(where)

    def state(self, where: Where) -> BlockState:
        block = self._lookup(where)
        return BlockState.ABSENT if block is None else block.state

    def file(self, where: Where) -> BlockFile | None:
        block = self._lookup(where)
        return None if block is None else block.file

    def files_of(self, rel: str, first: int, stop: int) -> list[BlockFile] | None:
        """The files of blocks [first, stop), or None if one has none (a read's
        first step: one call, not one a block)."""
        lookup = self._lookup
        found = []
        for index in range(first, stop):
            block = lookup((rel, index))
            if block is None or block.file is None:
                return None
            found.append(block.file)
        return found

    def available(self, where: Where) -> bool:
        """On disk (checked, or to be checked by the read that serves it) or in memory."""
        block = self._lookup(where)
        return block is not None and (block.file is not None or block.memory is not None)

    def _entry(self, where: Where) -> Block:
        block = self._lookup(where)
        if block is None:
            block = self._blocks[where] = Block()
        return block

    def _served(self, where: Where) -> None:
        # On every block of every read: a touch held in memory, written with the
        # journal's next batch (`flush`), not a write of its own.
        blocks = self._blocks
        if where in blocks:  # else dropped as idle meanwhile: found again
            blocks.move_to_end(where)
        journal = self._journal
        assert journal is not None
        if journal.served(where):
            self.flush()

    def flush(self) -> None:
        """Has the journal write what it was told; its count of the files is the one."""
        if self._journal is not None:
            self.file_bytes = self._journal.flush()

    def _bound(self) -> None:
        """Drops the least recently used idle blocks with files beyond IDLE_BLOCKS (an
        eighth more at a time: the walk past the blocks in use is paid rarely)."""
        blocks = self._blocks
        if self._journal is None or len(blocks) <= self._idle_blocks:
            return
        excess = len(blocks) - self._idle_blocks + self._idle_blocks // 8
        drop: list[Where] = []
        for where, block in blocks.items():
            if len(drop) >= excess:
                break
            if (
                block.fetch is None
                and block.checking is None
                and block.memory is None
                and block.pins == 0
            ):
                drop.append(where)
        verdicts = self._verdicts
        for where in drop:
            file = blocks.pop(where).file
            if file is not None and file.verified and file.crc is not None:
                verdicts[where] = (file.length, file.crc)
        while len(verdicts) > VERDICTS:
            verdicts.popitem(last=False)

    def _tidy(self, where: Where, block: Block) -> None:
        if block.idle():
            del self._blocks[where]

    # --- files on disk -----------------------------------------------------------------

    def stored(self, where: Where, file: BlockFile) -> None:
        """A block's file is in place (landed now); it is the most recently used."""
        self._verdicts.pop(where, None)
        block = self._blocks.get(where)
        if block is None:
            block = self._blocks[where] = Block()
        if block.file is not None:
            self.file_bytes -= footprint(block.file.length)
        block.file = file
        self.file_bytes += footprint(file.length)
        self._blocks.move_to_end(where)
        if self._journal is not None:
            self._journal.stored(where, footprint(file.length), ahead=not file.served)
            if self._journal.due():
                self.flush()
            self._bound()

    def lost(self, where: Where) -> BlockFile | None:
        """A block's file is gone (evicted, or found wrong); what it was."""
        self._verdicts.pop(where, None)  # held or not: a file found again is checked
        block = self._blocks.get(where)
        if block is None or block.file is None:
            return None
        file, block.file = block.file, None
        self.file_bytes -= footprint(file.length)
        self._forget_file(where)
        self._tidy(where, block)
        return file

    def forget_verdicts(self) -> None:
        """The cache directory was made again: a file found in it is checked whole,
        whatever was checked in the old one."""
        self._verdicts.clear()

    def _forget_file(self, where: Where) -> None:
        self._verdicts.pop(where, None)
        if self._journal is not None:
            self._journal.lost(where)
        if self._discard is not None:
            self._discard(where)

    def evicted(self, where: Where, nbytes: int) -> None:
        """A block's file taking `nbytes`, held in the table or not, is to go."""
        if self.lost(where) is None:
            self.file_bytes -= nbytes
            self._forget_file(where)

    def files(self) -> Iterator[tuple[Where, BlockFile, bool]]:
        """(where, file, pinned) of every block with a file the table holds, least
        recently used first."""
        for where, block in self._blocks.items():
            if block.file is not None:
                yield where, block.file, block.pins > 0

    # --- pins ---------------------------------------------------------------------------

    def pin(self, rel: str, first: int, stop: int, delta: int) -> None:
        """Pins (delta 1) or unpins (-1) blocks a reader is waiting to copy out, those
        present and those yet to land: eviction passes them by."""
        for index in range(first, stop):
            where = (rel, index)
            block = self._entry(where)
            block.pins += delta
            if block.pins <= 0:
                block.pins = 0
                self._tidy(where, block)

    # --- fetching -----------------------------------------------------------------------

    def fetching(self, rel: str, fetch: Fetch) -> None:
        """A download of the fetch's blocks has started."""
        for index in range(fetch.first, fetch.stop):
            self._entry((rel, index)).fetch = fetch

    def fetch_of(self, where: Where) -> Fetch | None:
        block = self._blocks.get(where)
        return None if block is None else block.fetch

    def fetched(self, rel: str, fetch: Fetch) -> None:
        """The download has ended (its blocks landed, or it failed)."""
        for index in range(fetch.first, fetch.stop):
            where = (rel, index)
            block = self._blocks.get(where)
            if block is not None and block.fetch is fetch:
                block.fetch = None
                self._tidy(where, block)

    # --- checking files an earlier mount left -------------------------------------------

    def checking(self, where: Where, done: trio.Event) -> None:
        self._entry(where).checking = done

    def check_of(self, where: Where) -> trio.Event | None:
        block = self._blocks.get(where)
        return None if block is None else block.checking

    def checked(self, where: Where) -> None:
        block = self._blocks.get(where)
        if block is not None:
            block.checking = None
            self._tidy(where, block)

    # --- blocks held in memory (no room on disk) ----------------------------------------

    def hold(self, where: Where, data: bytes) -> None:
        self._entry(where).memory = data
        self._memory[where] = None
        self._memory.move_to_end(where)
        while len(self._memory) > self._memory_blocks:
            self._drop_memory(self._memory.popitem(last=False)[0])

    def memory_of(self, where: Where) -> bytes | None:
        block = self._blocks.get(where)
        if block is None or block.memory is None:
            return None
        self._memory.move_to_end(where)
        return block.memory

    @property
    def holds_memory(self) -> bool:
        return bool(self._memory)

    def release_memory(self, rel: str) -> None:
        """Drops the blocks of a file held in memory (its last reader has gone)."""
        for where in [w for w in self._memory if w[0] == rel]:
            del self._memory[where]
            self._drop_memory(where)

    def _drop_memory(self, where: Where) -> None:
        block = self._blocks.get(where)
        if block is not None:
            block.memory = None
            self._tidy(where, block)
