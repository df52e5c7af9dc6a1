"""The mount, through the real command, against the emulator: what file managers,
ffmpeg, sox and rsync see."""

from __future__ import annotations

import errno
import itertools
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amigofs.config import Settings
from amigofs.daemon.mount_table import is_mounted
from amigofs.emulator.data import Recording
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    Mount,
    force_unmount,
    kernel_readahead_kb,
    mounted,
    public_tempdir,
    unmount_guards,
    wait_until,
    workspace_names,
)
from tests.reliability import stored_name

TOOL_TIMEOUT = 120
# Call records loaded ahead of a walk, at most, past its last call (the default).
RECORDS_IN_FLIGHT = Settings().records_in_flight


def run(*argv: str, timeout: float = TOOL_TIMEOUT, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    # 230 recorded calls per workspace: listings take three pages of 100.
    with running_emulator(workspaces=2, calls_per_workspace=230, max_duration=40.0) as emu:
        yield emu


@pytest.fixture(scope="module")
def mount(emulator: EmulatorProc) -> Iterator[Mount]:
    with mounted(emulator.url, emulator.api_key) as mnt:
        yield mnt


def recorded_calls(emulator: EmulatorProc, workspace_id: str) -> list[Recording]:
    return [c.recording for c in emulator.data.calls(workspace_id) if c.recording is not None]


def some_recordings(emulator: EmulatorProc, storage: str, count: int) -> list[Recording]:
    found = [r for r in emulator.data.recordings() if r.storage == storage]
    assert len(found) >= count, f"the dataset has too few {storage} recordings"
    return found[:count]


def test_tree_matches_the_emulator_across_pages(emulator: EmulatorProc, mount: Mount) -> None:
    workspaces = sorted(ws.id for ws in emulator.data.workspaces)
    assert sorted(workspace_names(mount.path)) == workspaces
    for workspace_id in workspaces:
        expected = sorted(r.call_sid for r in recorded_calls(emulator, workspace_id))
        # Calls without a SID or a recording are in the listing but must not show.
        assert len(emulator.data.calls(workspace_id)) > len(expected) > 200
        assert sorted(os.listdir(mount.path / workspace_id)) == expected
    recording = next(emulator.data.recordings())
    files = os.listdir(mount.path / recording.workspace_id / recording.call_sid)
    assert sorted(files) == ["call.wav", "inbound.wav", "metadata.json", "outbound.wav"]


@pytest.mark.parametrize("storage", ["wav", "raw"])
def test_every_file_has_the_right_size_bytes_and_audio(
    emulator: EmulatorProc, mount: Mount, storage: str
) -> None:
    for recording in some_recordings(emulator, storage, 3):
        call_dir = mount.path / recording.workspace_id / recording.call_sid
        metadata = recording.metadata
        for presented, rate, codec in (
            ("inbound.wav", 8000, "pcm_mulaw"),
            ("outbound.wav", 16000, "pcm_s16le"),
            ("metadata.json", None, None),
        ):
            path = call_dir / presented
            stored = emulator.data.read_range(
                recording.workspace_id,
                recording.call_sid,
                stored_name(recording, presented),
                0,
                1 << 40,
            )
            content = path.read_bytes()
            assert os.stat(path).st_size == len(content)
            if storage == "wav" or presented == "metadata.json":
                assert content == stored, f"{path} differs from the stored file"
            else:
                # A header computed from the metadata, then the stored bytes unchanged.
                assert content[:4] == b"RIFF" and content[8:12] == b"WAVE"
                assert content[len(content) - len(stored) :] == stored
            if codec is None:
                assert json.loads(content)["call_sid"] == recording.call_sid
                continue
            probe = run(
                "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels",
                "-show_entries", "format=duration", "-of", "json", str(path),
            )  # fmt: skip
            assert probe.returncode == 0, probe.stderr
            info = json.loads(probe.stdout)
            assert info["streams"][0]["codec_name"] == codec
            assert int(info["streams"][0]["sample_rate"]) == rate
            assert info["streams"][0]["channels"] == 1
            duration = float(metadata["duration_seconds"])  # type: ignore[arg-type]
            assert abs(float(info["format"]["duration"]) - duration) <= 0.05
            sox = run("sox", str(path), "-n", "stat")
            assert sox.returncode == 0, sox.stderr
            seconds = float(re.search(r"Length \(seconds\):\s+([\d.]+)", sox.stderr)[1])  # type: ignore[index]
            assert abs(seconds - duration) <= 0.05
            amplitude = float(re.search(r"Maximum amplitude:\s+([-\d.]+)", sox.stderr)[1])  # type: ignore[index]
            assert amplitude > 0.01, "sox reads silence"


def test_rsync_twice_transfers_nothing_the_second_time(
    emulator: EmulatorProc, mount: Mount, tmp_path: Path
) -> None:
    workspace_id = emulator.data.workspaces[1].id
    source = f"{mount.path / workspace_id}/"
    first = run("rsync", "-a", "--stats", source, str(tmp_path / "backup"))
    assert first.returncode == 0, first.stderr
    calls = recorded_calls(emulator, workspace_id)
    assert re.search(rf"Number of regular files transferred: {4 * len(calls):,}\b", first.stdout)
    for recording in random.Random(7).sample(calls, 5):
        backup = tmp_path / "backup" / recording.call_sid
        assert (backup / "metadata.json").read_bytes() == recording.metadata_bytes
        assert (backup / "outbound.wav").stat().st_mtime == os.stat(
            mount.path / workspace_id / recording.call_sid / "outbound.wav"
        ).st_mtime
    emulator.reset_stats()
    second = run("rsync", "-a", "--stats", source, str(tmp_path / "backup"))
    assert second.returncode == 0, second.stderr
    assert "Number of regular files transferred: 0" in second.stdout
    assert emulator.stats()["audio_bytes"] == 0


def test_mtimes_are_the_call_start_and_stable_across_remounts(
    emulator: EmulatorProc, mount: Mount, tmp_path: Path
) -> None:
    recording = some_recordings(emulator, "raw", 1)[0]
    call = emulator.data.call(recording.workspace_id, recording.call_sid)
    assert call is not None
    relative = Path(recording.workspace_id, recording.call_sid)
    expected = call.started_at.timestamp()
    first = {
        name: os.stat(mount.path / relative / name).st_mtime
        for name in os.listdir(mount.path / relative)
    }
    assert os.stat(mount.path / relative).st_mtime == expected
    assert set(first.values()) == {expected}
    # A workspace's time never moves back while it is mounted (tar stats a directory
    # before and after reading it): what a first look showed stays once it is listed.
    workspace = mount.path / recording.workspace_id
    shown = os.stat(workspace).st_mtime
    os.listdir(workspace)
    assert os.stat(workspace).st_mtime == shown
    # With its listing on disk from the start, it is its newest call's start.
    newest = max(c.started_at for c in emulator.data.calls(recording.workspace_id))
    cache = tmp_path / "cache"
    with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as again:
        assert {n: os.stat(again.path / relative / n).st_mtime for n in first} == first
        os.listdir(again.path / recording.workspace_id)
    with mounted(emulator.url, emulator.api_key, "--cache-dir", str(cache)) as third:
        assert os.stat(third.path / recording.workspace_id).st_mtime == newest.timestamp()


def test_common_tools_work_and_writes_fail_with_erofs(
    emulator: EmulatorProc, mount: Mount, tmp_path: Path
) -> None:
    recording = some_recordings(emulator, "wav", 1)[0]
    call_dir = mount.path / recording.workspace_id / recording.call_sid
    found = run("find", str(call_dir), "-type", "f", "-name", "*.wav")
    assert sorted(found.stdout.split()) == [
        str(call_dir / "call.wav"),
        str(call_dir / "inbound.wav"),
        str(call_dir / "outbound.wav"),
    ]
    size = run("stat", "-c", "%s %a", str(call_dir / "outbound.wav"))
    assert size.stdout.split() == [
        str(
            emulator.data.file_size(
                recording.workspace_id, recording.call_sid, recording.outbound_filename
            )
        ),
        "444",
    ]
    assert run("stat", "-c", "%a", str(call_dir)).stdout.strip() == "555"
    cat = subprocess.run(
        ["cat", str(call_dir / "metadata.json")], capture_output=True, timeout=TOOL_TIMEOUT
    )
    assert cat.stdout == recording.metadata_bytes
    copy = tmp_path / "copy.wav"
    assert run("cp", str(call_dir / "inbound.wav"), str(copy)).returncode == 0
    assert run("cmp", str(call_dir / "inbound.wav"), str(copy)).returncode == 0
    for argv in (("touch", str(call_dir / "new")), ("rm", str(call_dir / "inbound.wav")),
                 ("touch", str(call_dir / "inbound.wav")), ("mkdir", str(call_dir / "d"))):  # fmt: skip
        result = run(*argv)
        assert result.returncode != 0 and "Read-only file system" in result.stderr, argv
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_CREAT):
        with pytest.raises(OSError) as failure:
            os.open(call_dir / "outbound.wav", flags)
        assert failure.value.errno == errno.EROFS


def test_names_that_cannot_exist_are_enoent_without_a_request(
    emulator: EmulatorProc, mount: Mount
) -> None:
    workspace_id = emulator.data.workspaces[0].id
    os.listdir(mount.path / workspace_id)  # the listing is cached from here on
    emulator.reset_stats()
    for name in ("..x", "not a sid", "CA%2F..", "x" * 200, "a\tb", "ünïcode"):
        with pytest.raises(FileNotFoundError):
            os.stat(mount.path / workspace_id / name)
    with pytest.raises(FileNotFoundError):
        os.stat(mount.path / "not-a-workspace")
    assert sum(emulator.stats()["requests"].values()) == 0


def test_head_of_each_file_fetches_little() -> None:
    # Ten-minute calls: 4.8 MB inbound and 19 MB outbound, so fetching whole files would show.
    with (
        running_emulator(
            workspaces=1, calls_per_workspace=6, long_calls=6, long_duration=600.0
        ) as emulator,
        mounted(emulator.url, emulator.api_key) as mnt,
    ):
        recordings = list(emulator.data.recordings())
        assert {r.storage for r in recordings} == {"wav", "raw"}
        emulator.reset_stats()
        for recording in recordings:
            for presented in ("inbound.wav", "outbound.wav"):
                path = mnt.path / recording.workspace_id / recording.call_sid / presented
                head = subprocess.run(
                    ["head", "-c", "65536", str(path)], capture_output=True, timeout=TOOL_TIMEOUT
                )
                assert len(head.stdout) == 65536
                assert os.stat(path).st_size > 4_000_000
        served = emulator.stats()["download_bytes"]
        audio = {p: n for p, n in served.items() if not p.endswith("metadata.json")}
        assert len(audio) == 12
        for path, count in audio.items():
            assert 0 < count <= 2 << 20, f"{path}: {count} bytes fetched for a 64 KiB head"


def test_other_users_cannot_enter_unless_allow_other(emulator: EmulatorProc, mount: Mount) -> None:
    as_nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "ls")
    denied = run(*as_nobody, str(mount.path))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # The control: the same user can list a mount made with --allow-other, so the
    # denial above is the mount's doing, not the directory's.
    with mounted(emulator.url, emulator.api_key, "--allow-other") as shared:
        allowed = run(*as_nobody, str(shared.path))
        assert allowed.returncode == 0, allowed.stderr
        assert sorted(allowed.stdout.split()) == sorted(
            [*(ws.id for ws in emulator.data.workspaces), "by-date", "by-name"]
        )


def test_ls_l_of_a_workspace_of_1000_calls_fetches_no_audio() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=1000, null_sid_calls=0,
                          no_recording_calls=0) as emulator:  # fmt: skip
        workspace_id = emulator.data.workspaces[0].id
        with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id) as mnt:
            emulator.reset_stats()  # the check before mounting: not what ls costs
            listing = run("ls", "-l", str(mnt.path / workspace_id))
            assert listing.returncode == 0, listing.stderr
            assert len(listing.stdout.splitlines()) == 1 + 1000
            stats = emulator.stats()
            assert stats["audio_bytes"] == 0
            # The listing has each call's start time: ten pages and nothing per call.
            assert stats["requests"] == {"list-calls": 10}
            emulator.reset_stats()
            deep = run(
                "ls",
                "-l",
                *(
                    str(mnt.path / workspace_id / r)
                    for r in sorted(os.listdir(mnt.path / workspace_id))[:200]
                ),
            )
            assert deep.returncode == 0, deep.stderr

            # Each call's files: its metadata alone, once (metadata.json is its answer; the
            # links wait for a read); a walk in name order (ls sorts its arguments) also
            # loads up to RECORDS_IN_FLIGHT calls past the last one entered, in the
            # background: wait for those loads to finish before counting.
            snapshot: list[dict[str, Any]] = []

            def settled() -> bool:
                snapshot[:] = [emulator.stats()]
                counts = snapshot[0]["requests"]
                return bool(counts.get("get-recording-metadata", 0) >= 200)

            wait_until(settled, 10, "the calls loaded ahead to finish loading")
            stats = snapshot[0]
            assert stats["audio_bytes"] == 0
            counts = stats["requests"]
            assert set(counts) == {"get-recording-metadata"}
            assert 200 <= counts["get-recording-metadata"] <= 200 + RECORDS_IN_FLIGHT
            fetched = [e["path"] for e in stats["log"] if e["op"] == "get-recording-metadata"]
            assert len(fetched) == len(set(fetched)), "a call's record was fetched twice"


def test_command_line_contract(emulator: EmulatorProc, tmp_path: Path) -> None:
    amigofs = [sys.executable, "-m", "amigofs"]
    env_without_key = {k: v for k, v in os.environ.items() if k != "AMIGO_API_KEY"}
    mountpoint = public_tempdir("amigofs-cli-")
    try:
        cases = [
            ([str(mountpoint), "--base-url", emulator.url], env_without_key, "no API key"),
            ([str(tmp_path / "missing"), "--base-url", emulator.url], None, "does not exist"),
            ([str(mountpoint), "--base-url", "ftp://x"], None, "--base-url"),
            (  # named by where it came from
                [str(mountpoint)],
                {**os.environ, "AMIGO_API_KEY": "k", "AMIGOFS_BASE_URL": "ftp://x"},
                "AMIGOFS_BASE_URL",
            ),
            (
                [str(mountpoint), "--base-url", emulator.url, "--workspace", "../x"],
                None,
                "workspace",
            ),
        ]
        for args, env, message in cases:
            result = run(*amigofs, "mount", *args, "--foreground",
                         env=env or {**os.environ, "AMIGO_API_KEY": emulator.api_key})  # fmt: skip
            assert result.returncode == 2, result
            assert message in result.stderr and "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
        key_file = tmp_path / "key"
        key_file.write_text(emulator.api_key + "\n")
        key_file.chmod(0o644)
        loose = run(*amigofs, "mount", str(mountpoint), "--base-url", emulator.url,
                    "--api-key-file", str(key_file), env=env_without_key)  # fmt: skip
        assert loose.returncode == 2 and "chmod 600" in loose.stderr
        key_file.chmod(0o600)
        # Without --foreground: returns once the mount is live; the daemon runs on.
        started = run(*amigofs, "mount", str(mountpoint), "--base-url", emulator.url,
                      "--api-key-file", str(key_file), "--cache-dir", str(tmp_path / "cache"),
                      env=env_without_key)  # fmt: skip
        assert started.returncode == 0, started.stderr
        try:
            assert sorted(workspace_names(mountpoint)) == sorted(
                ws.id for ws in emulator.data.workspaces
            )
            busy = run(*amigofs, "mount", str(mountpoint), "--base-url", emulator.url,
                       "--api-key-file", str(key_file), env=env_without_key)  # fmt: skip
            assert busy.returncode == 2 and "already mounted" in busy.stderr
            daemon = run("pgrep", "-f", f"amigofs mount {mountpoint}")
            assert daemon.returncode == 0
            pid = int(daemon.stdout.split()[0])
            assert emulator.api_key not in Path(f"/proc/{pid}/cmdline").read_text()
        finally:
            subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False, timeout=30)
        wait_until(
            lambda: not Path(f"/proc/{pid}").exists(), 15, "the daemon to exit after unmount"
        )
    finally:
        force_unmount(mountpoint)
        mountpoint.rmdir()


def test_kernel_readahead_is_widened_to_1m_and_set_by_the_flag(emulator: EmulatorProc) -> None:
    # Root may set it (the tests run as root); the kernel's own window for FUSE is 128K.
    # Every other test reads through the default 1M window, and checks the bytes.
    # It is set once the kernel's handshake with the new mount is over: wait for it.
    with mounted(emulator.url, emulator.api_key) as mnt:
        wait_until(lambda: kernel_readahead_kb(mnt.path) == 1024, 10, "a 1M readahead")
    with mounted(emulator.url, emulator.api_key, "--kernel-readahead", "256K") as mnt:
        wait_until(lambda: kernel_readahead_kb(mnt.path) == 256, 10, "a 256K readahead")
    with mounted(emulator.url, emulator.api_key, "--kernel-readahead", "0") as mnt:
        os.statvfs(mnt.path)  # past the handshake, after which a 1M window would be set
        workspace_names(mnt.path)
        assert kernel_readahead_kb(mnt.path) == 128


def test_unmount_ends_the_process_with_status_0(emulator: EmulatorProc) -> None:
    with mounted(emulator.url, emulator.api_key) as mnt:
        wait_until(lambda: unmount_guards(mnt.path), 10, "the unmount guard to start")
        assert mnt.unmount() == 0
        # Its unmount guard goes with it, leaving the mount point alone.
        wait_until(lambda: not unmount_guards(mnt.path), 10, "the unmount guard to exit")
        assert mnt.path.is_dir() and not is_mounted(mnt.path)


def test_a_walk_in_listing_order_loads_the_next_calls_ahead() -> None:
    # 50 ms per request: entered one after another, each call would cost two round
    # trips before the next could start.
    with running_emulator(workspaces=1, calls_per_workspace=40, latency=0.05) as emulator:
        workspace_id = emulator.data.workspaces[0].id
        with mounted(emulator.url, emulator.api_key, "--workspace", workspace_id) as mnt:
            calls = sorted(os.listdir(mnt.path / workspace_id))
            emulator.reset_stats()
            found = run("find", str(mnt.path / workspace_id), "-type", "f")
            assert found.returncode == 0, found.stderr
            assert len(found.stdout.split()) == 4 * len(calls)  # call.wav too
            # Sizes are the metadata's: one request a call, no links.
            log = [e for e in emulator.stats()["log"] if e["op"] == "get-recording-metadata"]
            assert len(log) == len({e["path"] for e in log}) == len(calls)
            times = sorted(float(e["time"]) for e in log)
            # Requests for other calls went out while earlier ones were still waiting.
            overlapping = sum(1 for a, b in itertools.pairwise(times) if b - a < 0.04)
            assert overlapping >= len(calls) // 2, f"only {overlapping} overlapped"
