"""Listing and browsing a workspace of real size (issues 11 and 21): a million calls at
50 ms a request.

    python -m benchmarks.listing [--calls 1000000] [--latency 0.05] [--runs 3] [--quick]
        [--walk-calls 2000] [--find-calls 100000] [--cache-size 4G]
    python -m benchmarks.listing --remount-cached 10000,100000,1000000 [--runs 3]

Per run, each figure beside a baseline measured in the same run:

- the first listing (issue 11), on a fresh cache: the time to the first entry and to
  the complete listing of the workspace (`ls -f`, which does not sort), its list
  requests, the mount's peak RSS; after a remount (the index on disk) the same; the
  list requests of a refresh after 100 new calls; and, on a cold mount of its own, a
  `stat` of one call by its SID (requests, round trips). Baseline: sequential paging,
  the pages a listing needs times the measured time of one page (the median of 20
  pages at random offsets, one after another with httpx);
- a cold `ls by-date/WS/` (a fresh cache): its time in round trips (one page's time
  each), its list requests, and whether it failed (the mount's --timeout);
- `ls -l` of the indexed workspace (after the remount) against `ls -f` of it, then;
- an `rsync -an` stat walk of a workspace of --walk-calls calls (the same latency, its
  listing indexed first): calls a second against what the API allows, the in-flight
  cap (IN_FLIGHT_CAP) over one request's time (the median of 20 metadata requests),
  the requests a call, and the most requests the emulator saw in flight;
- `find` through --find-calls calls of the workspace, with their sizes (each call's
  record loaded), on a fresh cache of --cache-size: the mount's RSS before, after, and
  after the kernel forgets (`echo 2 > /proc/sys/vm/drop_caches`, where this machine
  allows it: else none); the cache directory's `du` growth a call and what the mount
  counts of it (its stats' used_bytes), and whether `du` stayed within --cache-size;
- a remount with those calls cached (--find-calls of them: a million take hours to
  walk) after the kernel forgets its pages where it may: seconds until the mount
  answers `ls` of its root, against a mount of an empty cache started in the same run;
- with --remount-cached N[,N...] (alone: no other figure), a remount with N calls
  cached: seconds from `amigofs mount` started until a `stat` of a cached call's
  metadata.json and an `ls` of the mount's root answer, with the page cache dropped
  before each mount, against a mount of an empty cache in the same run. The cache is
  REMOUNT_SEED_CALLS calls really cached through a mount, grown to each N with the
  cache's own writers (records, the metadata.json block file and its row, the call
  index): a million calls through a mount take hours.

Only the command line, the stats file and the emulator's counters are used: the
benchmark measures whatever code it runs. Figures are medians over the runs. Run it
alone: two cores are easily shared. --quick: small sizes, a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from amigofs.api.models import CallSummary
from amigofs.cache.block_format import FileKey, footprint
from amigofs.cache.block_index import BlockIndex
from amigofs.cache.block_writer import BlockWriter
from amigofs.cache.index import CallIndex
from amigofs.cache.meta import MetaStore
from amigofs.cache.store import DEFAULT_BLOCK_SIZE
from benchmarks.procs import Workdir, amigofs_mount
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import wait_until

API_KEY = "bench-listing-key"
# The in-flight cap the stat walk is held to (issue 21: 32 by default is reasonable).
IN_FLIGHT_CAP = 32
# Past this, a figure's command is given up (the old `ls -l` of a million took 224 s).
COMMAND_TIMEOUT = 3600.0
# Call directories a `find` is given at once.
FIND_BATCH = 500


@dataclass(slots=True, frozen=True)
class Sizes:
    calls: int  # of the workspace listed
    walk_calls: int  # of the workspace rsync walks
    find_calls: int  # calls `find` goes through (and the remount finds cached)
    cache_size: str  # of the mount `find` fills


QUICK = Sizes(calls=10_000, walk_calls=300, find_calls=2_000, cache_size="16M")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def list_requests(stats: dict[str, Any]) -> int:
    return int(stats["requests"].get("list-calls", 0))


def timed_listing(path: Path) -> tuple[float, float, int]:
    """(seconds to the first entry, seconds to the last, entries) of `ls -f PATH`."""
    started = time.monotonic()
    process = subprocess.Popen(["ls", "-f", str(path)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    first = None
    count = 0
    for _line in process.stdout:
        if first is None:
            first = time.monotonic() - started
        count += 1
    process.wait(3600)
    if process.returncode != 0:
        raise RuntimeError(f"ls -f {path} failed with {process.returncode}")
    return first or 0.0, time.monotonic() - started, count - 2  # less . and ..


def page_seconds(url: str, workspace_id: str, total: int) -> float:
    """The median time of one page, one after another, at random offsets."""
    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        for _ in range(20):
            offset = random.randrange(0, max(1, total - 100)) // 100 * 100
            started = time.monotonic()
            client.get(f"/v1/{workspace_id}/calls", params={"limit": 100, "offset": offset})
            times.append(time.monotonic() - started)
    return statistics.median(times)


def stat_by_sid(
    emu: EmulatorProc, workdir: Workdir, workspace_id: str, calls: int, one_page: float
) -> dict[str, float]:
    """`stat` of a call in the middle of the workspace, by its SID, on a cold mount (a
    fresh cache): its requests, and its time in round trips (one page's time each)."""
    sid = emu.client.get(
        f"/v1/{workspace_id}/calls",
        params={"limit": 1, "offset": calls // 2},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()["items"][0]["call_sid"]
    with amigofs_mount(emu, workdir.new("mnt"), workdir.new("cache"),
                       workdir.new("log") / "mount.log", "--workspace", workspace_id) as mnt:  # fmt: skip
        emu.reset_stats()
        started = time.monotonic()
        (mnt.path / workspace_id / sid / "outbound.wav").stat()
        elapsed = time.monotonic() - started
        requests = emu.stats()["requests"]
    return {
        "stat_requests": sum(requests.values()),
        "stat_list_requests": list_requests({"requests": requests}),
        "stat_round_trips": elapsed / one_page,
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def forget_kernel_caches(level: str) -> bool:
    """`echo LEVEL > /proc/sys/vm/drop_caches` (2: dentries and inodes, 3: and pages);
    False where this machine does not allow it (a container's read-only /proc/sys)."""
    try:
        subprocess.run(["sync"], check=False, timeout=COMMAND_TIMEOUT)
        Path("/proc/sys/vm/drop_caches").write_text(f"{level}\n")
    except OSError:
        return False
    return True


# Seconds the mount may take to answer the kernel's FORGETs after drop_caches.
RSS_SETTLE = 15.0


def settled_rss_mib(pid: int) -> float:
    """The mount's RSS once the FORGETs the kernel sends are answered: unchanged for a
    second (at most RSS_SETTLE seconds)."""
    end = time.monotonic() + RSS_SETTLE
    last = rss_mib(pid)
    while time.monotonic() < end:
        time.sleep(1.0)
        now = rss_mib(pid)
        if now == last:
            break
        last = now
    return last


def du_bytes(path: Path) -> int:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


def cache_used_bytes(mountpoint: Path) -> int:
    """What the mount counts toward --cache-size (its stats file)."""
    document = json.loads((mountpoint / ".amigofs-stats").read_bytes())
    return int(document["cache"]["used_bytes"])


def size_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    unit = units.get(text[-1:].upper())
    return int(float(text[:-1]) * unit) if unit else int(text)


def timed(argv: list[str]) -> tuple[float, int]:
    """(seconds, exit status) of a command, its output discarded."""
    started = time.monotonic()
    try:
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=COMMAND_TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return time.monotonic() - started, -1
    return time.monotonic() - started, done.returncode


def first_workspace(emu: EmulatorProc) -> str:
    answer = emu.client.get("/v1/workspaces", headers={"Authorization": f"Bearer {API_KEY}"})
    return str(answer.json()["items"][0]["id"])


def request_seconds(url: str, workspace_id: str) -> float:
    """The median time of one metadata request, one after another."""
    times = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=url, headers=headers) as client:
        items = client.get(f"/v1/{workspace_id}/calls", params={"limit": 20}).json()["items"]
        for item in items:
            started = time.monotonic()
            client.get(f"/v1/{workspace_id}/recordings/{item['call_sid']}/metadata")
            times.append(time.monotonic() - started)
    return statistics.median(times)


def cold_by_date(
    emu: EmulatorProc, workdir: Workdir, workspace_id: str, one_page: float
) -> dict[str, float]:
    """`ls by-date/WS/` on a fresh cache: round trips, list requests, days, failure."""
    with amigofs_mount(emu, workdir.new("mnt"), workdir.new("cache"),
                       workdir.new("log") / "mount.log", "--workspace", workspace_id) as mnt:  # fmt: skip
        emu.reset_stats()
        seconds, status = timed(["ls", str(mnt.path / "by-date" / workspace_id)])
        days = len(os.listdir(mnt.path / "by-date" / workspace_id)) if status == 0 else 0
        return {
            "by_date_cold_s": seconds,
            "by_date_cold_round_trips": seconds / one_page,
            "by_date_cold_list_requests": list_requests(emu.stats()),
            "by_date_cold_days": days,
            "by_date_cold_failed": int(status != 0),
        }


def ls_long(mnt: Path, workspace_id: str, emu: EmulatorProc) -> dict[str, float]:
    """`ls -l` of the indexed workspace, against `ls -f` of it just before."""
    plain, status = timed(["ls", "-f", str(mnt / workspace_id)])
    emu.reset_stats()
    long, long_status = timed(["ls", "-l", str(mnt / workspace_id)])
    return {
        "ls_f_indexed_s": plain,
        "ls_l_indexed_s": long,
        "ls_l_over_ls_f": long / plain,
        "ls_l_requests": sum(emu.stats()["requests"].values()),
        "ls_l_failed": int(status != 0 or long_status != 0),
    }


def stat_walk(workdir: Workdir, calls: int, latency: float) -> dict[str, float]:
    """`rsync -an` of a workspace of `calls` calls, its listing indexed first."""
    with running_emulator(API_KEY, log_path=workdir.path / "walk-emulator.log", workspaces=1,
                          calls_per_workspace=calls, latency=latency,
                          max_duration=30.0) as emu:  # fmt: skip
        workspace_id = first_workspace(emu)
        one_request = request_seconds(emu.url, workspace_id)
        with amigofs_mount(emu, workdir.new("mnt"), workdir.new("cache"),
                           workdir.new("log") / "mount.log", "--workspace", workspace_id,
                           "--listing-ttl", "3600") as mnt:  # fmt: skip
            listed = len(os.listdir(mnt.path / workspace_id))
            emu.reset_stats()
            seconds, status = timed(["rsync", "-an", f"{mnt.path / workspace_id}/",
                                     str(workdir.new("rsync"))])  # fmt: skip
            requests = emu.stats()["requests"]
            peak = emu.link_stats().get("peak_in_flight", 0)
    per_second = listed / seconds
    return {
        "walk_calls": listed,
        "walk_s": seconds,
        "walk_calls_per_s": per_second,
        "walk_one_request_s": one_request,
        "walk_vs_api": per_second / (IN_FLIGHT_CAP / one_request),
        "walk_requests_per_call": (sum(requests.values()) - list_requests({"requests": requests}))
        / listed,
        "walk_peak_in_flight": peak,
        "walk_failed": int(status != 0),
    }


def find_through(mnt: Path, call_dirs: list[Path]) -> int:
    """`find` through the call directories with their files' sizes; its worst status."""
    worst = 0
    for start in range(0, len(call_dirs), FIND_BATCH):
        batch = [str(d) for d in call_dirs[start : start + FIND_BATCH]]
        _seconds, status = timed(["find", *batch, "-type", "f", "-size", "+0c"])
        worst = max(worst, status)
    return worst


def memory_and_disk(
    emu: EmulatorProc, workdir: Workdir, workspace_id: str, sizes: Sizes
) -> dict[str, float | None]:
    """`find` through calls on a fresh cache of --cache-size: RSS, disk a call, and a
    remount of that cache, against a mount of an empty cache."""
    cache = workdir.new("cache")
    args = ("--workspace", workspace_id, "--listing-ttl", "3600", "--cache-size", sizes.cache_size)
    started = time.monotonic()
    with amigofs_mount(emu, workdir.new("mnt"), workdir.new("empty-cache"),
                       workdir.new("log") / "mount.log", *args) as mnt:  # fmt: skip
        os.listdir(mnt.path)
        fresh_live = time.monotonic() - started
    with amigofs_mount(emu, workdir.new("mnt"), cache, workdir.new("log") / "mount.log",
                       *args) as mnt:  # fmt: skip
        listing = subprocess.run(["ls", "-f", str(mnt.path / workspace_id)], capture_output=True,
                                 text=True, check=True, timeout=COMMAND_TIMEOUT)  # fmt: skip
        names = [n for n in listing.stdout.split() if n not in (".", "..")][: sizes.find_calls]
        rss_before = rss_mib(mnt.process.pid)
        du_before, used_before = du_bytes(cache), cache_used_bytes(mnt.path)
        status = find_through(mnt.path, [mnt.path / workspace_id / n for n in names])
        rss_after = rss_mib(mnt.process.pid)
        forgot = forget_kernel_caches("2")
        rss_forgot = settled_rss_mib(mnt.process.pid) if forgot else None
        du_after, used_after = du_bytes(cache), cache_used_bytes(mnt.path)
    forget_kernel_caches("3")
    started = time.monotonic()
    with amigofs_mount(emu, workdir.new("mnt"), cache, workdir.new("log") / "mount.log",
                       *args) as mnt:  # fmt: skip
        os.listdir(mnt.path)
        remount_live = time.monotonic() - started
    count = len(names)
    return {
        "find_calls": count,
        "find_failed": int(status != 0),
        "rss_before_find_mib": rss_before,
        "rss_after_find_mib": rss_after,
        "rss_after_forget_mib": rss_forgot,
        "rss_growth_per_call_kib": (rss_after - rss_before) * 1024 / count,
        # Issue 21's must-show: back within 10 MB of where it started.
        "rss_forgot_over_before_mib": None if rss_forgot is None else rss_forgot - rss_before,
        "disk_per_call_kib": (du_after - du_before) / 1024 / count,
        "counted_per_call_kib": (used_after - used_before) / 1024 / count,
        "du_cache_mib": du_after / (1 << 20),
        "du_within_cache_size": int(du_after <= size_bytes(sizes.cache_size)),
        "fresh_mount_live_s": fresh_live,
        "remount_cached_calls": count,
        "remount_live_s": remount_live,
        "remount_live_over_fresh": remount_live / fresh_live,
    }


# --- a remount with N calls cached (issue 21) ----------------------------------------------

# Calls cached through a mount (their records, metadata.json read) before the cache is grown.
REMOUNT_SEED_CALLS = 200
# Room for a million calls' metadata.json blocks (4 KiB each on disk), their records and
# indexes: a cache over its --cache-size would be evicted at the remount, not measured.
REMOUNT_CACHE_SIZE = "16G"
# Generated calls written in one batch (a transaction of each store).
FILL_BATCH = 10_000


def _raw_document(document: object) -> object:
    return document


def seed_cache(emu: EmulatorProc, workdir: Workdir, workspace_id: str, cache: Path) -> list[str]:
    """Caches REMOUNT_SEED_CALLS calls through a mount: the workspace listed, each call's
    metadata.json read. Their SIDs."""
    with amigofs_mount(emu, workdir.new("mnt"), cache, workdir.new("log") / "mount.log",
                       "--workspace", workspace_id) as mnt:  # fmt: skip
        sids = sorted(os.listdir(mnt.path / workspace_id))[:REMOUNT_SEED_CALLS]
        for sid in sids:
            (mnt.path / workspace_id / sid / "metadata.json").read_bytes()
    return sids


def generated_sid(number: int) -> str:
    return f"CA{number:032x}"  # the API's shape; the emulator's are random hex


def grow_cache(cache: Path, workspace_id: str, template_sid: str, first: int, stop: int) -> None:
    """Adds calls [first, stop) to a cache, as a mount would have cached them: a record
    (the template call's, its SID replaced), the block file of its metadata.json with its
    row in the block index, and its row in the call index."""
    meta = MetaStore(cache)
    blocks = BlockIndex(cache)
    blocks.open()
    calls = CallIndex(cache)
    calls.open()
    try:
        template = meta.load(_raw_document, "records", workspace_id, template_sid)
        if not isinstance(template, dict):
            raise RuntimeError(f"no record of {template_sid} in {cache}")
        text = json.dumps(template)
        started = time.time()
        for start in range(first, stop, FILL_BATCH):
            summaries = []
            for number in range(start, min(stop, start + FILL_BATCH)):
                sid = generated_sid(number)
                document = json.loads(text.replace(template_sid, sid))
                meta.save(document, "records", workspace_id, sid)
                body = document["metadata_body"].encode("latin-1")
                key = FileKey(workspace_id, sid, "metadata.json", len(body))
                with BlockWriter(str(cache), key.relative_dir, DEFAULT_BLOCK_SIZE) as writer:
                    writer.write(0, memoryview(body))
                blocks.stored((key.relative_dir, 0), footprint(len(body)), ahead=False)
                summaries.append(CallSummary(workspace_id, sid, None, None, "inbound"))
            calls.add(workspace_id, summaries)
            blocks.flush()
            meta.flush()
            print(f"  cache grown to {start + len(summaries)} calls"
                  f" ({time.time() - started:.0f} s)", flush=True)  # fmt: skip
    finally:
        blocks.close()
        calls.close()
        meta.close()


def live_seconds(
    emu: EmulatorProc, workdir: Workdir, cache: Path, workspace_id: str, sid: str
) -> float:
    """Seconds from `amigofs mount` started (the page cache dropped first) until a stat
    of the call's metadata.json and an `ls` of the root answer."""
    forget_kernel_caches("3")
    mountpoint = workdir.new("mnt")
    started = time.monotonic()
    with amigofs_mount(emu, mountpoint, cache, workdir.new("log") / "mount.log",
                       "--workspace", workspace_id, "--cache-size", REMOUNT_CACHE_SIZE) as mnt:  # fmt: skip
        (mnt.path / workspace_id / sid / "metadata.json").stat()
        os.listdir(mnt.path)
        return time.monotonic() - started


def remount_cached(
    workdir: Workdir, counts: list[int], runs: int, latency: float
) -> dict[str, float | None]:
    """A remount with each of `counts` calls cached, against a mount of an empty cache
    (median of `runs` each, alternating)."""
    with running_emulator(API_KEY, log_path=workdir.path / "remount-emulator.log", workspaces=1,
                          calls_per_workspace=1_000, latency=latency,
                          max_duration=30.0) as emu:  # fmt: skip
        workspace_id = first_workspace(emu)
        cache = workdir.new("cache")
        sids = seed_cache(emu, workdir, workspace_id, cache)
        figures: dict[str, float | None] = {}
        grown = 0
        fresh: list[float] = []
        for count in sorted(counts):
            grow_cache(cache, workspace_id, sids[0], grown, max(grown, count - len(sids)))
            grown = max(grown, count - len(sids))
            cached = []
            for _ in range(runs):
                fresh.append(live_seconds(emu, workdir, workdir.new("empty-cache"),
                                          workspace_id, sids[-1]))  # fmt: skip
                cached.append(live_seconds(emu, workdir, cache, workspace_id, sids[-1]))
            live = statistics.median(cached)
            figures[f"remount_{count}_live_s"] = live
            figures[f"remount_{count}_over_fresh"] = live / statistics.median(fresh)
            figures[f"remount_{count}_du_mib"] = du_bytes(cache) / (1 << 20)
            print(f"{count} calls cached: live in {live:.3f} s"
                  f" (fresh: {statistics.median(fresh):.3f} s)", flush=True)  # fmt: skip
        figures["fresh_mount_live_s"] = statistics.median(fresh)
    return figures


def one_run(workdir: Workdir, sizes: Sizes, latency: float) -> dict[str, float | None]:
    calls = sizes.calls
    log = workdir.path / "emulator.log"
    with running_emulator(API_KEY, log_path=log, workspaces=1, calls_per_workspace=calls,
                          latency=latency, max_duration=30.0) as emu:  # fmt: skip
        workspace_id = first_workspace(emu)
        pages = -(-calls // 100)
        one_page = page_seconds(emu.url, workspace_id, calls)
        baseline = pages * one_page
        figures: dict[str, float | None] = {"sequential_paging_s": baseline, "one_page_s": one_page}
        figures |= stat_by_sid(emu, workdir, workspace_id, calls, one_page)
        figures |= cold_by_date(emu, workdir, workspace_id, one_page)
        cache = workdir.new("cache")
        emu.reset_stats()
        with amigofs_mount(emu, workdir.new("mnt"), cache, workdir.new("log") / "mount.log",
                           "--workspace", workspace_id, "--listing-ttl", "3600") as mnt:  # fmt: skip
            first, whole, count = timed_listing(mnt.path / workspace_id)
            figures |= {
                "first_entry_s": first,
                "complete_s": whole,
                "entries": count,
                "list_requests": list_requests(emu.stats()),
                "peak_rss_mib": peak_rss_mib(mnt.process.pid),
            }
        emu.reset_stats()
        with amigofs_mount(emu, workdir.new("mnt"), cache, workdir.new("log") / "mount.log",
                           "--workspace", workspace_id, "--listing-ttl", "3600") as mnt:  # fmt: skip
            first, whole, count = timed_listing(mnt.path / workspace_id)
            figures |= {
                "remount_first_entry_s": first,
                "remount_complete_s": whole,
                "remount_entries": count,
                "remount_list_requests": list_requests(emu.stats()),
                "remount_peak_rss_mib": peak_rss_mib(mnt.process.pid),
            }
            figures |= ls_long(mnt.path, workspace_id, emu)
            # 100 new calls; SIGHUP makes the next listing wait for a refresh.
            emu.client.post("/__control", json={"add_calls": 100}).raise_for_status()
            emu.reset_stats()
            mnt.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "SIGHUP" in mnt.log_tail(10_000), 30, "the SIGHUP to be taken")
            refreshed = timed_listing(mnt.path / workspace_id)
            if refreshed[2] != count + 100:
                raise RuntimeError(f"the refresh listed {refreshed[2]}, not {count + 100}")
            figures["refresh_list_requests"] = list_requests(emu.stats())
        figures |= memory_and_disk(emu, workdir, workspace_id, sizes)
    figures |= stat_walk(workdir, sizes.walk_calls, latency)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--walk-calls", type=int, default=2_000)
    parser.add_argument("--find-calls", type=int, default=100_000)
    parser.add_argument("--cache-size", default="4G")
    parser.add_argument("--quick", action="store_true", help=f"small sizes: {QUICK}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--remount-cached",
        metavar="N[,N...]",
        help="only: a remount with N calls cached (e.g. 10000,100000,1000000)",
    )
    args = parser.parse_args()
    if args.remount_cached:
        remount_main(args)
        return
    sizes = QUICK if args.quick else Sizes(
        args.calls, args.walk_calls, args.find_calls, args.cache_size
    )  # fmt: skip
    runs = []
    for number in range(args.runs):
        workdir = Workdir()
        try:
            runs.append(one_run(workdir, sizes, args.latency))
        finally:
            workdir.cleanup()
        print(f"run {number + 1}: {json.dumps(runs[-1])}", flush=True)
    medians = {key: median_of([r[key] for r in runs]) for key in runs[0]}
    complete = medians["complete_s"]
    if complete:
        medians["speedup_vs_sequential"] = (medians["sequential_paging_s"] or 0.0) / complete
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"listing-{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"sizes": sizes.__repr__(), "calls": sizes.calls,
                               "latency": args.latency, "in_flight_cap": IN_FLIGHT_CAP,
                               "runs": runs, "medians": medians}, indent=2))  # fmt: skip
    for key, value in medians.items():
        print(f"{key:28} {'none' if value is None else f'{value:10.2f}'}")
    print(f"written to {out}")


def remount_main(args: argparse.Namespace) -> None:
    """--remount-cached: that figure alone, its runs inside (the cache is grown once)."""
    counts = [int(n) for n in args.remount_cached.split(",")]
    workdir = Workdir()
    try:
        figures = remount_cached(workdir, counts, args.runs, args.latency)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"remount-{stamp}.json"
        out.write_text(json.dumps({"counts": counts, "runs": args.runs, "latency": args.latency,
                                   "figures": figures}, indent=2))  # fmt: skip
        for key, value in figures.items():
            print(f"{key:28} {'none' if value is None else f'{value:10.3f}'}")
        print(f"written to {out}; removing the scratch cache (a million files take minutes)")
    finally:
        workdir.cleanup()


def median_of(values: list[float | None]) -> float | None:
    """The median of the values measured; None if none was (no drop_caches here)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


if __name__ == "__main__":
    main()
