"""The read path: exact bytes under concurrency, what is fetched, and the disk cache."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs.cache.block_format import BLOCKS_DIR, FileKey, block_path
from amigofs.daemon.mount_table import is_mounted
from amigofs.emulator.data import Recording
from amigofs.fs.wav import audio_layout
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import mounted, public_tempdir, unmount_guards, wait_until, workspace_names

BLOCK = 256 << 10


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    # Six ten-minute calls: 4.8 MB inbound and 19.2 MB outbound each, both storage forms.
    with running_emulator(
        workspaces=1, calls_per_workspace=6, long_calls=6, long_duration=600.0
    ) as emu:
        yield emu


class Expected:
    """What a presented file must contain: its header, then the stored bytes."""

    def __init__(self, emulator: EmulatorProc, recording: Recording, presented: str) -> None:
        self.emulator = emulator
        self.recording = recording
        inbound = presented == "inbound.wav"
        self.stored_name = recording.inbound_filename if inbound else recording.outbound_filename
        metadata = recording.metadata
        self.stored_size = emulator.data.file_size(
            recording.workspace_id, recording.call_sid, self.stored_name
        )
        self.header = audio_layout(
            self.stored_name,
            str(metadata["inbound_format" if inbound else "outbound_format"]),
            int(metadata["inbound_sample_rate" if inbound else "outbound_sample_rate"]),  # type: ignore[call-overload]
            self.stored_size,
        ).header
        self.size = len(self.header) + self.stored_size
        self.relative = Path(recording.workspace_id, recording.call_sid, presented)
        self.download_path = f"/v1/{recording.workspace_id}/recordings/{recording.call_sid}/download/{self.stored_name}"

    def bytes(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        head = self.header[start:end]
        stored_start = max(start - len(self.header), 0)
        stored_end = end - len(self.header)
        if stored_end <= stored_start:
            return head
        return head + self.emulator.data.read_range(
            self.recording.workspace_id,
            self.recording.call_sid,
            self.stored_name,
            stored_start,
            stored_end,
        )


def expected_files(emulator: EmulatorProc) -> list[Expected]:
    return [
        Expected(emulator, recording, name)
        for recording in emulator.data.recordings()
        for name in ("inbound.wav", "outbound.wav")
    ]


def audio_downloads(emulator: EmulatorProc) -> dict[str, int]:
    served: dict[str, int] = emulator.stats()["download_bytes"]
    return {path: n for path, n in served.items() if not path.endswith("/metadata.json")}


def read_all(path: Path, chunk: int = 1 << 20) -> bytes:
    out = bytearray()
    with open(path, "rb", buffering=0) as f:
        while piece := f.read(chunk):
            out += piece
    return bytes(out)


def test_eight_concurrent_readers_get_exact_bytes(emulator: EmulatorProc) -> None:
    files = expected_files(emulator)
    assert {f.recording.storage for f in files} == {"wav", "raw"}
    chosen = [files[0], files[1], files[3], files[6]]  # inbound and outbound, both forms
    failures: list[str] = []
    compared = [0]
    lock = threading.Lock()
    with mounted(emulator.url, emulator.api_key) as mnt:

        def reader(number: int) -> None:
            rng = random.Random(number)
            target = chosen[number % len(chosen)]  # two readers on each file
            try:
                with open(mnt.path / target.relative, "rb", buffering=0) as f:
                    if number < 4:  # sequential, in odd-sized steps
                        position = 0
                        while position < target.size:
                            size = rng.randrange(1, 700_000)
                            data = f.read(size)
                            if data != target.bytes(position, position + size):
                                failures.append(f"reader {number}: sequential at {position}")
                                return
                            position += len(data)
                            with lock:
                                compared[0] += len(data)
                    else:  # random offsets and sizes, interleaved with the others
                        for _ in range(60):
                            offset = rng.randrange(0, target.size)
                            size = rng.randrange(1, 1 << 20)
                            data = os.pread(f.fileno(), size, offset)
                            if data != target.bytes(offset, offset + size):
                                failures.append(f"reader {number}: pread {size} at {offset}")
                                return
                            with lock:
                                compared[0] += len(data)
            except OSError as exc:
                failures.append(f"reader {number}: {exc}")

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a reader hung"
    assert not failures, failures
    assert compared[0] > 4 * 19_000_000


def test_sequential_read_fetches_each_byte_once(emulator: EmulatorProc) -> None:
    target = expected_files(emulator)[1]  # an outbound file
    with mounted(emulator.url, emulator.api_key) as mnt:
        emulator.reset_stats()
        assert read_all(mnt.path / target.relative) == target.bytes(0, target.size)
        assert audio_downloads(emulator) == {target.download_path: target.stored_size}


def test_reread_after_remount_comes_from_disk(emulator: EmulatorProc) -> None:
    targets = expected_files(emulator)[2:4]
    cache = public_tempdir("amigofs-cache-")
    with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
        for target in targets:
            assert read_all(mnt.path / target.relative) == target.bytes(0, target.size)
    emulator.reset_stats()
    with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
        for target in targets:
            assert read_all(mnt.path / target.relative) == target.bytes(0, target.size)
        assert emulator.stats()["audio_bytes"] == 0
    for path in cache.rglob("*"):
        assert (path.stat().st_mode & 0o777) == (0o700 if path.is_dir() else 0o600), path


def block_file(cache: Path, target: Expected, index: int) -> Path:
    recording = target.recording
    key = FileKey(
        recording.workspace_id, recording.call_sid, target.stored_name, target.stored_size
    )
    return cache / block_path(key.relative_dir, index)


def test_damaged_or_truncated_cache_is_fetched_again(emulator: EmulatorProc) -> None:
    damaged, truncated = expected_files(emulator)[4:6]
    cache = public_tempdir("amigofs-cache-")
    with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
        for target in (damaged, truncated):
            assert read_all(mnt.path / target.relative) == target.bytes(0, target.size)
    # Flip bytes inside block 5 of one file; cut block 3 of the other file short.
    with open(block_file(cache, damaged, 5), "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\x00\xff\x00" * 16)
    os.truncate(block_file(cache, truncated, 3), 17)
    emulator.reset_stats()
    with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
        for target in (damaged, truncated):
            assert read_all(mnt.path / target.relative) == target.bytes(0, target.size)
        # Only the damaged and the truncated block again.
        assert audio_downloads(emulator) == {
            damaged.download_path: BLOCK,
            truncated.download_path: BLOCK,
        }
        assert "damaged" in mnt.log()


def test_killed_mid_read_then_remounted_serves_exact_bytes(emulator: EmulatorProc) -> None:
    target = expected_files(emulator)[7]
    cache = public_tempdir("amigofs-cache-")
    # A slow server, so that the kill lands while blocks are being written.
    emulator.control(bandwidth=8_000_000)
    try:
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            emulator.reset_stats()
            reader = threading.Thread(target=lambda: _read_quietly(mnt.path / target.relative))
            reader.start()
            wait_until(lambda: emulator.stats()["audio_bytes"] > 4 * BLOCK, 30, "the read to start")
            mnt.process.send_signal(signal.SIGKILL)
            mnt.process.wait(10)
            assert emulator.stats()["audio_bytes"] < target.stored_size, "read done before the kill"
            # Nothing is left behind: not the kernel mount (auto_unmount, or the unmount
            # guard where fusermount3 looked too early), not the guard.
            wait_until(lambda: not is_mounted(mnt.path), 10, "the killed mount to go away")
            wait_until(lambda: not unmount_guards(mnt.path), 10, "the unmount guard to exit")
            reader.join(30)
            assert not reader.is_alive(), "a read of the killed mount hangs"
    finally:
        emulator.control(bandwidth=None)
    with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
        assert read_all(mnt.path / target.relative) == target.bytes(0, target.size)


def _read_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):  # the mount is killed under it: ENOTCONN
        read_all(path)


def cache_bytes(cache: Path) -> int:
    """What the block files in a cache dir take on disk at this moment."""
    used = 0
    for path in (cache / BLOCKS_DIR).rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
            st = path.stat()
            if stat.S_ISREG(st.st_mode):
                used += st.st_blocks * 512
    return used


def test_cache_never_grows_past_cache_size(emulator: EmulatorProc) -> None:
    limit = 24 << 20
    cache = public_tempdir("amigofs-cache-")
    targets = [f for f in expected_files(emulator) if f.relative.name == "outbound.wav"][:3]
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            used = cache_bytes(cache)
            peak[0] = max(peak[0], used)
            done.wait(0.01)

    with mounted(
        emulator.url, emulator.api_key, "--cache-dir", str(cache), "--cache-size", "24M"
    ) as mnt:
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            for target in targets:  # 3 x 19 MB through a 24 MiB cache
                assert read_all(mnt.path / target.relative) == target.bytes(0, target.size)
        finally:
            done.set()
            watcher.join()
    assert 0 < peak[0] <= limit, f"the cache reached {peak[0]} bytes"


def test_remount_shows_the_tree_from_disk_without_the_api() -> None:
    cache = public_tempdir("amigofs-cache-")
    with running_emulator(workspaces=2, calls_per_workspace=5) as emulator:
        target = Expected(emulator, next(emulator.data.recordings()), "outbound.wav")
        call_dir = target.relative.parent
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            tree = {
                ws: sorted(os.listdir(mnt.path / ws)) for ws in sorted(workspace_names(mnt.path))
            }
            sizes = {
                name: os.stat(mnt.path / call_dir / name).st_size
                for name in os.listdir(mnt.path / call_dir)
            }
            content = read_all(mnt.path / target.relative)
        url, key = emulator.url, emulator.api_key
    # The server is gone now: what the first mount saw is still there, from disk.
    with mounted(url, key, "--cache-dir", str(cache), "--timeout", "5") as mnt:
        assert {
            ws: sorted(os.listdir(mnt.path / ws)) for ws in sorted(workspace_names(mnt.path))
        } == tree
        assert {
            n: os.stat(mnt.path / call_dir / n).st_size for n in os.listdir(mnt.path / call_dir)
        } == sizes
        assert read_all(mnt.path / target.relative) == content == target.bytes(0, target.size)
