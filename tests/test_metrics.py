"""`amigofs stats --prometheus` counts requests by operation and HTTP status, the fetch
worker's downloads among them, as the server saw them: checked against the emulator's own
request log through a real mount, with answers of 200/206, 404, 503 (faults), 401 (a key
the server no longer takes) and none at all (the server down).

The one way the two may differ: a request the mount gave up on (status "cancelled", as
when the request beside it failed) may have had an answer on its way, which the server
logged and the mount never read."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from amigofs.daemon.control import read_stats
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted
from tests.reliability import errno_of

COMMAND_TIMEOUT = 60.0
SETTLE_DEADLINE = 30.0
KNOBS: dict[str, Any] = {
    "workspaces": 1, "calls_per_workspace": 4, "min_duration": 1.0, "max_duration": 2.0,
}  # fmt: skip

Statuses = Counter[tuple[str, str]]  # (operation, status) -> requests


def amigofs(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amigofs", *map(str, argv)],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def served(emulator: EmulatorProc) -> Statuses:
    """What the emulator answered, by operation and status, from its request log."""
    log = emulator.stats()["log"]
    assert all(entry["status"] is not None for entry in log), "a request still unanswered"
    return Counter((str(entry["op"]), str(entry["status"])) for entry in log)


def mount_statuses(document: dict[str, Any]) -> Statuses:
    return Counter(
        {
            (op, status): count
            for op, statuses in document["requests_by_status"].items()
            for status, count in statuses.items()
        }
    )


def settled(mount: Mount, emulator: EmulatorProc | None) -> dict[str, Any]:
    """The mount's stats once no request is under way, in the mount, its fetch worker
    or the emulator: every request started has ended, the same before and after a look
    at the emulator's log."""
    end = time.monotonic() + SETTLE_DEADLINE
    while True:
        before = read_stats(mount.path)
        answered = emulator is None or all(
            entry["status"] is not None for entry in emulator.stats()["log"]
        )
        after = read_stats(mount.path)
        idle = (
            sum(after["requests"].values()) == sum(mount_statuses(after).values())
            and after["bytes_in_flight"] == 0
        )
        if answered and idle and before["requests_by_status"] == after["requests_by_status"]:
            return after
        if time.monotonic() > end:
            raise TimeoutError(f"requests still under way after {SETTLE_DEADLINE:.0f} s: {after}")
        time.sleep(0.05)


def prometheus_statuses(mount: Mount) -> tuple[Statuses, dict[str, float]]:
    """amigofs_requests_finished_total by (operation, status), and the other counters'
    values, from `amigofs stats --prometheus` through prometheus_client's own parser."""
    result = amigofs("stats", "--prometheus", mount.path)
    assert result.returncode == 0 and result.stderr == "", result
    families = {family.name: family for family in text_string_to_metric_families(result.stdout)}
    finished = families["amigofs_requests_finished"]
    assert finished.type == "counter"
    statuses: Statuses = Counter()
    for sample in finished.samples:
        if sample.name.endswith("_total"):
            assert sample.labels.pop("mountpoint") == str(mount.path)
            assert set(sample.labels) == {"operation", "status"}, sample
            statuses[sample.labels["operation"], sample.labels["status"]] += int(sample.value)
    started: dict[str, float] = {}
    for sample in families["amigofs_requests"].samples:
        if sample.name.endswith("_total"):
            started[sample.labels["operation"]] = sample.value
    return statuses, {
        "errors": families["amigofs_errors"].samples[0].value,
        **{f"requests {op}": n for op, n in started.items()},
    }


def answered(statuses: Statuses) -> Statuses:
    """Those with an HTTP status."""
    return Counter({key: n for key, n in statuses.items() if key[1].isdigit()})


def per_operation(statuses: Statuses) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (op, _), n in statuses.items():
        counts[op] += n
    return counts


def test_requests_by_operation_and_status_agree_with_the_servers_log() -> None:
    with running_emulator(**KNOBS) as first:
        workspace = first.data.workspaces[0].id
        port = first.port
        with mounted(first.url, first.api_key, "--timeout", "3") as mnt:
            root = mnt.path / workspace
            calls = sorted(os.listdir(root))
            assert len(calls) == 4
            # From here on: the check of the key before mounting is no request of the mount's.
            start = mount_statuses(settled(mnt, first))
            first.reset_stats()

            # 200s and 206s: a listing, a call's records, its audio (by the fetch worker).
            (root / calls[0] / "inbound.wav").read_bytes()
            (root / calls[0] / "metadata.json").read_bytes()
            # A 404: a call the server does not have.
            assert errno_of(lambda: os.stat(root / ("CA" + "0" * 32))) == errno.ENOENT
            # 503s: the server unavailable while a call's records are asked for.
            first.control(fault_rate=1.0, fault_kinds=["503"])
            assert errno_of(lambda: os.listdir(root / calls[1])) == errno.EIO
            first.control(fault_rate=0.0)
            # A file opened while the server is up, read once it is down: the fetch
            # worker's requests that get no answer.
            with open(root / calls[2] / "outbound.wav", "rb") as audio:
                settled(mnt, first)
                first_served = served(first)
                first.stop()
                assert errno_of(lambda: audio.read(4096)) == errno.EIO
            before_401 = settled(mnt, None)

            # 401s: the server back on its port, with a key the mount does not have.
            with running_emulator("another-key", port=port, **KNOBS) as second:
                assert errno_of(lambda: os.listdir(root / calls[3])) == errno.EACCES
                document = settled(mnt, second)
                second_served = served(second)
                statuses, counters = prometheus_statuses(mnt)
                text = amigofs("stats", mnt.path).stdout

    assert first_served[("download-recording-file", "206")] > 0
    assert (
        first_served[("get-recording-metadata", "404")]
        + first_served[("get-recording-urls", "404")]
        > 0
    ), first_served
    assert any(status == "503" for _, status in first_served), first_served
    assert second_served and {status for _, status in second_served} == {"401"}, second_served

    # What the mount counted is what the server answered, the worker's downloads too:
    # less, for an operation, no more than the requests the mount gave up on.
    assert statuses == mount_statuses(document)
    server = first_served + second_served
    counted = answered(statuses - start)
    assert counted <= server, (counted, server)
    unread = per_operation(server - counted)
    for op, count in unread.items():
        assert count <= statuses[op, "cancelled"], (op, server, statuses)
    # Requests that got no answer (the server down) are counted, and only the mount knows.
    assert statuses[("download-recording-file", "no_answer")] > 0, statuses
    # Every request started has ended, under one status or another.
    for op, count in document["requests"].items():
        assert counters[f"requests {op}"] == count
        assert sum(n for (o, _), n in statuses.items() if o == op) == count, (op, statuses)

    # Refused requests are errors (`amigofs stats` once said "errors: 0" after 401s):
    # each 401 the mount read, never retried, is one operation that failed.
    refused = sum(n for (_, status), n in statuses.items() if status == "401")
    assert refused > 0
    assert counters["errors"] == document["errors"]
    assert document["errors"] - before_401["errors"] == refused
    assert f"errors:           {document['errors']} " in text, text
    # The text lists each operation's requests by status too.
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    for (op, status), count in statuses.items():
        shown = "no answer" if status == "no_answer" else status
        assert f"{shown}: {count}" in lines[op], text
