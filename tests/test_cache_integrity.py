"""The disk cache under pressure, sharing, damage, full disks, slow links and a dying
worker: every read returns the server's bytes or an error, never anything else.

Reads that must reach the mount (not the kernel's page cache, which keeps a FUSE
file's pages across opens) use O_DIRECT, which FUSE passes to the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import random
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from amigofs.cache.block_format import BLOCKS_DIR, FileKey
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    mount_command,
    mounted,
    public_tempdir,
    stop_process,
    tmpfs_at,
    wait_until,
    workspace_names,
)
from tests.reliability import ThreadResult, presented_bytes

TOOL_TIMEOUT = 300
BLOCK = 256 << 10


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def direct_read(path: Path, start: int = 0, length: int | None = None) -> bytes:
    """Bytes of a file read with O_DIRECT: from the mount, never the page cache.
    `start` must be a multiple of 4096."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        size = os.fstat(fd).st_size
        end = size if length is None else min(size, start + length)
        out = bytearray()
        buffer = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs
        with contextlib.closing(buffer):
            position = start
            while position < end:
                got = os.preadv(fd, [buffer], position)
                if got == 0:
                    break
                out += buffer[: min(got, end - position)]
                position += got
        return bytes(out)
    finally:
        os.close(fd)


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of `size` at a new directory, always unmounted afterwards."""
    where = Path(tempfile.mkdtemp(prefix="amigofs-tmpfs-"))
    try:
        with tmpfs_at(where, size):
            yield where
    finally:
        with contextlib.suppress(OSError):
            where.rmdir()


def worker_pids(mount_pid: int) -> list[int]:
    """The fetch worker processes of a mount process."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == mount_pid and b"amigofs.cache.worker" in argv:
            found.append(int(entry.name))
    return found


def outbound_truths(emulator: EmulatorProc) -> dict[str, str]:
    """sha256 of each call's outbound.wav as the mount must present it, by call dir."""
    return {
        f"{r.workspace_id}/{r.call_sid}": sha256(presented_bytes(emulator, r, "outbound.wav"))
        for r in emulator.data.recordings()
    }


def parallel_sha256(mount: Path, workspace: str, readers: int) -> dict[str, str]:
    """`ls */outbound.wav | xargs -P N -n 1 sha256sum`, as a user would run it."""
    result = subprocess.run(
        f"ls */outbound.wav | xargs -P {readers} -n 1 sha256sum",
        shell=True, cwd=mount / workspace, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sums = {}
    for line in result.stdout.splitlines():
        digest, name = line.split(maxsplit=1)
        sums[f"{workspace}/{name.removesuffix('/outbound.wav')}"] = digest
    return sums


# --- 1. eviction under a read -------------------------------------------------------------


def test_12_readers_through_a_cache_a_tenth_of_the_data_two_passes() -> None:
    # 12 calls of ~7 minutes: 12 x ~13.5 MB of outbound audio, ~160 MB, through 16 MiB.
    with running_emulator(
        workspaces=1, calls_per_workspace=12, min_duration=420.0, max_duration=440.0,
        null_sid_calls=0, no_recording_calls=0,
    ) as emulator:  # fmt: skip
        truths = outbound_truths(emulator)
        workspace = next(iter(truths)).split("/")[0]
        with mounted(emulator.url, emulator.api_key, "--cache-size", "16M") as mnt:
            for _ in range(2):
                assert parallel_sha256(mnt.path, workspace, 12) == truths
                # The second pass must reach the mount again, not the page cache.
                subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=True)
            assert "Traceback" not in mnt.log()


def test_random_reads_through_a_small_cache_match_the_server() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=6, min_duration=300.0, max_duration=320.0,
        null_sid_calls=0, no_recording_calls=0,
    ) as emulator:  # fmt: skip
        recordings = list(emulator.data.recordings())
        truths = {r.call_sid: presented_bytes(emulator, r, "outbound.wav") for r in recordings}
        with mounted(emulator.url, emulator.api_key, "--cache-size", "16M") as mnt:
            paths = {r.call_sid: mnt.path / r.workspace_id / r.call_sid / "outbound.wav"
                     for r in recordings}  # fmt: skip

            def reader(seed: int) -> int:
                rng = random.Random(seed)
                checked = 0
                for _ in range(40):
                    sid = rng.choice(list(truths))
                    truth = truths[sid]
                    start = rng.randrange(0, len(truth) // 4096) * 4096
                    length = rng.choice((4096, 100_000, BLOCK, 3 * BLOCK + 5000, 1 << 20))
                    got = direct_read(paths[sid], start, length)
                    assert got == truth[start : start + length], (sid, start, length)
                    checked += len(got)
                return checked

            threads = [ThreadResult(lambda seed=seed: reader(seed)) for seed in range(8)]
            assert all(t.join(TOOL_TIMEOUT) > 0 for t in threads)


# --- 2. two mounts, one cache dir -------------------------------------------------------------


def test_a_second_mount_on_the_same_cache_dir_refuses_and_the_first_keeps_serving() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=3) as emulator:
        recording = next(iter(emulator.data.recordings()))
        truth = presented_bytes(emulator, recording, "outbound.wav")
        relative = Path(recording.workspace_id) / recording.call_sid / "outbound.wav"
        with mounted(emulator.url, emulator.api_key) as first:
            assert direct_read(first.path / relative) == truth
            second_point = public_tempdir("amigofs-mnt-")
            try:
                result = subprocess.run(
                    mount_command(emulator.url, second_point, first.cache_dir),
                    env={**os.environ, "AMIGO_API_KEY": emulator.api_key},
                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                )  # fmt: skip
            finally:
                subprocess.run(["fusermount3", "-u", "-z", str(second_point)],
                               capture_output=True, check=False)  # fmt: skip
                second_point.rmdir()
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert "in use by another amigofs mount" in lines[0]
            assert str(first.path) in lines[0]  # names the other mount
            assert direct_read(first.path / relative) == truth


def test_two_mounts_with_the_default_cache_dir_do_not_share_it() -> None:
    home = public_tempdir("amigofs-xdg-")
    env = {"XDG_CACHE_HOME": str(home)}
    with running_emulator(workspaces=1, calls_per_workspace=3) as emulator:
        command = [a for a in mount_command(emulator.url, public_tempdir("amigofs-mnt-"), home)]
        # Both without --cache-dir: the default, $XDG_CACHE_HOME/amigofs.
        del command[command.index("--cache-dir") : command.index("--cache-dir") + 2]
        first = subprocess.Popen(command, env={**os.environ, **env,
                                 "AMIGO_API_KEY": emulator.api_key},
                                 stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        point = Path(command[command.index("mount") + 1])
        try:
            from amigofs.daemon.mount_table import is_mounted

            wait_until(lambda: is_mounted(point) or first.poll() is not None, 30, "the mount")
            assert first.poll() is None
            second = public_tempdir("amigofs-mnt-")
            command2 = list(command)
            command2[command2.index("mount") + 1] = str(second)
            try:
                result = subprocess.run(command2, env={**os.environ, **env,
                                        "AMIGO_API_KEY": emulator.api_key},
                                        stdin=subprocess.DEVNULL, capture_output=True,
                                        text=True, timeout=60)  # fmt: skip
            finally:
                subprocess.run(["fusermount3", "-u", "-z", str(second)], capture_output=True,
                               check=False)  # fmt: skip
                second.rmdir()
            assert result.returncode == 2
            assert "in use by another amigofs mount" in result.stderr
            assert workspace_names(point)  # the first still serves
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(point)], capture_output=True,
                           check=False)  # fmt: skip
            stop_process(first)
            with contextlib.suppress(OSError):
                point.rmdir()


# --- 3. cache files removed while mounted -----------------------------------------------------


def test_a_calls_cache_folder_removed_mid_read() -> None:
    # Half an hour of outbound audio (58 MB): what is read first, and what readahead
    # fetched after it, are far from the end, so the rest is still to be fetched.
    with running_emulator(
        workspaces=1, calls_per_workspace=2, min_duration=1800.0, max_duration=1850.0
    ) as emulator:
        recording = next(r for r in emulator.data.recordings())
        truth = presented_bytes(emulator, recording, "outbound.wav")
        relative = Path(recording.workspace_id) / recording.call_sid / "outbound.wav"
        with mounted(emulator.url, emulator.api_key) as mnt:
            half = 8 << 20  # read before the removal
            fd = os.open(mnt.path / relative, os.O_RDONLY | os.O_DIRECT)
            buffer = mmap.mmap(-1, 1 << 20)
            try:
                got = bytearray()
                while len(got) < half:
                    n = os.preadv(fd, [buffer], len(got))
                    got += buffer[:n]
                # A cache cleaner: the file's blocks go, all of them at once.
                name = recording.outbound_filename
                size = emulator.data.file_size(recording.workspace_id, recording.call_sid, name)
                prefix = (
                    mnt.cache_dir
                    / FileKey(recording.workspace_id, recording.call_sid, name, size).relative_dir
                )
                cached = list(prefix.parent.glob(f"{prefix.name}.*"))
                assert cached, "nothing was cached"
                subprocess.run(["rm", "-f", *map(str, cached)], check=True)
                while n := os.preadv(fd, [buffer], len(got)):
                    got += buffer[:n]
            finally:
                os.close(fd)
                buffer.close()
            assert sha256(bytes(got)) == sha256(truth)
            # Again, whole, and what was read before the removal too.
            assert direct_read(mnt.path / relative) == truth
            assert direct_read(mnt.path / relative, 0, half) == truth[:half]


def test_block_files_replaced_while_mounted_are_fetched_again() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=2, min_duration=60.0, max_duration=70.0
    ) as emulator:
        recording = next(r for r in emulator.data.recordings())
        truth = presented_bytes(emulator, recording, "outbound.wav")
        relative = Path(recording.workspace_id) / recording.call_sid / "outbound.wav"
        with mounted(emulator.url, emulator.api_key) as mnt:
            assert direct_read(mnt.path / relative) == truth
            blocks = list((mnt.cache_dir / BLOCKS_DIR).glob("??/*"))
            assert blocks
            # Each block file swapped for another block's file (same size, other bytes),
            # or for zeros: headers say whose block is in a file.
            others = sorted(blocks)
            rng = random.Random(3)
            for path, other in zip(others, others[1:] + others[:1], strict=True):
                data = other.read_bytes()
                tmp = path.with_name(path.name + ".swap")
                tmp.write_bytes(data if rng.random() < 0.5 else bytes(len(data)))
                tmp.replace(path)
            # The mount keeps descriptors of some: those still read the right bytes; the
            # rest must be found out by their headers.
            for _ in range(2):
                assert direct_read(mnt.path / relative) == truth


# --- 4. cache damage while unmounted ----------------------------------------------------------


def _damage(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    how = rng.choice(("flip", "truncate", "garbage", "empty"))
    if how == "flip" and data:
        for _ in range(8):
            data[rng.randrange(len(data))] ^= 0xFF
    elif how == "truncate":
        del data[len(data) // 2 :]
    elif how == "garbage":
        data = bytearray(rng.randbytes(max(len(data), 64)))
    else:
        data = bytearray()
    path.write_bytes(bytes(data))


def test_every_file_in_the_cache_damaged_while_unmounted_is_fetched_again() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=3, min_duration=60.0) as emulator:
        recordings = list(emulator.data.recordings())
        cache = public_tempdir("amigofs-cache-")
        names = ("inbound.wav", "outbound.wav", "metadata.json")

        def everything(mount: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
            listings = {ws: sorted(os.listdir(mount / ws)) for ws in os.listdir(mount)}
            sums = {}
            for r in recordings:
                for name in names:
                    path = mount / r.workspace_id / r.call_sid / name
                    if path.exists():
                        sums[f"{r.call_sid}/{name}"] = sha256(direct_read(path))
            return listings, sums

        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            before = everything(mnt.path)
        truths = {
            f"{r.call_sid}/{name}": sha256(presented_bytes(emulator, r, name))
            for r in recordings
            for name in names
            if f"{r.call_sid}/{name}" in before[1]
        }
        assert before[1] == truths and len(truths) >= 6
        # Every file the cache holds (audio blocks, records, listings, any journal),
        # each damaged in one of several ways; and files nobody wrote.
        rng = random.Random(7)
        damaged = [p for p in sorted(cache.rglob("*")) if p.is_file() and p.name != "lock"]
        assert len(damaged) > 10
        for path in damaged:
            _damage(path, rng)
        for directory in {p.parent for p in damaged}:
            (directory / ".0.1.1.tmp").write_bytes(b"\0" * 1000)
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            assert everything(mnt.path) == before
            assert "damaged" in mnt.log() or "replaced" in mnt.log()


# --- 5. a full disk ----------------------------------------------------------------------------


def test_a_cache_on_a_small_disk_never_fills_it_and_reads_never_fail() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=5, min_duration=500.0, max_duration=520.0,
        null_sid_calls=0, no_recording_calls=0,
    ) as emulator, tmpfs("48m") as disk:  # fmt: skip
        truths = outbound_truths(emulator)
        workspace = next(iter(truths)).split("/")[0]
        # The user's own file on that disk: it must survive whatever the cache does.
        users = disk / "users-file"
        users.write_bytes(os.urandom(20 << 20))
        users_sum = sha256(users.read_bytes())
        lowest = [1 << 62]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                vfs = os.statvfs(disk)
                lowest[0] = min(lowest[0], vfs.f_bavail * vfs.f_frsize)
                done.wait(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with mounted(emulator.url, emulator.api_key, "--cache-dir", str(disk / "cache"),
                         "--cache-size", "1G") as mnt:  # fmt: skip
                for readers in (1, 4):  # 5 x 16 MB of audio through ~26 MB of free disk
                    assert parallel_sha256(mnt.path, workspace, readers) == truths
                    subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=True)
                assert "Traceback" not in mnt.log()
        finally:
            done.set()
            watcher.join()
        assert sha256(users.read_bytes()) == users_sum
        # The cache leaves 5% of the disk free (the default reserve on a small disk).
        assert lowest[0] >= (48 << 20) // 100 * 4, f"free space fell to {lowest[0]} bytes"


def test_a_full_disk_serves_reads_straight_from_the_network() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=2, min_duration=120.0, max_duration=130.0,
        null_sid_calls=0, no_recording_calls=0,
    ) as emulator, tmpfs("16m") as disk:  # fmt: skip
        truths = outbound_truths(emulator)
        workspace = next(iter(truths)).split("/")[0]
        cache = disk / "cache"
        with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as mnt:
            # Somebody else fills the disk to the last byte after the mount started.
            filler = disk / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while os.write(fd, b"\0" * (64 << 10)):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)
            try:
                for _ in range(2):
                    assert parallel_sha256(mnt.path, workspace, 2) == truths
                    subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=True)
            finally:
                filler.unlink()
            assert "Traceback" not in mnt.log()


# --- 6. a slow but steady server ---------------------------------------------------------------


def test_a_slow_but_steady_server_is_not_a_stall() -> None:
    # 100 KB/s a response; a 5 s deadline. One GET of the kernel's 1 MiB read would
    # take 10 s: requests must follow the link's speed.
    with running_emulator(
        workspaces=1, calls_per_workspace=1, min_duration=60.0, max_duration=62.0,
        null_sid_calls=0, no_recording_calls=0, bandwidth=100_000,
    ) as emulator:  # fmt: skip
        recording = next(iter(emulator.data.recordings()))
        with mounted(emulator.url, emulator.api_key, "--timeout", "5") as mnt:
            for name in ("inbound.wav", "outbound.wav"):
                path = mnt.path / recording.workspace_id / recording.call_sid / name
                result = subprocess.run(["sha256sum", str(path)], capture_output=True,
                                        text=True, timeout=TOOL_TIMEOUT)  # fmt: skip
                assert result.returncode == 0, result.stderr
                assert result.stdout.split()[0] == sha256(
                    presented_bytes(emulator, recording, name)
                )


# --- 7. a killed fetch worker -----------------------------------------------------------------


def test_a_killed_fetch_worker_is_replaced_and_reads_in_flight_complete() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=1, min_duration=200.0, max_duration=210.0,
        null_sid_calls=0, no_recording_calls=0, bandwidth=1_000_000,
    ) as emulator:  # fmt: skip
        recording = next(iter(emulator.data.recordings()))
        truth = presented_bytes(emulator, recording, "outbound.wav")
        relative = Path(recording.workspace_id) / recording.call_sid / "outbound.wav"
        with mounted(emulator.url, emulator.api_key) as mnt:
            emulator.reset_stats()
            reader = ThreadResult(lambda: direct_read(mnt.path / relative))
            wait_until(lambda: emulator.stats()["audio_bytes"] > 2 * BLOCK, 30, "the read")
            workers = worker_pids(mnt.process.pid)
            assert len(workers) == 1
            os.kill(workers[0], signal.SIGKILL)
            assert sha256(reader.join(120)) == sha256(truth)
            # A new worker serves the next reads, and only one runs.
            assert direct_read(mnt.path / relative) == truth
            replacement = worker_pids(mnt.process.pid)
            assert len(replacement) == 1 and replacement != workers
            assert "fetch worker died" in mnt.log()
