"""The emulator at the scale of real workspaces (issue 11): a million calls made on demand.

What a client notices: a 1,000,000-call workspace is up in seconds and stays small, every page
of a walk is consistent with every other, date filters return exactly the calls of their
dates, any call answers by SID, and new calls arrive at the head, shifting offsets.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest

from amigofs.emulator.data import Call, Dataset
from tests.emulator_proc import EmulatorProc, running_emulator

MILLION = 1_000_000
PAGE = 100


def _page(
    client: httpx.Client, emu: EmulatorProc, workspace_id: str, offset: int, **params: Any
) -> dict[str, Any]:
    response = client.get(
        f"{emu.url}/v1/{workspace_id}/calls",
        params={"limit": PAGE, "continuation_token": offset, **params},
        headers=emu.auth_headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _walk(
    client: httpx.Client, emu: EmulatorProc, workspace_id: str, start: int, stop: int | None,
    **params: Any,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The pages from offset ``start`` following continuation tokens, until ``stop`` or the end."""
    offset: int | None = start
    while offset is not None and (stop is None or offset < stop):
        body = _page(client, emu, workspace_id, offset, **params)
        yield body
        token = body["continuation_token"]
        assert token is None or token == offset + PAGE
        offset = token


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_million_call_workspace_starts_fast_stays_small_and_pages_quickly() -> None:
    began = time.monotonic()
    with running_emulator(workspaces=1, calls_per_workspace=MILLION, archived_calls=2) as emu:
        start_seconds = time.monotonic() - began
        workspace_id = emu.data.workspaces[0].id
        calls = emu.data.calls(workspace_id)
        with httpx.Client(timeout=10.0) as client:
            page_seconds = []
            for offset in (0, 100, 250_000, 500_000, 999_900, len(calls) - 1):
                asked = time.monotonic()
                body = _page(client, emu, workspace_id, offset)
                page_seconds.append(time.monotonic() - asked)
                assert body["total"] == MILLION + 4  # and the 2 + 2 calls without a recording
                expected = [c.summary for c in calls[offset : offset + PAGE]]
                assert body["items"] == expected
                assert body["has_more"] == (offset + PAGE < len(calls))
            oldest = calls[-1]
            assert oldest.recording is not None and oldest.recording.archived
            assert oldest.call_sid is not None
            archived = client.get(
                f"{emu.url}/v1/{workspace_id}/recordings/{oldest.call_sid}/metadata",
                headers=emu.auth_headers,
            )
            assert archived.status_code == 202
            rss = _rss_kib(emu.process.pid)
        print(
            f"\n1M calls: up in {start_seconds:.2f} s, RSS {rss / 1024:.0f} MiB, "
            f"page median {statistics.median(page_seconds) * 1000:.1f} ms"
        )
        assert start_seconds < 10.0
        assert rss < 200 * 1024, f"VmRSS {rss} KiB"
        assert max(page_seconds) < 2.0


def test_eight_concurrent_pagers_see_each_call_of_100000_exactly_once() -> None:
    count = 100_000 + 4
    pagers = 8
    share = -(-count // pagers // PAGE) * PAGE  # offsets per pager, whole pages
    with running_emulator(workspaces=1, calls_per_workspace=100_000) as emu:
        workspace_id = emu.data.workspaces[0].id

        def walk(first: int) -> list[dict[str, Any]]:
            with httpx.Client(timeout=30.0) as client:
                items = []
                for body in _walk(client, emu, workspace_id, first, first + share):
                    assert body["total"] == count
                    items += body["items"]
                return items

        with ThreadPoolExecutor(pagers) as pool:
            parts = list(pool.map(walk, range(0, pagers * share, share)))
    listing = [item for part in parts for item in part]
    assert len(listing) == count
    assert len({item["entity_id"] for item in listing}) == count
    sids = [item["call_sid"] for item in listing if item["call_sid"] is not None]
    assert len(sids) == len(set(sids)) == count - 2
    assert sum(1 for item in listing if item["has_recording"] is False) == 2
    starts = [item["started_at"] for item in listing]
    assert starts == sorted(starts, reverse=True) and len(set(starts)) == count
    # The pages are the ground truth the tests compute, at a few places along the list.
    calls = emu.data.calls(workspace_id)
    for position in (0, 1, 12_345, 50_000, count - 1):
        assert listing[position] == calls[position].summary


def _brute_force(calls: list[Call], date_from: date | None, date_to: date | None) -> list[str]:
    return [
        str(c.summary["entity_id"])
        for c in calls
        if (date_from is None or c.started_at.date() >= date_from)
        and (date_to is None or c.started_at.date() <= date_to)
    ]


def test_date_filters_return_exactly_the_calls_in_range() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=20_000, null_sid_calls=5, no_recording_calls=5
    ) as emu:
        workspace_id = emu.data.workspaces[0].id
        calls = list(emu.data.calls(workspace_id))
        newest, oldest = calls[0].started_at.date(), calls[-1].started_at.date()
        assert (newest - oldest).days >= 5  # the filters have days to choose from
        middle = oldest + (newest - oldest) / 2
        ranges: list[tuple[date | None, date | None]] = [
            (None, None),
            (middle, None),
            (None, middle),
            (middle, middle),
            (oldest, oldest),
            (newest, newest),
            (oldest + timedelta(days=1), newest - timedelta(days=1)),
            (newest + timedelta(days=1), None),
            (None, oldest - timedelta(days=1)),
            (middle, middle - timedelta(days=1)),
        ]
        with httpx.Client(timeout=10.0) as client:
            for date_from, date_to in ranges:
                params = {
                    key: value.isoformat()
                    for key, value in (("date_from", date_from), ("date_to", date_to))
                    if value is not None
                }
                expected = _brute_force(calls, date_from, date_to)
                got: list[str] = []
                for body in _walk(client, emu, workspace_id, 0, None, **params):
                    assert body["total"] == len(expected), (date_from, date_to)
                    got += [item["entity_id"] for item in body["items"]]
                assert got == expected, (date_from, date_to)


def test_any_call_of_a_million_answers_by_sid() -> None:
    with running_emulator(
        workspaces=2,
        calls_per_workspace=MILLION,
        bad_metadata=1,
        archived_calls=1,
        long_calls=1,
        max_duration=30.0,
    ) as emu:
        first, second = (ws.id for ws in emu.data.workspaces)
        calls = emu.data.calls(first)
        recorded = [c for c in calls[:5] if c.recording is not None]
        assert recorded[0].recording is not None
        assert recorded[0].recording.metadata_fault == "truncated"  # the newest is broken
        positions = [5, 6, 333_333, 654_321, 999_990]
        with httpx.Client(base_url=emu.url, headers=emu.auth_headers, timeout=10.0) as client:
            for position in positions:
                call = calls[position]
                rec = call.recording
                if rec is None:
                    continue
                base = f"/v1/{first}/recordings/{rec.call_sid}"
                metadata = client.get(f"{base}/metadata")
                assert metadata.status_code == 200
                assert metadata.content == rec.metadata_bytes
                urls = client.get(f"{base}/urls").json()
                for name, key in zip(
                    rec.filenames, ("inbound_url", "outbound_url", "metadata_url"), strict=True
                ):
                    assert urls[key].endswith(f"/download/{name}")
                name = rec.filenames[1]
                size = emu.data.file_size(first, rec.call_sid, name)
                span = (size // 3, size // 3 + 100_000)
                body = client.get(
                    f"{base}/download/{name}", headers={"Range": f"bytes={span[0]}-{span[1] - 1}"}
                )
                assert body.status_code == 206
                assert body.content == emu.data.read_range(first, rec.call_sid, name, *span)
                # A SID names one call of one workspace: the other workspace does not know it.
                assert (
                    client.get(f"/v1/{second}/recordings/{rec.call_sid}/metadata").status_code
                    == 404
                )
            # SIDs that are not ours, or not any more in canonical form, name nothing.
            sid = str(calls[7].call_sid)
            flipped = sid[:-1] + ("0" if sid[-1] != "0" else "1")
            for other in ("CA" + "0" * 32, "CA" + sid[2:].upper(), flipped):
                assert client.get(f"/v1/{first}/recordings/{other}/metadata").status_code == 404
            oldest = calls[-1]
            assert oldest.call_sid is not None
            assert client.get(f"/v1/{first}/recordings/{oldest.call_sid}/urls").status_code == 202


def _new_calls_check(
    emu: EmulatorProc, workspace_id: str, added: int, before: list[Any], total: int
) -> None:
    """The listing now starts with ``added`` new calls, then the old listing (``before``, its
    first pages; ``total`` calls) shifted."""
    with httpx.Client(timeout=10.0) as client:
        body = _page(client, emu, workspace_id, 0)
        shifted = _page(client, emu, workspace_id, added)
        assert body["total"] == total + added
        new = body["items"][:added]
        old_sids = {item["call_sid"] for item in before}
        old_ids = {item["entity_id"] for item in before}
        assert all(item["call_sid"] not in old_sids and item["entity_id"] not in old_ids
                   for item in new)  # fmt: skip
        assert all(item["started_at"] > before[0]["started_at"] for item in new)
        starts = [item["started_at"] for item in new]
        assert starts == sorted(starts, reverse=True) and len(set(starts)) == len(starts)
        assert shifted["items"] == before[:PAGE]
        # The new calls are recordings like any other, and the ground truth knows them.
        data: Dataset = emu.synced_data()
        assert body["items"] == [c.summary for c in data.calls(workspace_id)[:PAGE]]
        newest = data.calls(workspace_id)[0].recording
        assert newest is not None
        response = client.get(
            f"{emu.url}/v1/{workspace_id}/recordings/{newest.call_sid}/download/"
            f"{newest.filenames[0]}",
            headers={**emu.auth_headers, "Range": "bytes=0-9999"},
        )
        assert response.status_code == 206
        assert response.content == data.read_range(
            workspace_id, newest.call_sid, newest.filenames[0], 0, 10_000
        )


@pytest.mark.parametrize("calls", [25, 20_000])
def test_add_calls_puts_new_calls_first_and_shifts_offsets(calls: int) -> None:
    with running_emulator(workspaces=2, calls_per_workspace=calls) as emu:
        first, second = (ws.id for ws in emu.data.workspaces)
        with httpx.Client(timeout=10.0) as client:
            before = [
                item for body in _walk(client, emu, first, 0, 3 * PAGE) for item in body["items"]
            ]
            total = _page(client, emu, first, 0)["total"]
        before_second = emu.data.calls(second)[0].summary
        state = emu.control(add_calls={first: 7})
        assert state["added_calls"] == {first: 7, second: 0}
        assert state["calls"][first] == total + 7
        _new_calls_check(emu, first, 7, before, total)
        with httpx.Client(timeout=10.0) as client:
            assert _page(client, emu, second, 0)["items"][0] == before_second
        emu.control(add_calls=3)
        _new_calls_check(emu, first, 10, before, total)


def test_new_calls_per_second_arrive_while_it_runs() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=20_000) as emu:
        workspace_id = emu.data.workspaces[0].id
        with httpx.Client(timeout=10.0) as client:
            before = _page(client, emu, workspace_id, 0)["items"]
            emu.control(new_calls_per_second=200.0)
            deadline = time.monotonic() + 10.0
            while emu.control()["added_calls"][workspace_id] < 50:
                assert time.monotonic() < deadline, "no new calls in time"
                time.sleep(0.01)  # between polls of the condition
            added = emu.control(new_calls_per_second=0.0)["added_calls"][workspace_id]
            assert emu.control()["added_calls"][workspace_id] == added  # the clock stopped
            body = _page(client, emu, workspace_id, added)
            assert body["items"] == before and body["total"] == 20_004 + added
        head = emu.synced_data().calls(workspace_id)[0]
        assert datetime.fromisoformat(str(head.summary["started_at"])) > datetime.fromisoformat(
            str(before[0]["started_at"])
        )
