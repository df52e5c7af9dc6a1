"""The emulator's model of a link (issue 13), in virtual time: one uplink shared by every
response, a cap on requests in flight at the vendor's proxy (queue or 429), and the link
profiles' options. The benchmarks' figures over the "internet" profile rest on this arithmetic;
the emulator runs in-process (tests/unit/emulator_app.py), so durations are exact sums on trio's
virtual clock, not wall-clock bounds.
"""

from __future__ import annotations

import argparse

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from amigofs.emulator import cli
from amigofs.emulator.config import LINK_PROFILES
from amigofs.emulator.data import Recording
from amigofs.emulator.link import BURST_SECONDS, SharedLink
from tests.unit.emulator_app import InProcessEmulator, in_process_emulator

MB = 1_000_000
TWO_MB = 2 * MB
# Outbound PCM is 32,000 bytes a second: 70 s of it holds more than 2 MB.
LONG_ENOUGH = {"min_duration": 70.0, "max_duration": 80.0}
NO_EXTRAS = {"null_sid_calls": 0, "no_recording_calls": 0}


async def _download(emu: InProcessEmulator, rec: Recording) -> tuple[float, bytes]:
    """(virtual seconds, bytes) of the first 2 MB of a call's outbound file."""
    began = trio.current_time()
    response = await emu.client.get(
        f"/v1/{rec.workspace_id}/recordings/{rec.call_sid}/download/{rec.filenames[1]}",
        headers={"Range": f"bytes=0-{TWO_MB - 1}"},
    )
    assert response.status_code == 206
    return trio.current_time() - began, response.content


async def test_link_bandwidth_is_one_budget_shared_by_concurrent_downloads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with in_process_emulator(
        workspaces=1, calls_per_workspace=2, link_bandwidth=2 * MB, **LONG_ENOUGH, **NO_EXTRAS
    ) as emu:
        first, second = emu.data.recordings()
        expected = [
            emu.data.read_range(r.workspace_id, r.call_sid, r.filenames[1], 0, TWO_MB)
            for r in (first, second)
        ]
        alone, body = await _download(emu, first)
        assert body == expected[0]
        # 2 MB at 2 MB/s: a second.
        assert alone == pytest.approx(1.0, abs=0.06), alone

        results: dict[int, tuple[float, bytes]] = {}

        async def download(index: int, rec: Recording) -> None:
            results[index] = await _download(emu, rec)

        async with trio.open_nursery() as nursery:
            for index, rec in enumerate((first, second)):
                nursery.start_soon(download, index, rec)
        assert [results[i][1] for i in (0, 1)] == expected
        # Together they take about 2 s, each getting half the rate: had each its own 2 MB/s,
        # both would be done in about 1 s.
        for seconds, _ in results.values():
            assert seconds == pytest.approx(2.0, abs=0.1), results.keys()


@settings(max_examples=50, deadline=None)
@given(
    rate=st.integers(1_000, 10_000_000),
    bodies=st.lists(st.integers(0, 3_000_000), min_size=1, max_size=6),
    idle=st.floats(0.0, 1.0),
)
def test_the_link_sends_at_its_rate_and_no_faster(
    rate: int, bodies: list[int], idle: float
) -> None:
    """However many bodies share it, chunk by chunk, the last byte leaves when the link has
    carried them all at its rate, less the burst an idle link saves up (at most BURST_SECONDS)."""
    chunk = SharedLink.chunk_bytes(rate, 1 << 20)
    link = SharedLink(rate)
    finished: list[float] = []

    async def body(size: int) -> None:
        for _ in range(0, size, chunk):
            await link.take(chunk)
        finished.append(trio.current_time())

    async def main() -> float:
        await trio.sleep(idle)
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for size in bodies:
                nursery.start_soon(body, size)
        return began

    began = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    sent = sum(-(-size // chunk) * chunk for size in bodies)
    # Less than a burst's worth after an idle spell goes out at once.
    expected = max(0.0, sent / rate - min(idle, BURST_SECONDS))
    assert max(finished) - began == pytest.approx(expected)


async def test_max_connections_queues_requests_beyond_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    latency = 0.4
    async with in_process_emulator(workspaces=1, calls_per_workspace=1, latency=latency) as emu:
        # Set at run time, as a benchmark may.
        assert (await emu.control(max_connections=2))["over_capacity"] == "queue"
        statuses: list[int] = []

        async def ask() -> None:
            statuses.append((await emu.client.get("/v1/workspaces")).status_code)

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(ask)
        assert statuses == [200] * 6
        link = await emu.link_stats()
        assert link["peak_in_flight"] == 2 and link["queued"] == 4 and link["rejected"] == 0
        assert link["in_flight"] == 0
        # Six requests of 0.4 s through two places: three rounds.
        assert trio.current_time() - began == pytest.approx(3 * latency)


async def test_max_connections_in_429_mode_refuses_at_once_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with in_process_emulator(
        workspaces=1, calls_per_workspace=1, latency=2.0, max_connections=2,
        over_capacity="429", retry_after=7,
    ) as emu:  # fmt: skip
        held: list[int] = []

        async def hold() -> None:
            held.append((await emu.client.get("/v1/workspaces")).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(hold)
            await trio.testing.wait_all_tasks_blocked()
            assert (await emu.link_stats())["in_flight"] == 2
            for _ in range(3):
                asked = trio.current_time()
                refused = await emu.client.get("/v1/workspaces")
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "7"
                assert trio.current_time() == asked  # refused at once, not after the latency
        assert held == [200, 200]
        link = await emu.link_stats()
        assert link["rejected"] == 3 and link["peak_in_flight"] == 2 and link["queued"] == 0
        await emu.control(latency=0.0)
        assert (await emu.client.get("/v1/workspaces")).status_code == 200  # places free again


def _config(*argv: str) -> cli.EmulatorConfig:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.config_from_args(parser.parse_args(["--api-key", "k", *argv]))


def test_the_internet_link_profile_and_options_over_it() -> None:
    internet = _config("--link-profile", "internet")
    assert (internet.latency, internet.bandwidth, internet.link_bandwidth) == (
        0.05,
        3 * MB,
        24 * MB,
    )
    assert (internet.max_connections, internet.over_capacity) == (32, "queue")
    assert {name: getattr(internet, name) for name in LINK_PROFILES["internet"]} == (
        LINK_PROFILES["internet"]
    )
    tuned = _config("--link-profile", "internet", "--latency", "0.02", "--over-capacity", "429")
    assert (tuned.latency, tuned.over_capacity, tuned.max_connections) == (0.02, "429", 32)
    plain = _config()
    assert (plain.latency, plain.link_bandwidth, plain.max_connections, plain.tls) == (
        0.0, None, None, False,
    )  # fmt: skip
    knobs = {
        "link_bandwidth": 5 * MB,
        "max_connections": 4,
        "over_capacity": "429",
        "new_calls_per_second": 2.5,
        "tls": True,
    }
    again = _config(*cli.knob_arguments(knobs))
    assert {name: getattr(again, name) for name in knobs} == knobs
