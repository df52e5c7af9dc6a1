"""HTTP/2 against pooled HTTP/1.1, over the internet link profile with TLS (issue 13).

The mount's own client (amigofs.api.client.PlatformClient, with the transport of
amigofs.api.transport: the large-read backend, certificate checks on against the emulator's
certificate) is given, one run after the other on one emulator, either its HTTP/1.1 pool of
16 connections, warmed up first (16 requests at once open them all), or an HTTP/2 pool (httpx
`http2=True`, the h2 package: one connection, many streams), warmed up by one request. The
emulator (hypercorn) offers h2 and http/1.1 by ALPN; each answer's protocol is checked. Both
do, on a workspace of 100 calls (20 with --quick):

- the walk's small requests, as amigofs.fs.records loads call records: 8 calls at once, each
  its recording URLs and metadata at once, then its metadata file (16 requests in flight);
- ranged audio downloads as the fetch worker makes them: 1 MiB ranges of the outbound files,
  8 at once (store.PARALLEL_GETS), 32 MiB in all (8 with --quick);
- one download alone: the largest outbound file as one ranged GET.

The emulator caps each response at 3 MB/s (per response: an HTTP/2 stream gets the cap of a
whole HTTP/1.1 connection) under 24 MB/s shared by all. Figures: HTTP/2 time / HTTP/1.1 time
(below 1: HTTP/2 is faster), medians over the runs; the client's CPU time is kept too.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from amigofs.api.client import ClientConfig, PlatformClient
from amigofs.api.models import DownloadPath
from amigofs.api.secret import ApiKey
from amigofs.api.transport import PoolTransport, large_read_transport
from amigofs.emulator.data import Dataset, Recording
from benchmarks.harness import Harness
from benchmarks.memfs import config_from_knobs, recordings
from benchmarks.report import median
from tests.emulator_proc import EmulatorProc

PROFILE = "internet"
CONNECTIONS = 16  # the mount's max_connections
RECORDS_AT_ONCE = 8  # RecordingSource's concurrency
RANGES_AT_ONCE = 8  # store.PARALLEL_GETS
RANGE_BYTES = 1 << 20
PROTOCOLS = {"http1": "HTTP/1.1", "http2": "HTTP/2"}


def transport(protocol: str, certificate: str) -> PoolTransport:
    """The mount's transport (HTTP/1.1), or the same with HTTP/2 by ALPN; a context of its own
    each, as httpcore sets the ALPN protocols on the context it is given."""
    context = ssl.create_default_context(cafile=certificate)
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    return large_read_transport(limits, context, http2=protocol == "http2")


class Checked(httpx.AsyncBaseTransport):
    """Counts the answers by HTTP version, to show which protocol was spoken."""

    def __init__(self, inner: PoolTransport) -> None:
        self.inner = inner
        self.versions: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        version = response.extensions.get("http_version", b"?").decode()
        self.versions[version] = self.versions.get(version, 0) + 1
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def connections(self) -> int:
        return self.inner.connections()


async def walk(client: PlatformClient, recs: list[Recording]) -> None:
    limiter = trio.CapacityLimiter(RECORDS_AT_ONCE)

    async def load(rec: Recording) -> None:
        async with limiter:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.recording_metadata, rec.workspace_id, rec.call_sid)
                urls = await client.recording_urls(rec.workspace_id, rec.call_sid)
            assert urls.metadata is not None
            await client.download_small(urls.metadata)

    async with trio.open_nursery() as nursery:
        for rec in recs:
            nursery.start_soon(load, rec)


async def ranged(client: PlatformClient, ranges: list[tuple[DownloadPath, int, int]]) -> None:
    limiter = trio.CapacityLimiter(RANGES_AT_ONCE)

    async def get(path: DownloadPath, start: int, end: int) -> None:
        async with limiter:
            got = await client.read_range(path, start, end)
            assert len(got) == end - start

    async with trio.open_nursery() as nursery:
        for path, start, end in ranges:
            nursery.start_soon(get, path, start, end)


async def measure(
    emu: EmulatorProc,
    protocol: str,
    recs: list[Recording],
    ranges: list[tuple[DownloadPath, int, int]],
    single: tuple[DownloadPath, int, int],
) -> dict[str, Any]:
    """One run of the three loads with a fresh client of this protocol, warmed up first."""
    assert emu.certificate is not None, "HTTP/2 over TLS needs the emulator's --tls"
    checked = Checked(transport(protocol, emu.certificate))
    config = ClientConfig(base_url=emu.url, max_connections=CONNECTIONS)
    result: dict[str, Any] = {}
    async with PlatformClient(config, ApiKey(emu.api_key), transport=checked) as client:
        warm = CONNECTIONS if protocol == "http1" else 1
        async with trio.open_nursery() as nursery:
            for _ in range(warm):
                nursery.start_soon(client.list_workspaces)
        result["warm_connections"] = checked.connections()
        loads: dict[str, Callable[[], Awaitable[None]]] = {
            "walk": lambda: walk(client, recs),
            "ranged": lambda: ranged(client, ranges),
            "single": lambda: ranged(client, [single]),
        }
        for name, load in loads.items():
            emu.reset_stats()
            began, cpu = time.perf_counter(), time.process_time()
            await load()
            result[f"{name}_s"] = time.perf_counter() - began
            result[f"{name}_cpu_s"] = time.process_time() - cpu
            result[f"{name}_peak_in_flight"] = emu.client.get("/__stats/link").json()[
                "peak_in_flight"
            ]
        result["connections"] = checked.connections()
        result["versions"] = checked.versions
    if set(checked.versions) != {PROTOCOLS[protocol]}:
        raise RuntimeError(f"{protocol}: answers came as {checked.versions}")
    return result


def run(harness: Harness) -> None:
    s = harness.settings
    knobs = harness.knobs(calls_per_workspace=s.link_calls, long_calls=0, tls=True)
    data = Dataset(config_from_knobs(knobs))
    recs = list(recordings(data))
    total = (8 if s.quick else 32) << 20
    raw: dict[str, Any] = {
        "calls": len(recs),
        "ranged_bytes": total,
        "range_bytes": RANGE_BYTES,
        "http1": [],
        "http2": [],
    }
    harness.raw["http2"] = raw
    with harness.emulator("http2", PROFILE, **knobs) as emu:
        outbound = [
            (
                DownloadPath(r.workspace_id, r.call_sid, name, f"{prefix}/download/{name}"),
                data.file_size(r.workspace_id, r.call_sid, name),
            )
            for r in recs
            for name, prefix in [
                (r.outbound_filename, f"/v1/{r.workspace_id}/recordings/{r.call_sid}")
            ]
        ]
        ranges: list[tuple[DownloadPath, int, int]] = []
        for path, size in outbound:
            for start in range(0, size, RANGE_BYTES):
                if sum(end - begin for _, begin, end in ranges) < total:
                    ranges.append((path, start, min(size, start + RANGE_BYTES)))
        largest, largest_size = max(outbound, key=lambda pair: pair[1])
        raw["ranged_bytes"] = sum(end - start for _, start, end in ranges)
        raw["single_bytes"] = largest_size
        for run in range(s.runs):
            # Alternately first, so neither gets the quieter moments.
            order = ("http1", "http2") if run % 2 == 0 else ("http2", "http1")
            for protocol in order:
                raw[protocol].append(
                    trio.run(measure, emu, protocol, recs, ranges, (largest, 0, largest_size))
                )
            harness.progress(
                f"run {run + 1}/{s.runs}: "
                + ", ".join(
                    f"{p}: walk {raw[p][-1]['walk_s']:.2f}s ranged {raw[p][-1]['ranged_s']:.2f}s"
                    f" single {raw[p][-1]['single_s']:.2f}s ({raw[p][-1]['connections']} conn.)"
                    for p in PROTOCOLS
                )
            )
    loads = {
        "walk": f"{len(recs)} calls' urls + metadata + metadata file, {RECORDS_AT_ONCE} at once",
        "ranged": f"{raw['ranged_bytes'] / 1e6:.0f} MB in 1 MiB ranges, {RANGES_AT_ONCE} at once",
        "single": f"one {largest_size / 1e6:.1f} MB download alone",
    }
    for name, label in loads.items():
        for measure_of, unit in (("s", "time"), ("cpu_s", "client CPU")):
            harness.figure(
                f"amigofs.http2.{name}.{measure_of}",
                "other",
                f"link+TLS: {label}: HTTP/2 / HTTP/1.1 (warm pool of {CONNECTIONS}) {unit}",
                median([entry[f"{name}_{measure_of}"] for entry in raw["http2"]]),
                median([entry[f"{name}_{measure_of}"] for entry in raw["http1"]]),
                "s",
            )
