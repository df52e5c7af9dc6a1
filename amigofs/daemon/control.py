"""What a running mount reports about itself, and `amigofs stats`.

The mount serves its numbers as a hidden file in its root, MOUNT/.amigofs-stats
(JSON, mode 0400, generated when opened, never listed by readdir, so find and
rsync do not see it). Only the user who mounted can read it: the kernel refuses
everyone else unless allow_other, and then the file's mode does.
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amigofs.api.client import NO_ANSWER, PlatformClient
from amigofs.cache.disk_cache import DiskCache
from amigofs.cache.store import BlockStore
from amigofs.cache.worker import FetchWorker
from amigofs.fs.namespace import CONTROL_NAME

# 2: the cache's counters named for what they count (reads ready or waited, blocks
# fetched, verified, damaged, evicted), where 1 had memory/disk "hits".
VERSION = 2


class NotAMount(Exception):
    """The path is not the root of a running amigofs mount (or not readable to us)."""


@dataclass(slots=True)
class MountCounters:
    """The live objects of one mount whose counters make up its stats."""

    mountpoint: str
    base_url: str
    client: PlatformClient
    worker: FetchWorker
    store: BlockStore
    disk: DiskCache
    started: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        # Listing and metadata requests are the mount's own; downloads are made by its
        # fetch worker, which reports them with each reply.
        api = self.client.stats.plus(self.worker.stats)
        store = self.store.stats
        return {
            "version": VERSION,
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "base_url": self.base_url,
            "uptime_seconds": round(time.time() - self.started, 3),
            "requests": dict(sorted(api.requests.items())),  # counted as they start
            # {operation: {HTTP status, "no_answer" or "cancelled": count}}, counted as
            # they end (see ClientStats.finished).
            "requests_by_status": api.by_status(),
            "retries": api.retries,
            "errors": api.errors,
            "bytes_fetched": api.bytes_received,
            "bytes_in_flight": self.disk.reserved_bytes,
            "bytes_served": store.served_bytes,  # what reads of stored files returned
            "cache": {
                # Reads whose blocks were all on disk and checked: served at once.
                "reads_ready": store.read_hits,
                # Reads that waited for a block: its download, or its first check (the
                # CRC of a block an earlier mount left), which costs no request.
                "reads_waited": store.read_misses,
                "blocks_fetched": store.fetched_blocks,
                "bytes_fetched": store.fetched_bytes,
                "fetch_errors": store.fetch_errors,
                "blocks_verified": store.verified_blocks,
                "blocks_damaged": store.damaged_blocks,
                "blocks_evicted": self.disk.evicted_blocks,
                "bytes_uncached": store.uncached_bytes,  # served from memory: no room on disk
                "used_bytes": self.disk.used_bytes,
                "max_bytes": self.disk.max_bytes,
                "dir": str(self.disk.root),
            },
        }

    def render(self) -> bytes:
        return (json.dumps(self.document(), indent=2) + "\n").encode()


def read_stats(mountpoint: Path) -> dict[str, Any]:
    """The stats of the mount at `mountpoint`, read from its hidden control file."""
    from amigofs.daemon.mount_table import is_mounted

    if not is_mounted(mountpoint):
        raise NotAMount(f"{mountpoint} is not a mount point")
    try:
        with open(mountpoint / CONTROL_NAME, "rb") as file:
            document = json.loads(file.read())
    except FileNotFoundError:
        raise NotAMount(f"{mountpoint} is not an amigofs mount") from None
    except PermissionError:
        raise NotAMount(f"{mountpoint}: only the user who mounted it can read its stats") from None
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED):
            raise NotAMount(
                f"{mountpoint} is a dead mount: the daemon that served it is gone; "
                f"remove it with: fusermount3 -u -z {mountpoint}"
            ) from None
        raise NotAMount(f"{mountpoint}: cannot read its stats: {exc.strerror}") from None
    except ValueError as exc:
        raise NotAMount(f"{mountpoint}: cannot read its stats: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise NotAMount(f"{mountpoint}: stats in an unknown format")
    return document


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def format_stats(document: dict[str, Any]) -> str:
    cache = document["cache"]
    requests = document["requests"]
    by_status = document.get("requests_by_status", {})  # absent from a mount of before
    width = max([len(op) for op in requests] + [8])
    lines = [
        f"amigofs at {os.path.normpath(document['mountpoint'])} (pid {document['pid']}, "
        f"up {_duration(document['uptime_seconds'])}), serving {document['base_url']}",
        "requests:",
        *(
            f"  {op:<{width}}  {count}{_statuses(by_status.get(op, {}))}"
            for op, count in requests.items()
        ),
        f"  {'total':<{width}}  {sum(requests.values())}",
        f"retries:          {document['retries']}",
        f"errors:           {document['errors']} (requests that failed after their retries)",
        f"bytes fetched:    {document['bytes_fetched']} ({format_bytes(document['bytes_fetched'])})",
        f"bytes in flight:  {document['bytes_in_flight']}",
        f"reads:            {cache['reads_ready']} served at once from the disk cache, "
        f"{cache['reads_waited']} waited for a block (a download or its first check)",
        f"blocks:           {cache['blocks_fetched']} fetched ({cache['fetch_errors']} failed), "
        f"{cache['blocks_verified']} checked on first use, {cache['blocks_damaged']} damaged, "
        f"{cache['blocks_evicted']} evicted",
        f"not cached:       {format_bytes(cache['bytes_uncached'])} served from memory "
        "(no room on disk)",
        f"cache size:       {format_bytes(cache['used_bytes'])} of "
        f"{format_bytes(cache['max_bytes'])} in {cache['dir']}",
    ]
    return "\n".join(lines)


def _statuses(counts: dict[str, int]) -> str:
    """What follows an operation's count: its requests by status, as in
    `  (200: 5, 404: 1, no answer: 2)`; nothing when none has ended yet."""
    if not counts:
        return ""
    named = (
        f"{'no answer' if status == NO_ANSWER else status}: {n}" for status, n in counts.items()
    )
    return "  (" + ", ".join(named) + ")"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
