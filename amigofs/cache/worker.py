"""The fetch worker: a second process that downloads ranges into the disk cache.

The mount process serves FUSE reads; receiving HTTP bodies, checksumming and
writing blocks happen here, on the machine's other core, so fetching overlaps
with serving instead of taking turns with it under one GIL.

Protocol (newline-delimited JSON over a socketpair the mount process creates):
    mount -> worker, first line:  {"protocol", "base_url", "api_key", "max_connections",
                                   "connect_timeout", "read_timeout", "deadline", "cache_dir"}
    worker -> mount, first line:  {"ready": true, "protocol"}
    mount -> worker:              {"id", "target", "filename", "start", "end", "total",
                                   "block_size", "dir", "known", "validator", "versioned"}
                                | {"cancel": id}
    worker -> mount, as blocks land: {"id", "blocks": [[index, length, crc32c], ...],
                                      "validator", "stats"}
    (a few blocks a line: at most one line per ANNOUNCE_EVERY while they keep landing)
    worker -> mount, at the end:  {"id", "blocks", "validator", "done": true, "stats"}
                                | {"id", "error": <class name>, "message", "status",
                                   "retry_after", "restore_eta", "validator", "stats"}
    (the last line of a job that succeeded carries the blocks stored since its last
    "blocks" line: one line a job less for both processes to wake up for)
    ("known", "validator": the version of the file the job is of, if the mount knows it
    (its ETag, else Last-Modified; null: the server sends neither); a job's blocks are
    of one version, which each "blocks" line names and their headers' digest holds; an
    answer of another version than the one known is the error VersionChanged; "versioned"
    false: a file the mount does not track a version of, whose blocks carry no version.)
    ("stats": the worker's requests, retries, errors and bytes since its last reply)
Every block stored is announced before the job's last line, a cancelled job's too,
so the mount indexes every block written. A job has no deadline of its own: the
client gives up on a download that stops delivering bytes, not on a slow one.
The key travels over the socket: never in argv or the environment of the worker.
If the worker dies, the mount starts another and hands it the jobs in flight.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import dataclasses
import datetime as dt
import json
import logging
import math
import mmap
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from amigofs.api import errors
from amigofs.api.client import ClientConfig, ClientStats, PlatformClient, RetryPolicy
from amigofs.api.models import DownloadPath
from amigofs.api.ranges import Version
from amigofs.api.secret import ApiKey
from amigofs.cache.block_writer import BlockWriter, CacheFull
from amigofs.cache.seams import FetchJob, Landed
from amigofs.concurrency import first_error
from amigofs.logs import child_environment, child_stderr, setup_logging

# By its module's name: the worker process runs it as `python -m`, where
# __name__ is "__main__".
log = logging.getLogger("amigofs.cache.worker")

MAX_LINE = 1 << 20
WORKER_START_SECONDS = 30.0
PROTOCOL = 4
# How often a job is handed to a new worker after the one running it died.
WORKER_RESTARTS = 2
# Download buffers kept for the next jobs (at most as many as run at once, usually).
POOL_BUFFERS = 32
# At most one "blocks" line per job this often (seconds) while blocks keep landing;
# a block landing after a quiet spell is announced at once.
ANNOUNCE_EVERY = 0.002


@dataclass(slots=True, frozen=True)
class WorkerConfig:
    base_url: str
    max_connections: int
    connect_timeout: float
    read_timeout: float
    deadline: float
    cache_dir: str


class _Lines:
    """Reads newline-delimited JSON from a trio stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> dict[str, Any] | None:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ValueError("protocol message is not an object")
                return value
            if len(self._buffer) > MAX_LINE:
                raise ValueError("protocol line too long")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _error_message(job_id: int, exc: BaseException) -> dict[str, Any]:
    message: dict[str, Any] = {"id": job_id, "error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, errors.ApiError):
        message["status"] = exc.status
    if isinstance(exc, errors.RateLimited | errors.Archived):
        message["retry_after"] = exc.retry_after
    if isinstance(exc, errors.Archived) and exc.restore_eta is not None:
        message["restore_eta"] = exc.restore_eta.isoformat()
    if isinstance(exc, errors.VersionChanged):
        message["validator"] = exc.validator
    return message


def error_from_message(message: dict[str, Any]) -> Exception:
    """Rebuilds in the mount process the exception the worker met."""
    name = str(message.get("error", ""))
    text = str(message.get("message", "fetch failed"))
    status = int(message.get("status") or 0)
    retry_after = message.get("retry_after")
    if name == "CacheFull":
        return CacheFull(text)
    cls = getattr(errors, name, None)
    if cls is errors.Archived:
        eta = message.get("restore_eta")
        return errors.Archived(
            text,
            restore_eta=dt.datetime.fromisoformat(eta) if isinstance(eta, str) else None,
            retry_after=retry_after,
        )
    if cls is errors.RateLimited:
        return errors.RateLimited(text, retry_after=retry_after)
    if cls is errors.VersionChanged:
        validator = message.get("validator")
        return errors.VersionChanged(
            text, validator=validator if isinstance(validator, str) else None
        )
    if isinstance(cls, type) and issubclass(cls, errors.ApiError):
        return cls(text, status=status)
    if isinstance(cls, type) and issubclass(cls, errors.AmigoError):
        return cls(text)
    return errors.TransportError(f"fetch worker: {name}: {text}")


# --- the worker process ----------------------------------------------------------


async def _download_and_store(
    client: PlatformClient,
    path: DownloadPath,
    start: int,
    end: int,
    lend_block: Callable[[], contextlib.AbstractContextManager[memoryview]],
    total: int,
    open_writer: Callable[[str | None], BlockWriter],
    announce: Callable[[list[tuple[int, int, int]]], Awaitable[None]],
    version: Version,
) -> list[tuple[int, int, int]]:
    """Downloads bytes [start, end) of `version` of the file, storing each block (of
    the size of the buffer `lend_block` lends) as it fills and announcing it, so that
    a reader waits for its own block, not for the whole range. Every block stored is
    announced, whatever ends the download; the last ones of a download that succeeds
    are returned instead, for the job's last line. The writer is opened once the
    first answer has said which version the blocks are of; the buffer is lent once
    the first bytes arrive (a job waiting for a connection holds none)."""
    with contextlib.ExitStack() as files:
        writer: BlockWriter | None = None

        def write(at: int, data: memoryview) -> list[tuple[int, int, int]]:
            nonlocal writer
            if writer is None:
                writer = files.enter_context(open_writer(version.validator))
            return writer.write(at, data)

        def block() -> memoryview:
            return files.enter_context(lend_block())

        return await _download_blocks(
            client, path, start, end, block, total, write, announce, version
        )


class BlockSink:
    """Takes a download's body as it arrives into one block's buffer, and hands each
    block to `store` once it is whole (the last, shorter one on `flush`). The memory a
    job touches is that one block, reused, whatever the job's size: a buffer of the
    whole job (up to 32 MiB in flight per cold read) cost a page fault per page on its
    first use, ~0.6 CPU-s per GB where writing into memory already touched costs 0.05."""

    __slots__ = ("_block", "_filled", "_left", "_lend", "_store")

    def __init__(
        self, block: Callable[[], memoryview], size: int, store: Callable[[memoryview], None]
    ) -> None:
        self._lend = block  # asked for the buffer when the first bytes arrive
        self._block: memoryview | None = None
        self._filled = 0  # bytes of the block in hand
        self._left = size  # bytes of the download still to come
        self._store = store

    def __len__(self) -> int:
        return self._left

    def take(self, chunk: bytes | memoryview) -> None:
        self._left -= len(chunk)
        block = self._block
        if block is None:
            block = self._block = self._lend()
        size = len(block)
        with memoryview(chunk) as view:
            at = 0
            while at < len(view):
                n = min(len(view) - at, size - self._filled)
                block[self._filled : self._filled + n] = view[at : at + n]
                self._filled += n
                at += n
                if self._filled == size:
                    self._filled = 0
                    self._store(block)

    def flush(self) -> None:
        """Stores the block in hand: the download's last, shorter than a block."""
        if self._filled:
            assert self._block is not None
            filled, self._filled = self._filled, 0
            self._store(self._block[:filled])


async def _download_blocks(
    client: PlatformClient,
    path: DownloadPath,
    start: int,
    end: int,
    block: Callable[[], memoryview],
    total: int,
    write: Callable[[int, memoryview], list[tuple[int, int, int]]],
    announce: Callable[[list[tuple[int, int, int]]], Awaitable[None]],
    version: Version,
) -> list[tuple[int, int, int]]:
    stored = start  # where the next block to store starts
    landed = trio.Event()
    unannounced: list[tuple[int, int, int]] = []  # stored, not yet told to the mount
    announced_at = -math.inf

    def store(data: memoryview) -> None:
        nonlocal stored
        blocks = write(stored, data)  # CacheFull: nothing stored, nothing to announce
        stored += len(data)
        unannounced.extend(blocks)
        landed.set()

    async def announce_stored() -> None:
        nonlocal unannounced, announced_at
        if unannounced:
            blocks, unannounced = unannounced, []
            announced_at = trio.current_time()
            await announce(blocks)  # shielded: never lost to a cancellation

    async def announce_as_they_land() -> None:
        nonlocal landed
        while True:
            await landed.wait()
            landed = trio.Event()
            # One line per block cost both processes a wake-up, a JSON line and the
            # stats (a line every 0.25 ms on loopback): blocks landing faster than one
            # per ANNOUNCE_EVERY wait for the next line; one landing alone goes at once.
            await trio.sleep_until(announced_at + ANNOUNCE_EVERY)
            await announce_stored()

    sink = BlockSink(block, end - start, store)
    try:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(announce_as_they_land)
                await client.download_into(path, start, sink, total=total, version=version)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        sink.flush()
    except BaseException:
        # Whatever ends the download: every block stored is announced.
        await announce_stored()
        raise
    return unannounced  # stored, for the job's last line


class BufferPool:
    """Reuses the jobs' block buffers (BlockSink's): a fresh buffer per job costs page
    faults and zeroing, the worker's largest single cost once. A new one is an
    anonymous mapping, not a bytearray: the kernel's zero pages are touched only
    where a download writes, where bytearray(n) zeroes all n bytes first; every cold
    read starts a fresh worker. A job gets the smallest free buffer that holds it, of
    whatever size (a mount's block size is one; a page already touched costs no fault
    again)."""

    def __init__(self) -> None:
        self._free: list[mmap.mmap] = []  # by size, the smallest first

    def __len__(self) -> int:
        """Buffers kept for the next jobs."""
        return len(self._free)

    @contextlib.contextmanager
    def lend(self, size: int) -> Iterator[memoryview]:
        free = self._free
        at = next((i for i, buffer in enumerate(free) if len(buffer) >= size), None)
        if at is not None:
            # Of the buffers of that size, the one given back last: its pages were
            # touched most recently (the others may never have been).
            buffer = free.pop(bisect.bisect_right(free, len(free[at]), key=len) - 1)
        else:
            buffer = mmap.mmap(-1, 1 << max(size - 1, 1).bit_length())  # a power of two
        try:
            with memoryview(buffer) as view, view[:size] as window:
                yield window
        finally:
            bisect.insort(free, buffer, key=len)
            if len(free) > POOL_BUFFERS:
                free.pop(0).close()  # the smallest: the others hold any job it could


async def _serve(sock: socket.socket) -> None:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    lines = _Lines(stream)
    init = await lines.next()
    if init is None:
        return
    if init.pop("protocol", None) != PROTOCOL:
        # A worker of another version (an upgrade under a running mount): say so
        # and stop, rather than misread its jobs.
        await stream.send_all(_encode({"ready": False, "protocol": PROTOCOL}))
        return
    key = ApiKey(str(init.pop("api_key")))
    config = WorkerConfig(**init)
    client_config = ClientConfig(
        base_url=config.base_url,
        max_connections=config.max_connections,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retry=RetryPolicy(deadline=config.deadline),
    )
    send_lock = trio.Lock()
    buffers = BufferPool()
    jobs: dict[int, trio.CancelScope] = {}

    reported = ClientStats()

    async def reply(message: dict[str, Any]) -> None:
        nonlocal reported
        # Never cancelled half-way: a line cut short would garble the stream, and
        # the counts it carries would be lost.
        with trio.CancelScope(shield=True):
            async with send_lock:
                # What the client did since the last reply, for the mount's stats.
                message["stats"] = client.stats.since(reported).as_dict()
                reported = client.stats.copy()
                await stream.send_all(_encode(message))

    async def job(message: dict[str, Any]) -> None:
        job_id = int(message["id"])
        with trio.CancelScope() as scope:
            jobs[job_id] = scope
            try:
                start, end = int(message["start"]), int(message["end"])
                path = DownloadPath("", "", str(message["filename"]), str(message["target"]))
                total = int(message["total"])
                block_size = int(message["block_size"])
                directory = str(message["dir"])
                validator = message.get("validator")
                version = Version(
                    validator if isinstance(validator, str) else None, bool(message.get("known"))
                )
                last: list[tuple[int, int, int]] = []
                if start == end:  # the job asks only which version the file is now
                    # (its validator, if sent: the version its blocks were of, a hint)
                    version.validator = await client.current_version(path, version.validator)
                else:
                    last = await _download_and_store(
                        client, path, start, end, lambda: buffers.lend(block_size), total,
                        lambda found: BlockWriter(
                            config.cache_dir, directory, block_size,
                            found if message.get("versioned", True) else None,
                        ),
                        lambda blocks: reply(
                            {"id": job_id, "blocks": blocks, "validator": version.validator}
                        ),
                        version,
                    )  # fmt: skip
            except Exception as exc:
                await reply(_error_message(job_id, exc))
            else:
                last_line = {"id": job_id, "blocks": last, "validator": version.validator}
                await reply({**last_line, "done": True})
            finally:
                jobs.pop(job_id, None)
        if scope.cancelled_caught:
            await reply({"id": job_id, "error": "Cancelled", "message": "cancelled"})

    async with PlatformClient(client_config, key) as client, trio.open_nursery() as nursery:
        await stream.send_all(_encode({"ready": True, "protocol": PROTOCOL}))
        while True:
            message = await lines.next()
            if message is None:  # the mount process has gone: so do we
                nursery.cancel_scope.cancel()
                return
            if "cancel" in message:
                scope = jobs.get(int(message["cancel"]))
                if scope is not None:
                    scope.cancel()
                continue
            nursery.start_soon(job, message)


def steady_heap() -> bool:
    """Keeps the heap's freed memory for the next allocations. Every socket read and
    every body chunk is a fresh object of up to 1 MiB; with glibc's defaults such
    objects come from, and go back to, the system (mmap and munmap, or the heap's top
    trimmed with brk), and each first touch of their pages is a page fault: that
    was an eighth of the worker's CPU on a cold read. Says whether it could (not on
    a C library without glibc's mallopt)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 32 MiB, glibc's largest: anything smaller comes from the heap. mallopt says 1 if
    # it took the setting (musl's stub says 0).
    taken: bool = mallopt(m_mmap_threshold, 32 << 20) == 1
    return bool(mallopt(m_trim_threshold, 64 << 20) == 1) and taken


def main() -> None:
    fd = int(sys.argv[1])
    steady_heap()
    os.umask(0o077)
    # The mount's own setup at the mount's level (it sets AMIGOFS_LOG_LEVEL): its
    # lines read like the mount's, and --debug traces downloads too.
    setup_logging(os.environ.get("AMIGOFS_LOG_LEVEL", "warning"))
    # Ctrl-C in the terminal reaches the whole process group: the mount process
    # handles it, and this process ends when the mount closes its socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(trio.BrokenResourceError, ConnectionResetError):
        trio.run(_serve, sock)


# --- the mount process's side ---------------------------------------------------------


class _Pending:
    __slots__ = ("done", "error", "lost", "on_blocks", "version")

    def __init__(self, on_blocks: Callable[[list[Landed]], None] | None, version: Version) -> None:
        self.on_blocks = on_blocks
        self.version = version  # the job's: set from the first "blocks" line
        self.done = trio.Event()
        self.error: Exception | None = None
        self.lost = False  # the worker died before the job's last line


class FetchWorker:
    """Starts the worker process and hands it jobs; if it dies, starts another and
    hands that one the jobs in flight."""

    def __init__(self, config: WorkerConfig, api_key: ApiKey) -> None:
        self._config = config
        self._key = api_key
        self._process: trio.Process | None = None
        self._stream: trio.SocketStream | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._start_lock = trio.Lock()
        self._send_lock = trio.Lock()
        self.restarts = 0
        self._started = False
        self.stats = ClientStats()  # the worker's requests, as it reports them

    async def fetch(
        self,
        job: FetchJob,
        *,
        nursery: trio.Nursery,
        on_blocks: Callable[[list[Landed]], None] | None = None,
    ) -> None:
        """Downloads the job's range of a stored file into the disk cache, setting the
        job's version from the first answer if it was not known, telling `on_blocks`
        of each (index, length, crc32) stored; raises the API's error (or CacheFull)."""
        message: dict[str, Any] = {
            "target": job.target, "filename": job.filename, "start": job.start,
            "end": job.end, "total": job.total, "block_size": job.block_size,
            "dir": job.directory, "known": job.version.known, "validator": job.version.validator,
            "versioned": job.versioned,
        }  # fmt: skip
        log.debug("fetch %s [%d, %d)", job.filename, job.start, job.end)
        for _attempt in range(WORKER_RESTARTS + 1):
            # A job handed to a new worker asks for the version the first one found.
            message["known"], message["validator"] = job.version.known, job.version.validator
            stream = await self._ensure_started(nursery)
            self._next_id += 1
            job_id = message["id"] = self._next_id
            pending = self._pending[job_id] = _Pending(on_blocks, job.version)
            try:
                # A cancellation must not cut a line short: that would garble
                # every job after it.
                with trio.CancelScope(shield=True):
                    async with self._send_lock:
                        await stream.send_all(_encode(message))
                await pending.done.wait()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._pending.pop(job_id, None)
                pending.lost = True
            except trio.Cancelled:
                # The job goes on until the worker stops it: the blocks it stored
                # meanwhile are still announced, and indexed, by _receive.
                gone = (trio.BrokenResourceError, trio.ClosedResourceError)
                with trio.CancelScope(shield=True), contextlib.suppress(*gone):
                    async with self._send_lock:
                        await stream.send_all(_encode({"cancel": job_id}))
                raise
            if pending.lost:
                log.warning("the fetch worker died during a download; handing it to a new one")
                continue
            if pending.error is not None:
                raise pending.error
            return
        raise errors.TransportError("the fetch worker keeps dying")

    async def start(self, nursery: trio.Nursery) -> None:
        """Starts the worker now, so that the first read does not wait for it."""
        await self._ensure_started(nursery)

    async def _ensure_started(self, nursery: trio.Nursery) -> trio.SocketStream:
        if self._stream is not None:
            # Running: no lock to take on every fetch (a cold read makes hundreds);
            # the fetch's send is its checkpoint.
            return self._stream
        async with self._start_lock:
            if self._stream is not None:
                return self._stream
            parent, child = socket.socketpair()
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "amigofs.cache.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                # Its lines reach the mount's log through the mount (see amigofs.logs);
                # no module of the working directory is imported (it runs in /).
                stderr=child_stderr(),
                cwd="/",
                env=child_environment(),
            )
            child.close()
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent))
            init = {
                "protocol": PROTOCOL,
                "api_key": self._key.reveal(),
                **dataclasses.asdict(self._config),
            }
            await stream.send_all(_encode(init))
            lines = _Lines(stream)
            with trio.move_on_after(WORKER_START_SECONDS):
                ready = await lines.next()
            if not (isinstance(ready, dict) and ready.get("ready")):
                await stream.aclose()
                await _reap(process)
                raise errors.TransportError("the fetch worker did not start")
            if self._started:
                self.restarts += 1
            self._started = True
            self._process, self._stream = process, stream
            nursery.start_soon(self._receive, stream, lines, process)
            return stream

    async def _receive(
        self, stream: trio.SocketStream, lines: _Lines, process: trio.Process
    ) -> None:
        try:
            while (message := await lines.next()) is not None:
                self._count(message.get("stats"))
                pending = self._pending.get(int(message["id"]))
                if pending is None:
                    continue
                if "blocks" in message:
                    # Blocks stored so far: readers of those need not wait for the rest.
                    validator = message.get("validator")
                    pending.version.validator = validator if isinstance(validator, str) else None
                    pending.version.known = True
                    if pending.on_blocks is not None and message["blocks"]:
                        pending.on_blocks(
                            [(int(i), int(n), int(c)) for i, n, c in message["blocks"]]
                        )
                    if "done" not in message:
                        continue
                if "error" in message:
                    log.debug("fetch %s failed: %s", message["id"], message.get("message"))
                    pending.error = error_from_message(message)
                del self._pending[int(message["id"])]
                pending.done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            log.warning("fetch worker connection failed: %s", exc)
        finally:
            # This worker died (or we are stopping): its jobs go to the next one,
            # which the next fetch starts. Only this worker is reaped, never the
            # one that may have replaced it meanwhile.
            if self._stream is stream:
                self._stream = None
            with trio.CancelScope(shield=True):
                await stream.aclose()
            await _reap(process)
            if self._process is process:
                self._process = None  # reaped: aclose must not reap (and report) it again
            for job_id, pending in list(self._pending.items()):
                if not pending.done.is_set():
                    pending.lost = True
                    pending.done.set()
                    del self._pending[job_id]

    def _count(self, delta: object) -> None:
        if isinstance(delta, dict):
            self.stats.add(delta)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        process, self._process = self._process, None
        if process is not None:
            await _reap(process)


async def _reap(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if process.poll() is None:
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
            if process.poll() is None:
                process.kill()
                await process.wait()
        elif process.returncode:
            log.warning("fetch worker exited with status %d", process.returncode)


if __name__ == "__main__":
    main()
