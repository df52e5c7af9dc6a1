"""A mount's stats in the Prometheus text exposition format (version 0.0.4), for
`amigofs stats --prometheus`; node_exporter's textfile collector reads the output
from a file (see systemd/amigofs-metrics@.*).

Every sample carries the mount point as a label, so that the files of several mounts
can sit in one collector directory without their series colliding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

PREFIX = "amigofs_"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    # Whole numbers in full: %g would round a 4 GiB bound to 4.29497e+09.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Writer:
    def __init__(self, common: dict[str, str]) -> None:
        self.common = common
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterator[tuple[dict[str, str], float]]
    ) -> None:
        # In the text format the family's name is the samples' own: a counter's with _total.
        sample_name = PREFIX + name + ("_total" if kind == "counter" else "")
        self.lines.append(f"# HELP {sample_name} {help_text}")
        self.lines.append(f"# TYPE {sample_name} {kind}")
        for extra, value in samples:
            self.lines.append(f"{sample_name}{_labels({**self.common, **extra})} {_number(value)}")

    def one(
        self,
        name: str,
        kind: str,
        help_text: str,
        value: float,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.family(name, kind, help_text, iter([(labels or {}, value)]))


def render(document: dict[str, Any]) -> str:
    """The exposition text of one mount's stats document (amigofs.daemon.control)."""
    cache = document["cache"]
    out = _Writer({"mountpoint": os.path.normpath(document["mountpoint"])})
    out.one(
        "info",
        "gauge",
        "The mount: 1, labelled with the server it serves and its daemon's pid.",
        1,
        {"base_url": document["base_url"], "pid": str(document["pid"])},
    )
    out.one(
        "uptime_seconds", "gauge", "Seconds since the mount started.", document["uptime_seconds"]
    )
    out.family(
        "requests",
        "counter",
        "Requests made to the Platform API, by operation (retries included).",
        iter(({"operation": op}, n) for op, n in sorted(document["requests"].items())),
    )
    out.family(
        "requests_finished",
        "counter",
        "Requests made to the Platform API that have ended, by operation and HTTP status; "
        'status "no_answer": none came (connection refused, timeout), "cancelled": given up '
        "on before it came (a request beside it failed). Counted as they end, where "
        "amigofs_requests_total counts them as they start.",
        iter(
            ({"operation": op, "status": status}, n)
            for op, statuses in sorted(document.get("requests_by_status", {}).items())
            for status, n in sorted(statuses.items())
        ),
    )
    out.one("retries", "counter", "Requests that were retried.", document["retries"])
    out.one(
        "errors", "counter", "API operations that failed after their retries.", document["errors"]
    )
    out.one(
        "fetched_bytes",
        "counter",
        "Body bytes received from the API.",
        document["bytes_fetched"],
    )
    out.one(
        "in_flight_bytes", "gauge", "Bytes of downloads under way.", document["bytes_in_flight"]
    )
    out.one(
        "served_bytes",
        "counter",
        "Bytes of audio and metadata.json returned to readers (from the cache or not).",
        document.get("bytes_served", 0),
    )
    out.family(
        "cache_reads",
        "counter",
        "Reads of audio and metadata.json: ready (served at once from the disk cache) or "
        "waited (for a download or the first check of a block on disk).",
        iter(
            [
                ({"result": "ready"}, cache["reads_ready"]),
                ({"result": "waited"}, cache["reads_waited"]),
            ]
        ),
    )
    out.family(
        "cache_blocks",
        "counter",
        "Blocks of the disk cache by what happened to them: fetched, fetch_failed, "
        "verified (left on disk and checked on first use), damaged, evicted.",
        iter(
            [
                ({"event": "fetched"}, cache["blocks_fetched"]),
                ({"event": "fetch_failed"}, cache["fetch_errors"]),
                ({"event": "verified"}, cache["blocks_verified"]),
                ({"event": "damaged"}, cache["blocks_damaged"]),
                ({"event": "evicted"}, cache["blocks_evicted"]),
            ]
        ),
    )
    out.one(
        "cache_uncached_bytes",
        "counter",
        "Bytes served from memory without caching (no room on disk).",
        cache["bytes_uncached"],
    )
    out.one("cache_used_bytes", "gauge", "Bytes the disk cache takes on disk.", cache["used_bytes"])
    out.one(
        "cache_max_bytes", "gauge", "The disk cache's bound (--cache-size).", cache["max_bytes"]
    )
    return "\n".join(out.lines) + "\n"
