"""Listing a workspace of real size (issue 11): a million calls at 50 ms a request.

    python -m benchmarks.listing [--calls 1000000] [--latency 0.05] [--runs 3]

Per run, on a fresh cache: the time to the first entry and to the complete listing
of the workspace (`ls -f`, which does not sort), the list requests it took and the
mount's peak RSS; then after a remount (the index on disk): the same; then the list
requests of a refresh after 100 new calls; and, on a cold mount of its own, a `stat`
of one call by its SID: its requests and its time in round trips (one page's time
each). The baseline, measured in the same run:
sequential paging, the pages a listing needs times the measured time of one page
(the median of 20 pages at random offsets, fetched one after another with httpx).
Figures are medians over the runs. Run it alone: two cores are easily shared.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.procs import Workdir, amigofs_mount
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import wait_until

API_KEY = "bench-listing-key"


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


def one_run(workdir: Workdir, calls: int, latency: float) -> dict[str, float]:
    log = workdir.path / "emulator.log"
    with running_emulator(API_KEY, log_path=log, workspaces=1, calls_per_workspace=calls,
                          latency=latency, max_duration=30.0) as emu:  # fmt: skip
        workspace_id = emu.client.get(
            "/v1/workspaces", headers={"Authorization": f"Bearer {API_KEY}"}
        ).json()["items"][0]["id"]
        pages = -(-calls // 100)
        one_page = page_seconds(emu.url, workspace_id, calls)
        baseline = pages * one_page
        figures: dict[str, float] = {"sequential_paging_s": baseline}
        figures |= stat_by_sid(emu, workdir, workspace_id, calls, one_page)
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
            # 100 new calls; SIGHUP makes the next listing wait for a refresh.
            emu.client.post("/__control", json={"add_calls": 100}).raise_for_status()
            emu.reset_stats()
            mnt.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "SIGHUP" in mnt.log_tail(10_000), 30, "the SIGHUP to be taken")
            refreshed = timed_listing(mnt.path / workspace_id)
            if refreshed[2] != count + 100:
                raise RuntimeError(f"the refresh listed {refreshed[2]}, not {count + 100}")
            figures["refresh_list_requests"] = list_requests(emu.stats())
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    runs = []
    for number in range(args.runs):
        workdir = Workdir()
        try:
            runs.append(one_run(workdir, args.calls, args.latency))
        finally:
            workdir.cleanup()
        print(f"run {number + 1}: {json.dumps(runs[-1])}", flush=True)
    medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    medians["speedup_vs_sequential"] = medians["sequential_paging_s"] / medians["complete_s"]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"listing-{stamp}.json"
    out.write_text(json.dumps({"calls": args.calls, "latency": args.latency, "runs": runs,
                               "medians": medians}, indent=2))  # fmt: skip
    for key, value in medians.items():
        print(f"{key:28} {value:10.2f}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
