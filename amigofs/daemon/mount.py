"""Running a mount: wiring the layers together, signals, and unmounting on the way out.

It takes the user's settings as the command resolved them (amigofs.config.Settings,
the one place their defaults are written) and adds only what it decides itself."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pyfuse3
import trio

from amigofs.api.client import ClientConfig, PlatformClient, RetryPolicy
from amigofs.api.secret import ApiKey
from amigofs.cache.cache_dir import UnsafeCacheDir
from amigofs.cache.disk_cache import CacheInUse, DiskCache
from amigofs.cache.index import CallIndex
from amigofs.cache.meta import MetaStore
from amigofs.cache.store import DEFAULT_BLOCK_SIZE, BlockStore
from amigofs.cache.worker import FetchWorker, WorkerConfig
from amigofs.config import Settings
from amigofs.daemon.control import MountCounters
from amigofs.daemon.fuse_adapter import AmigoOperations
from amigofs.daemon.mount_table import mount_device, mounted_at
from amigofs.daemon.notify import Notifier
from amigofs.fs.attributes import InodeT
from amigofs.fs.namespace import Namespace, NamespaceConfig
from amigofs.fs.records import RecordingSource
from amigofs.logs import LogFileError, child_environment, log_to_file

log = logging.getLogger(__name__)


class MountRefused(Exception):
    """The mount cannot start (its cache directory is another mount's, or unsafe); the
    message says why in one line."""


# What the mount decides itself, not the user. Others are their own layer's: the block
# size the store's (DEFAULT_BLOCK_SIZE), the connections the client's
# (ClientConfig.max_connections), the share of its disk the cache leaves free the disk
# cache's (min_free_ratio).
# File operations served at once: a stuck one must not hold up the rest.
FUSE_TASKS = 64
# Call records kept in memory (metadata.json, sizes, links: some 5 KB each, 2.5 MB in
# all); more are read again from the disk (MetaStore, no request), so memory does not
# grow with calls looked up (issue 21: within 10 MB, with the MetaStore's page cache and
# what the heap keeps). Room for the most loaded ahead of a walk (records_in_flight, at
# most 256) and the calls a program has open.
MAX_RECORDS = 512


def _where(settings: Settings) -> tuple[Path, Path]:
    """The mount point and the cache directory, which the command has resolved."""
    if settings.mountpoint is None or settings.cache_dir is None:
        raise ValueError("a mount needs its mount point and cache directory resolved")
    return settings.mountpoint, settings.cache_dir


def fuse_options(settings: Settings) -> set[str]:
    chosen = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    # auto_unmount: fusermount3 removes the mount even if this process is killed.
    chosen |= {"fsname=amigofs", "subtype=amigofs", "ro", "noatime", "auto_unmount"}
    if settings.allow_other:
        chosen.add("allow_other")
    return chosen


async def _widen_kernel_readahead(target: str, size: int) -> None:
    """Widens the kernel's readahead for this mount, which sets the size of its read
    requests: 1M instead of 128K is a quarter of the round trips through the FUSE loop
    for a sequential reader, and a re-read from the disk cache ran ~1.5x faster here.
    Only root may write it; others keep the kernel's window."""
    if size <= 0:
        return
    # The kernel clamps the window to what the FUSE handshake agreed, so it is set
    # once the handshake is over: a statfs of our own mount waits for exactly that
    # (in a thread, as this loop is the one that answers it).
    with trio.move_on_after(HANDSHAKE_SECONDS):
        await trio.to_thread.run_sync(os.statvfs, target, abandon_on_cancel=True)
    device = mount_device(target)
    if device is None:
        return
    path = f"/sys/class/bdi/{device}/read_ahead_kb"
    try:
        await trio.Path(path).write_text(str(max(4, size >> 10)), encoding="ascii")
    except OSError as exc:
        log.info("kernel readahead left at the default: cannot write %s: %s", path, exc.strerror)
    else:
        log.debug("kernel readahead set to %d KiB", size >> 10)


def _start_unmount_guard(target: str) -> None:
    """Starts the process that removes the mount should this one be killed
    (see amigofs.daemon.unmount_guard). Its own session: a Ctrl-C meant for the
    mount must not end the guard first. It exits when this process does."""
    subprocess.Popen(
        [sys.executable, "-m", "amigofs.daemon.unmount_guard", str(os.getpid()), target],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
        env=child_environment(),
    )


# The mount's connections to the API beside those of the records loaded ahead of a
# walk (settings.records_in_flight), so that a reader's requests never queue behind
# those; the fetch worker's downloads have as many of their own.
READER_CONNECTIONS = 16
# Call records loaded at once for readers, beside the records_in_flight loaded ahead
# of a walk: a reader's own call is not held up behind those.
READER_RECORD_LOADS = 8
# The network's own deadline ends a little before the file operation's (the adapter's,
# settings.timeout), so that a failure reaches the program, and the log, with its
# reason (connection refused, 503) rather than as a bare timeout.
NETWORK_SHARE_OF_TIMEOUT = 0.8
# The longest a failure is remembered, so that a burst of lookups asks the server once.
FAILURE_MEMORY_SECONDS = 2.0


def client_config(settings: Settings) -> ClientConfig:
    """The API client's settings: the mount's deadline, shared out."""
    return ClientConfig(
        base_url=settings.base_url,
        max_connections=READER_CONNECTIONS + settings.records_in_flight,
        # A stalled connection must be given up early enough to retry within
        # the deadline, not at the deadline.
        read_timeout=min(10.0, settings.timeout / 3),
        connect_timeout=min(10.0, settings.timeout / 3),
        retry=RetryPolicy(deadline=NETWORK_SHARE_OF_TIMEOUT * settings.timeout),
    )


def worker_config(client: ClientConfig, cache_dir: Path) -> WorkerConfig:
    """The fetch worker's settings: the client's, in the worker's own process."""
    return WorkerConfig(
        base_url=client.base_url,
        max_connections=READER_CONNECTIONS,
        connect_timeout=client.connect_timeout,
        read_timeout=client.read_timeout,
        deadline=client.retry.deadline,
        cache_dir=str(cache_dir),
    )


def namespace_config(
    settings: Settings,
    *,
    identity: str,
    max_readahead: int,
    control: Callable[[], bytes] | None,
    walk_room: Callable[[], int] | None,
) -> NamespaceConfig:
    """The tree's settings: the user's, and what the mount derives; every field named."""
    return NamespaceConfig(
        workspaces=settings.workspaces,
        listing_ttl=settings.listing_ttl,
        negative_ttl=settings.negative_ttl,
        max_records=MAX_RECORDS,
        records_in_flight=settings.records_in_flight,
        max_readahead=max_readahead,
        failure_memory=min(FAILURE_MEMORY_SECONDS, settings.timeout / 3),
        control=control,
        views=True,
        timezone=settings.timezone,
        identity=identity,
        walk_room=walk_room,
    )


async def serve(settings: Settings, api_key: ApiKey) -> None:
    """Mounts, serves until unmounted or signalled, and always unmounts."""
    mountpoint, cache_dir = _where(settings)
    # Whatever this process makes is its user's alone (the cache sets its modes too).
    os.umask(0o077)
    client_settings = client_config(settings)
    disk = DiskCache(
        cache_dir,
        max_bytes=settings.cache_size,
        block_size=DEFAULT_BLOCK_SIZE,
        min_free_bytes=settings.cache_min_free,
        owner=f"mounted at {mountpoint}",
    )
    try:
        await trio.to_thread.run_sync(disk.open)  # first: it takes the directory's lock
        meta = MetaStore(cache_dir)
        # The records' store takes its share of --cache-size, and gives some back when
        # evicting blocks is not enough.
        disk.add_tenant(meta)
    except (CacheInUse, UnsafeCacheDir) as exc:
        disk.close()
        raise MountRefused(str(exc)) from None
    # Only now, the cache directory ours: a mount refused above logs nothing into the
    # log of the mount that holds it.
    log_file = None
    if settings.log_file is not None:
        try:
            log_file = log_to_file(settings.log_file)
        except LogFileError as exc:
            disk.close()
            meta.close()
            raise MountRefused(str(exc)) from None
    index = CallIndex(cache_dir)
    await trio.to_thread.run_sync(index.open)
    # Its pages are checked while the mount serves: not a start that grows with the calls.
    index.check_in_background()
    worker = FetchWorker(worker_config(client_settings, cache_dir), api_key)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(PlatformClient(client_settings, api_key))
        stack.push_async_callback(worker.aclose)
        stack.callback(disk.close)
        stack.callback(meta.close)
        stack.callback(index.close)
        nursery = await stack.enter_async_context(trio.open_nursery())
        await worker.start(nursery)
        store = BlockStore(disk, worker, nursery, client=client, deadline=settings.timeout)
        source = RecordingSource(
            client,
            store,
            meta,
            concurrency=READER_RECORD_LOADS + settings.records_in_flight,
            call_wav=settings.call_wav,
            nursery=nursery,
        )
        source.access.on_revoked = _forget_kernel_entries
        source.on_stale_pages = lambda inodes: nursery.start_soon(_drop_kernel_pages, inodes)
        namespace = Namespace(
            client,
            source,
            nursery,
            namespace_config(
                settings,
                identity=api_key.identity(settings.base_url),
                # No window wider than what the store lets be fetched ahead.
                max_readahead=store.max_prefetch_bytes,
                control=lambda: counters.render(),
                # A quarter of what the cache may hold, as for readahead: together they
                # leave half of it to what readers have been served.
                walk_room=lambda: disk.block_budget() // 4,
            ),
            meta,
            index=index,
        )
        operations = AmigoOperations(
            namespace,
            handler_timeout=settings.timeout,
            usage=lambda: (disk.max_bytes, disk.used_bytes),
        )
        counters = MountCounters(str(mountpoint), settings.base_url, client, worker, store, disk)
        notifier = Notifier()
        # Resolved before it is ours to serve: later, a stat of it would wait on us.
        target = str(await trio.Path(mountpoint).resolve())
        pyfuse3.init(operations, str(mountpoint), fuse_options(settings))
        if log_file is not None:
            # Mounted: whoever started us has read what we had to say until now (a
            # daemon's parent); a traceback or libfuse's own messages go to the log.
            # The guard, started next, writes there too.
            log_file.take_stderr()
        _start_unmount_guard(target)
        try:
            nursery.start_soon(_handle_signals, namespace, notifier)
            nursery.start_soon(_report, target, counters, notifier)
            nursery.start_soon(_widen_kernel_readahead, target, settings.kernel_readahead)
            log.info("mounted %s at %s", settings.base_url, mountpoint)
            await pyfuse3.main(min_tasks=2, max_tasks=FUSE_TASKS)
        finally:
            notifier.stopping(f"unmounting {mountpoint}")
            pyfuse3.close(unmount=True)
            # Records saved in the last batch window: a SIGTERM right after the unmount
            # (as a service manager sends) must not lose them.
            meta.flush()
            log.info("unmounted %s", mountpoint)
            nursery.cancel_scope.cancel()


def _forget_kernel_entries(workspace_id: str) -> None:
    """Drops the kernel's cached entry of a workspace, and with it those below it, so
    that the next look at any of them asks the mount (which now refuses it)."""
    try:
        pyfuse3.invalidate_entry_async(pyfuse3.ROOT_INODE, workspace_id.encode())
    except OSError as exc:  # not cached: nothing to drop
        log.debug("%s: kernel entry not dropped: %s", workspace_id, exc)


async def _drop_kernel_pages(inodes: set[InodeT]) -> None:
    """Drops the kernel's cached pages of files replaced on the server (opened with
    keep_cache), so that an open from now on reads the new version. In a thread: the
    kernel waits for reads in flight on those pages, which this thread answers."""
    for inode in inodes:
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, False)
        except OSError as exc:  # not cached: nothing to drop
            log.debug("inode %d: kernel pages not dropped: %s", inode, exc)


STATUS_INTERVAL = 10.0
HANDSHAKE_SECONDS = 30.0


async def _report(mountpoint: str, counters: MountCounters, notifier: Notifier) -> None:
    """READY=1 once the mount shows in /proc/mounts, then a status line now and then."""
    while True:
        # pyfuse3.init has mounted already; this says so to whoever watches /proc/mounts.
        if mounted_at(mountpoint):
            break
        await trio.sleep(0.01)
    notifier.ready(f"serving {counters.base_url} at {mountpoint}")
    if not notifier.enabled:
        return
    while True:
        await trio.sleep(STATUS_INTERVAL)
        doc = counters.document()
        notifier.status(
            f"serving {counters.base_url} at {mountpoint}: "
            f"{sum(doc['requests'].values())} requests, "
            f"{doc['bytes_fetched'] >> 20} MiB fetched, {doc['errors']} errors, "
            f"cache {doc['cache']['used_bytes'] >> 20} MiB"
        )


# How long the first SIGTERM/SIGINT may take before the log says what it waits on.
STUCK_SECONDS = 2.0


def _exit_at_once(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT once the signal receiver below is closed (the mount on its way
    down): exit now, with the status a second signal has, not killed by the signal."""
    os._exit(1)


async def _handle_signals(namespace: Namespace, notifier: Notifier) -> None:
    # What the receiver puts back when it closes, while the mount is torn down.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _exit_at_once)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        first: signal.Signals | None = None
        told = False
        while True:
            with trio.move_on_after(STUCK_SECONDS if first is not None and not told else math.inf):
                signum = int(await signals.__anext__())
                if signum == signal.SIGHUP:
                    log.info(
                        "SIGHUP: listings dropped; asking the API again, new calls show as it answers"
                    )
                    namespace.drop_listings()
                elif first is None:
                    first = signal.Signals(signum)
                    log.info("%s: unmounting", first.name)
                    notifier.stopping(f"{first.name}: unmounting")
                    pyfuse3.terminate()
                else:
                    # A second signal while a handler is stuck: leave now; the kernel
                    # drops the mount when /dev/fuse closes with the process.
                    log.warning("%s again: exiting at once", signal.Signals(signum).name)
                    os._exit(1)
                continue
            # Still here: a file operation is waiting on the network and unmounting
            # waits for it; say so, and how not to wait.
            told = True
            assert first is not None
            log.warning(
                "%s: still unmounting after %.0f s: waiting for file operations in progress "
                "(each gives up within --timeout); to exit at once, send the signal again "
                "(kill -%s %d, or Ctrl-C again)",
                first.name,
                STUCK_SECONDS,
                first.name.removeprefix("SIG"),
                os.getpid(),
            )
