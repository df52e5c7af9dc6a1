"""Load through a real mount: concurrent readers, many handles, a big workspace."""

from __future__ import annotations

import os
import random
import subprocess
import threading
from pathlib import Path

import pytest

from tests.emulator_proc import running_emulator
from tests.mounting import mounted, public_tempdir
from tests.reliability import ThreadResult, presented_bytes

TOOL_TIMEOUT = 120


@pytest.mark.parametrize(
    ("minutes", "cache_flags"),
    [
        pytest.param((0.5, 0.8), (), id="default-cache"),
        # ~160 MB of audio through a cache of a tenth of it: eviction all the way.
        pytest.param((16.7, 17.5), ("--cache-size", "16M"), id="cache-a-tenth-of-the-data"),
    ],
)
def test_32_concurrent_readers_across_8_files_are_byte_exact(
    minutes: tuple[float, float], cache_flags: tuple[str, ...]
) -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=4,
        min_duration=60 * minutes[0], max_duration=60 * minutes[1],
    ) as emulator:  # fmt: skip
        recordings = list(emulator.data.recordings())
        files = [(r, name) for r in recordings for name in ("inbound.wav", "outbound.wav")]
        assert len(files) == 8
        truth_dir = public_tempdir("amigofs-truth-")
        truths = []
        for index, (recording, name) in enumerate(files):
            truth = truth_dir / f"{index}.wav"
            truth.write_bytes(presented_bytes(emulator, recording, name))
            truths.append(truth)
        try:
            with mounted(emulator.url, emulator.api_key, "--timeout", "30", *cache_flags) as mnt:
                paths = [mnt.path / r.workspace_id / r.call_sid / n for r, n in files]
                start = threading.Barrier(16)

                def scattered(index: int) -> bytes:
                    # Reads the file in shuffled 100 kB pieces (not block-aligned), from a
                    # descriptor of its own, so readers overlap on the same blocks.
                    expected_size = truths[index % 8].stat().st_size
                    pieces = list(range(0, expected_size, 100_000))
                    random.Random(index).shuffle(pieces)
                    out = bytearray(expected_size)
                    try:
                        fd = os.open(paths[index % 8], os.O_RDONLY)
                    except BaseException:
                        start.abort()
                        raise
                    try:
                        start.wait(30)
                        for offset in pieces:
                            data = os.pread(fd, 100_000, offset)
                            out[offset : offset + len(data)] = data
                    finally:
                        os.close(fd)
                    return bytes(out)

                threads = [ThreadResult(lambda i=i: scattered(i)) for i in range(16)]
                cmps = [
                    subprocess.Popen(
                        ["cmp", str(paths[i % 8]), str(truths[i % 8])],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                    )
                    for i in range(16)
                ]
                errors = []
                broken = []
                for index, thread in enumerate(threads):
                    try:
                        assert thread.join(TOOL_TIMEOUT) == truths[index % 8].read_bytes(), index
                    except threading.BrokenBarrierError:
                        broken.append(index)  # another reader failed first: its error says why
                    except BaseException as exc:
                        errors.append(exc)
                if errors:
                    raise errors[0]
                assert not broken, f"readers {broken} never started: the barrier timed out"
                for index, proc in enumerate(cmps):
                    out, err = proc.communicate(timeout=TOOL_TIMEOUT)
                    assert proc.returncode == 0, (index, out, err)
                total = sum(t.stat().st_size for t in truths)
                served = emulator.stats()["audio_bytes"]
                print(f"\n32 readers, 8 files, {4 * total} bytes compared; {served} bytes served")
                if not cache_flags:
                    # Readers of one block share its download: not four downloads per file.
                    assert served <= 2 * total
                assert "Traceback" not in mnt.log()
        finally:
            for truth in truths:
                truth.unlink()
            truth_dir.rmdir()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def test_10000_opens_and_closes_leak_neither_memory_nor_sockets() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=10, max_duration=8.0) as emulator,
        mounted(emulator.url, emulator.api_key) as mnt,
    ):
        paths = [
            mnt.path / r.workspace_id / r.call_sid / name
            for r in emulator.data.recordings()
            for name in ("inbound.wav", "outbound.wav", "metadata.json")
        ]
        pid = mnt.process.pid

        def cycle(handles: int) -> None:
            # Batches of 500 open at once, each read a little, then all closed.
            for batch_start in range(0, handles, 500):
                fds = [os.open(paths[(batch_start + i) % len(paths)], os.O_RDONLY)
                       for i in range(min(500, handles - batch_start))]  # fmt: skip
                try:
                    for fd in fds:
                        assert len(os.pread(fd, 16, 0)) == 16
                finally:
                    for fd in fds:
                        os.close(fd)

        cycle(2000)  # warm-up: every call loaded, pools and caches at their working size
        rss_before, sockets_before = _rss_kib(pid), _sockets(pid)
        cycle(10_000)
        rss_after, sockets_after = _rss_kib(pid), _sockets(pid)
        print(
            f"\nVmRSS {rss_before} -> {rss_after} KiB, sockets {sockets_before} -> {sockets_after}"
        )
        # 10,000 handles that each left 200 bytes behind would add 2 MB.
        assert rss_after - rss_before < 1024, f"VmRSS grew {rss_after - rss_before} KiB"
        assert sockets_after <= sockets_before
        assert mnt.process.poll() is None


def test_a_workspace_of_10000_calls_lists_correctly() -> None:
    with running_emulator(
        workspaces=1,
        calls_per_workspace=10_000,
        null_sid_calls=3,
        no_recording_calls=3,
        max_duration=10.0,
    ) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        expected = sorted(r.call_sid for r in emulator.data.recordings())
        with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id) as mnt:
            emulator.reset_stats()  # not the check before mounting
            listing = subprocess.run(["ls", "-1", str(mnt.path / workspace_id)],
                                     capture_output=True, text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
            assert listing.returncode == 0, listing.stderr
            names = listing.stdout.split()
            assert len(names) == 10_000 and names == expected
            assert len(set(os.listdir(mnt.path / workspace_id))) == 10_000
            stats = emulator.stats()
            # 10,006 calls: 101 pages of 100, each fetched once; no per-call requests.
            assert stats["requests"] == {"list-calls": 101}, stats["requests"]
            oldest = emulator.data.calls(workspace_id)[-1]
            assert oldest.call_sid is not None
            assert (
                os.stat(mnt.path / workspace_id / oldest.call_sid).st_mtime
                == oldest.started_at.timestamp()
            )
