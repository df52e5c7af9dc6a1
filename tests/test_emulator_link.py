"""The emulator models a link (issue 13): one uplink shared by every response, a cap on requests
in flight at the vendor's proxy (queue or 429), and TLS with a certificate made at start.

Timings are measured by the client and checked only as bounds with wide margins.
"""

from __future__ import annotations

import argparse
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from amigofs.emulator import cli
from amigofs.emulator.config import LINK_PROFILES
from amigofs.emulator.data import Recording
from tests.emulator_proc import EmulatorProc, running_emulator

MB = 1_000_000
TWO_MB = 2 * MB
# Outbound PCM is 32,000 bytes a second: 70 s of it holds more than 2 MB.
LONG_ENOUGH = {"min_duration": 70.0, "max_duration": 80.0}
NO_EXTRAS = {"null_sid_calls": 0, "no_recording_calls": 0}


def _timed_download(emu: EmulatorProc, rec: Recording, start_together: threading.Barrier | None):
    """(seconds, bytes) of the first 2 MB of a call's outbound file, as the client sees them."""
    name = rec.filenames[1]
    with httpx.Client(base_url=emu.url, headers=emu.auth_headers, timeout=30.0) as client:
        # Open the connection first, so the time is the body's, not the handshake's.
        client.get(f"/v1/{rec.workspace_id}/recordings/{rec.call_sid}/urls").raise_for_status()
        if start_together is not None:
            start_together.wait(timeout=10.0)
        began = time.monotonic()
        response = client.get(
            f"/v1/{rec.workspace_id}/recordings/{rec.call_sid}/download/{name}",
            headers={"Range": f"bytes=0-{TWO_MB - 1}"},
        )
        seconds = time.monotonic() - began
    assert response.status_code == 206
    return seconds, response.content


def test_link_bandwidth_is_one_budget_shared_by_concurrent_downloads() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=2, link_bandwidth=2 * MB, **LONG_ENOUGH, **NO_EXTRAS
    ) as emu:
        first, second = emu.data.recordings()
        expected = [
            emu.data.read_range(r.workspace_id, r.call_sid, r.filenames[1], 0, TWO_MB)
            for r in (first, second)
        ]
        alone, body = _timed_download(emu, first, None)
        assert body == expected[0]
        # 2 MB at 2 MB/s: about a second.
        assert 0.6 < alone < 1.8, alone

        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda r: _timed_download(emu, r, barrier), (first, second)))
        assert [content for _, content in results] == expected
        # Together they take about 2 s, each getting about half the rate (about 1 MB/s): had
        # each its own 2 MB/s, both would be done in about 1 s.
        for seconds, _ in results:
            assert 1.5 < seconds < 4.0, results
            assert TWO_MB / seconds < 1.4 * MB


def _list_workspaces(emu: EmulatorProc) -> httpx.Response:
    with httpx.Client(base_url=emu.url, headers=emu.auth_headers, timeout=30.0) as client:
        return client.get("/v1/workspaces")


def test_max_connections_queues_requests_beyond_the_cap() -> None:
    latency = 0.4
    with running_emulator(workspaces=1, calls_per_workspace=1, latency=latency) as emu:
        # Set at run time, as a benchmark may.
        assert emu.control(max_connections=2)["over_capacity"] == "queue"
        # All six at once, whenever the pool's threads start on a busy machine.
        together = threading.Barrier(6)

        def ask(_: int) -> httpx.Response:
            together.wait(timeout=30)
            return _list_workspaces(emu)

        began = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(ask, range(6)))
        elapsed = time.monotonic() - began
        assert [r.status_code for r in responses] == [200] * 6
        link = emu.link_stats()
        assert link["peak_in_flight"] == 2 and link["queued"] == 4 and link["rejected"] == 0
        assert link["in_flight"] == 0
        # Six requests of 0.4 s through two places: three rounds.
        assert elapsed > 3 * latency * 0.9, elapsed


def _wait_in_flight(emu: EmulatorProc, count: int) -> None:
    deadline = time.monotonic() + 10.0
    while emu.link_stats()["in_flight"] != count:
        assert time.monotonic() < deadline, emu.link_stats()
        time.sleep(0.01)  # between polls of the condition


def test_max_connections_in_429_mode_refuses_with_retry_after() -> None:
    with running_emulator(
        workspaces=1,
        calls_per_workspace=1,
        latency=2.0,
        max_connections=2,
        over_capacity="429",
        retry_after=7,
    ) as emu:
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(_list_workspaces, emu) for _ in range(2)]
            _wait_in_flight(emu, 2)
            for _ in range(3):
                asked = time.monotonic()
                refused = _list_workspaces(emu)
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "7"
                assert time.monotonic() - asked < 1.5  # refused at once, not after the latency
            assert [future.result().status_code for future in held] == [200, 200]
        link = emu.link_stats()
        assert link["rejected"] == 3 and link["peak_in_flight"] == 2 and link["queued"] == 0
        emu.control(latency=0.0)
        assert _list_workspaces(emu).status_code == 200  # places free again


def test_tls_serves_the_same_bytes_to_a_client_trusting_the_certificate() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=2, tls=True) as emu:
        assert emu.url.startswith("https://127.0.0.1:")
        assert emu.certificate is not None
        rec = next(emu.data.recordings())
        base = f"/v1/{rec.workspace_id}/recordings/{rec.call_sid}"
        name = rec.filenames[1]
        with httpx.Client(
            base_url=emu.url, headers=emu.auth_headers, verify=emu.ssl_context(), timeout=10.0
        ) as client:
            assert client.get(f"{base}/metadata").content == rec.metadata_bytes
            response = client.get(f"{base}/download/{name}", headers={"Range": "bytes=100-50099"})
            assert response.status_code == 206
            assert response.content == emu.data.read_range(
                rec.workspace_id, rec.call_sid, name, 100, 50_100
            )
        # Certificate checks on, without the emulator's certificate: refused at the handshake.
        with (
            httpx.Client(base_url=emu.url, headers=emu.auth_headers, timeout=10.0) as untrusting,
            pytest.raises(httpx.ConnectError) as refused,
        ):
            untrusting.get(f"{base}/metadata")
        cause = refused.value.__cause__ or refused.value.__context__
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        assert cause is not None, repr(refused.value)
        assert emu.stats()["requests"] == {
            "get-recording-metadata": 1,
            "download-recording-file": 1,
        }


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
