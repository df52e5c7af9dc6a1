"""Running amigofs as a service: systemd notification and units, signals, the config
file, the fstab helper, xattrs, `amigofs stats`, `amigofs prefetch` and the demo."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs import config
from amigofs.daemon.mount_table import is_mounted, mount_type
from amigofs.emulator.data import Recording
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    MOUNT_DEADLINE,
    STOP_DEADLINE,
    Mount,
    force_unmount,
    kernel_readahead_kb,
    mount_command,
    mounted,
    public_tempdir,
    teardown,
    unmount_guards,
    wait_until,
    workspace_names,
)
from tests.reliability import PRESENTED, presented_bytes, request_log

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIMEOUT = 60


def run(*argv: str | Path, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=TIMEOUT, **kw
    )


def amigofs(*argv: str | Path, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return run(sys.executable, "-m", "amigofs", *argv, **kw)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amigofs-ops-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def unmounting(mountpoint: Path) -> Iterator[Path]:
    """For mounts made by the daemon mode: always unmounted (the daemon then exits)."""
    try:
        yield mountpoint
    finally:
        force_unmount(mountpoint)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def key_file(directory: Path, key: str) -> Path:
    path = directory / "api.key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def recordings(emulator: EmulatorProc, workspace_id: str | None = None) -> list[Recording]:
    return [
        r
        for r in emulator.data.recordings()
        if workspace_id is None or r.workspace_id == workspace_id
    ]


def stored_bytes(emulator: EmulatorProc, workspace_id: str) -> int:
    return sum(
        emulator.data.file_size(r.workspace_id, r.call_sid, name)
        for r in recordings(emulator, workspace_id)
        if not r.archived
        for name in (r.inbound_filename, r.outbound_filename)
    )


def read_all(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as file:
                while chunk := file.read(1 << 20):
                    total += len(chunk)
    return total


# --- systemd ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", ["amigofs@.service", "user/amigofs@.service"])
def test_systemd_units_pass_verify(unit: str) -> None:
    with scratch_dir() as tmp:
        text = (REPO / "systemd" / unit).read_text()
        # The unit names the installed command; here it is the test's virtualenv's.
        text = re.sub(r"^ExecStart=\S+", f"ExecStart={BIN / 'amigofs'}", text, flags=re.M)
        (tmp / "amigofs@.service").write_text(text)
        runtime = tmp / "runtime"
        runtime.mkdir(mode=0o700)
        user = ["--user"] if unit.startswith("user/") else []
        result = run(
            "systemd-analyze", *user, "verify", "--man=no", tmp / "amigofs@demo.service",
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        )  # fmt: skip
        # Unknown keys are only warnings, so an empty report is the bar.
        assert result.returncode == 0 and not result.stdout and not result.stderr, result


def test_notify_ready_after_mount_then_sigterm_unmounts_and_exits_0() -> None:
    with running_emulator(workspaces=1, calls_per_workspace=3) as emulator, scratch_dir() as tmp:
        notify_path = tmp / "notify.sock"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(notify_path))
        receiver.settimeout(MOUNT_DEADLINE)
        mountpoint = public_tempdir("amigofs-mnt-")
        env = {**os.environ, "AMIGO_API_KEY": emulator.api_key, "NOTIFY_SOCKET": str(notify_path)}
        with open(tmp / "log", "wb") as log:
            process = subprocess.Popen(
                mount_command(emulator.url, mountpoint, tmp / "cache"),
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        mount = Mount(mountpoint, process, tmp / "log", tmp / "cache")
        try:
            first = receiver.recv(4096).decode()
            # READY=1 is the first word, and by then the mount is there to use.
            mounted_then = is_mounted(mountpoint)
            assert "READY=1" in first.splitlines(), first
            assert mounted_then
            assert f"MAINPID={process.pid}" in first.splitlines()
            assert any(line.startswith("STATUS=") for line in first.splitlines())
            assert workspace_names(mountpoint) == [emulator.data.workspaces[0].id]

            process.send_signal(signal.SIGTERM)
            assert process.wait(STOP_DEADLINE) == 0, mount.log()
            assert not is_mounted(mountpoint)
            receiver.settimeout(0)
            last = receiver.recv(4096).decode()  # sent before unmounting: already here
            assert "STOPPING=1" in last.splitlines(), last
        finally:
            receiver.close()
            teardown(mount)
            mountpoint.rmdir()


def test_sighup_shows_calls_that_came_since_on_the_next_ls() -> None:
    with (
        running_emulator(workspaces=2, calls_per_workspace=2) as emulator,
        # Listings kept for an hour: only SIGHUP makes the mount ask again.
        mounted(emulator.url, emulator.api_key, "--listing-ttl", "3600") as mnt,
    ):
        workspace = sorted(ws.id for ws in emulator.data.workspaces)[0]
        calls = sorted(os.listdir(mnt.path / workspace))
        assert calls
        # New calls end on the server: the kept listing does not have them yet.
        emulator.control(add_calls={workspace: 3})
        data = emulator.synced_data()
        now = sorted(c.call_sid for c in data.calls(workspace) if c.recording is not None)
        assert now != calls  # at least one of them has a recording to show
        assert sorted(os.listdir(mnt.path / workspace)) == calls

        mnt.process.send_signal(signal.SIGHUP)
        # What a user sees: the next ls has them, and the mount stays.
        wait_until(lambda: sorted(os.listdir(mnt.path / workspace)) == now, 10,
                   "ls to show the new calls after SIGHUP")  # fmt: skip
        assert is_mounted(mnt.path) and mnt.process.poll() is None


def test_second_signal_forces_exit_and_leaves_no_mount() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=2) as emulator,
        mounted(emulator.url, emulator.api_key, "--timeout", "60") as mnt,
    ):
        # Slow from now on (the mount's check at start went through): a listing that
        # will not come for 30 s holds a handler; the first signal waits for it, the
        # second ends the process at once.
        emulator.control(latency=30.0)
        emulator.reset_stats()
        lister = subprocess.Popen(["ls", str(mnt.path)], stdout=subprocess.DEVNULL)
        try:
            wait_until(
                lambda: any(e.get("op") == "list-workspaces" for e in emulator.stats()["log"]),
                10,
                "the listing request",
            )
            mnt.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "SIGTERM: unmounting" in mnt.log(), 10, "the first signal")
            mnt.process.send_signal(signal.SIGINT)
            assert mnt.process.wait(STOP_DEADLINE) == 1
            wait_until(lambda: not is_mounted(mnt.path), STOP_DEADLINE, "the mount to go")
        finally:
            lister.kill()
            lister.wait()


def test_mounting_over_a_dead_mount_says_how_to_remove_it() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=2) as emulator,
        mounted(emulator.url, emulator.api_key) as mnt,
    ):
        # Hold back both cleaners (fusermount3's auto_unmount and our guard), then kill
        # the daemon: what a crash looks like where nothing cleans up.
        wait_until(lambda: unmount_guards(mnt.path), 10, "the unmount guard")
        found = run("pgrep", "-f", f"fusermount3 .*{mnt.path}")
        cleaners = unmount_guards(mnt.path) + [int(pid) for pid in found.stdout.split()]
        for pid in cleaners:
            os.kill(pid, signal.SIGSTOP)
        try:
            mnt.process.kill()
            mnt.process.wait(STOP_DEADLINE)
            assert is_mounted(mnt.path)
            with pytest.raises(OSError) as dead:
                workspace_names(mnt.path)
            assert dead.value.errno == errno.ENOTCONN

            env = {**os.environ, "AMIGO_API_KEY": emulator.api_key}
            again = amigofs("mount", mnt.path, "--base-url", emulator.url, env=env)
            assert again.returncode == 2
            hint = f"fusermount3 -u -z {mnt.path}"
            assert "dead mount" in again.stderr and hint in again.stderr, again.stderr
            assert "Traceback" not in again.stderr
            # The hint works.
            assert run(*hint.split()).returncode == 0
            assert not is_mounted(mnt.path)
        finally:
            for pid in cleaners:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --- configuration ------------------------------------------------------------------------


def test_precedence_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('timeout = 7\nlisting_ttl = 8\ncache_size = "1G"\ncache_dir = "cache"\n')
    env = {"AMIGOFS_LISTING_TTL": "9", "AMIGOFS_TIMEOUT": "11"}
    settings = config.resolve({"timeout": 12.0, "listing_ttl": None}, env, path)
    assert settings.timeout == 12.0  # flag
    assert settings.listing_ttl == 9.0  # environment
    assert settings.cache_size == 1 << 30  # file
    assert settings.cache_dir == tmp_path / "cache"  # relative to the file
    assert settings.negative_ttl == 5.0  # default


def test_toml_config_mounts_the_listed_workspaces() -> None:
    with (
        running_emulator(workspaces=3, calls_per_workspace=2) as emulator,
        scratch_dir() as tmp,
        unmounting(public_tempdir("amigofs-mnt-")) as mountpoint,
    ):
        chosen = sorted(ws.id for ws in emulator.data.workspaces)[:2]
        path = tmp / "amigofs.toml"
        path.write_text(
            f'mountpoint = "{mountpoint}"\n'
            f'base_url = "{emulator.url}"\n'
            f"workspaces = {json.dumps(chosen)}\n"
            f'api_key_file = "{key_file(tmp, emulator.api_key)}"\n'
            'cache_dir = "cache"\n'
            'cache_size = "64M"\n'
            'kernel_readahead = "512K"\n'
            "allow_other = false\n"
            "timeout = 20\n"
            "listing_ttl = 30\n"
            'log_level = "debug"\n'
        )
        env = {k: v for k, v in os.environ.items() if k != "AMIGO_API_KEY"}
        # Without --foreground: returns once the mount is live.
        result = amigofs("mount", "--config", path, env=env)
        assert result.returncode == 0, result.stderr
        assert is_mounted(mountpoint)
        assert sorted(workspace_names(mountpoint)) == chosen
        assert os.listdir(mountpoint / chosen[0])
        wait_until(lambda: kernel_readahead_kb(mountpoint) == 512, 10, "a 512K readahead")
        log = (tmp / "cache" / "mount.log").read_text()
        assert "list-calls GET" in log  # log_level = "debug" traces requests...
        assert emulator.api_key not in log  # ...never the key


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("cache_sise = '1G'", "cache_sise"),
        ("timeout = 'soon'", "timeout"),
        ("timeout = -1", "timeout"),
        ("allow_other = 'no'", "allow_other"),
        ("workspaces = ['../etc']", "workspaces"),
        ("workspaces = 'abc'", "workspaces"),
        ("cache_size = '1K'", "cache_size"),
        ("kernel_readahead = '1G'", "kernel_readahead"),
        ("kernel_readahead = -4096", "kernel_readahead"),
        ("log_level = 'loud'", "log_level"),
        ("timeout = ", "TOML"),
    ],
)
def test_bad_config_is_a_one_line_error_naming_the_key(line: str, named: str) -> None:
    with scratch_dir() as tmp, unmounting(public_tempdir("amigofs-mnt-")) as mountpoint:
        path = tmp / "bad.toml"
        path.write_text(f'base_url = "http://127.0.0.1:9"\n{line}\n')
        env = {**os.environ, "AMIGO_API_KEY": "k"}
        result = amigofs("mount", "--config", path, mountpoint, env=env)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert named in result.stderr and "Traceback" not in result.stderr
        assert not is_mounted(mountpoint)


def test_bad_environment_value_is_named() -> None:
    with scratch_dir() as tmp:
        env = {**os.environ, "AMIGO_API_KEY": "k", "AMIGOFS_TIMEOUT": "never"}
        result = amigofs("mount", tmp, "--base-url", "http://127.0.0.1:9", env=env)
        assert result.returncode == 2 and "AMIGOFS_TIMEOUT" in result.stderr


# --- fstab -------------------------------------------------------------------------------


def test_fstab_helper_mounts_and_returns_once_live() -> None:
    with (
        running_emulator(workspaces=2, calls_per_workspace=2) as emulator,
        scratch_dir() as tmp,
        unmounting(public_tempdir("amigofs-mnt-")) as mountpoint,
    ):
        workspace = sorted(ws.id for ws in emulator.data.workspaces)[1]
        options = ",".join([
            f"base_url={emulator.url}", f"workspace={workspace}",
            f"api_key_file={key_file(tmp, emulator.api_key)}", f"cache_dir={tmp / 'cache'}",
            "_netdev", "nofail", "x-systemd.automount", "rw",
        ])  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "AMIGO_API_KEY"}
        # As mount(8) calls it for `none MOUNTPOINT fuse.amigofs OPTIONS 0 0` in fstab.
        result = run(BIN / "mount.fuse.amigofs", "none", mountpoint, "-o", options, env=env)
        assert result.returncode == 0, result.stderr
        assert is_mounted(mountpoint)  # at once: it returned only once live
        assert workspace_names(mountpoint) == [workspace]
        assert mount_type(str(mountpoint)) == "fuse.amigofs"

        bad = run(BIN / "mount.fuse.amigofs", "none", tmp, "-o", "colour=blue", env=env)
        assert bad.returncode != 0 and "colour" in bad.stderr


# --- seeing inside -----------------------------------------------------------------------


def getfattr(path: Path, *args: str) -> dict[str, str]:
    result = run("getfattr", "--absolute-names", *args, path)
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r'^(user\.amigo\.\w+)="(.*)"$', result.stdout, flags=re.M))


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_getfattr_shows_the_metadata() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=4, archived_calls=1) as emulator,
        mounted(emulator.url, emulator.api_key) as mnt,
    ):
        recording = next(r for r in recordings(emulator) if not r.archived)
        meta = recording.metadata
        call_dir = mnt.path / recording.workspace_id / recording.call_sid
        for path, fmt, rate in [
            (call_dir, None, None),
            (call_dir / "inbound.wav", meta["inbound_format"], meta["inbound_sample_rate"]),
            (call_dir / "outbound.wav", meta["outbound_format"], meta["outbound_sample_rate"]),
        ]:
            attrs = getfattr(path, "-d")
            assert float(attrs["user.amigo.duration_seconds"]) == meta["duration_seconds"]
            assert attrs["user.amigo.direction"] == meta["direction"]
            assert attrs["user.amigo.tts_provider"] == meta["tts_provider"]
            assert _time(attrs["user.amigo.call_start"]) == _time(str(meta["call_start_iso"]))
            assert _time(attrs["user.amigo.call_end"]) == _time(str(meta["call_end_iso"]))
            if fmt is None:
                assert attrs["user.amigo.format"] == (
                    f"inbound={meta['inbound_format']},outbound={meta['outbound_format']}"
                )
            else:
                assert attrs["user.amigo.format"] == fmt
                assert attrs["user.amigo.sample_rate"] == str(rate)
            assert "user.amigo.restore_eta" not in attrs
        assert getfattr(call_dir / "metadata.json", "-d") == {}

        archived = next(r for r in recordings(emulator) if r.archived)
        archived_dir = mnt.path / archived.workspace_id / archived.call_sid
        attrs = getfattr(archived_dir, "-d")
        # Listed before the mount knew it archived: a recorded call's names, those
        # only its metadata has "unknown"; the restore time is read by its name.
        assert attrs["user.amigo.format"] == "unknown"
        attrs |= getfattr(archived_dir, "-n", "user.amigo.restore_eta")
        assert _time(attrs["user.amigo.restore_eta"]) > dt.datetime.now(dt.UTC)
        assert attrs["user.amigo.direction"] == archived.metadata["direction"]
        # The metadata is all it took: no audio was downloaded.
        assert emulator.stats()["audio_bytes"] == 0


def test_stats_match_the_emulators_counters() -> None:
    with (
        running_emulator(workspaces=2, calls_per_workspace=5) as emulator,
        mounted(emulator.url, emulator.api_key) as mnt,
    ):
        # The check before mounting was made by the command, not the mount: not counted.
        emulator.reset_stats()
        # A known workload: list everything, read three files whole, one twice.
        workspace = sorted(ws.id for ws in emulator.data.workspaces)[0]
        calls = sorted(os.listdir(mnt.path / workspace))
        for name in ("inbound.wav", "outbound.wav", "metadata.json"):
            (mnt.path / workspace / calls[0] / name).read_bytes()
        (mnt.path / workspace / calls[1] / "outbound.wav").read_bytes()
        (mnt.path / workspace / calls[0] / "outbound.wav").read_bytes()

        def numbers_agree() -> bool:
            ours = json.loads(amigofs("stats", mnt.path, "--json").stdout)
            theirs = emulator.stats()
            return (
                ours["bytes_in_flight"] == 0
                and ours["requests"] == theirs["requests"]
                and ours["bytes_fetched"] == sum(theirs["download_bytes"].values())
            )

        wait_until(numbers_agree, 20, "amigofs stats to agree with the emulator")
        stats = json.loads(amigofs("stats", mnt.path, "--json").stdout)
        assert stats["retries"] == stats["errors"] == 0
        assert stats["cache"]["reads_waited"] >= 1 and stats["cache"]["blocks_fetched"] >= 1
        # What the block files take on disk (whole pages each, audio and metadata.json),
        # and the whole cache directory (the SQLite files and directories count too).
        on_disk = sum(
            p.stat().st_blocks * 512
            for p in (mnt.cache_dir / "blocks.v3").rglob("*")
            if p.is_file()
        )
        everything = sum(
            max(p.stat().st_blocks * 512, p.stat().st_size) for p in mnt.cache_dir.rglob("*")
        )
        assert on_disk >= emulator.stats()["audio_bytes"]
        # (The SQLite files are measured once a second: a few pages may have come since.)
        assert on_disk < stats["cache"]["used_bytes"] <= everything + (1 << 20)
        text = amigofs("stats", mnt.path)
        assert text.returncode == 0 and "bytes fetched" in text.stdout, text.stderr
        # The control file is private and out of every listing.
        assert ".amigofs-stats" not in workspace_names(mnt.path)
        assert (mnt.path / ".amigofs-stats").stat().st_mode & 0o777 == 0o400
        assert amigofs("stats", mnt.path.parent).returncode == 2


def test_prefetch_a_workspace_then_reading_everything_fetches_nothing() -> None:
    with (
        running_emulator(workspaces=2, calls_per_workspace=4, max_duration=20.0) as emulator,
        scratch_dir() as tmp,
    ):
        workspace = sorted(ws.id for ws in emulator.data.workspaces)[0]
        cache = ["--cache-dir", str(tmp / "cache")]
        with mounted(emulator.url, emulator.api_key, *cache) as mnt:
            result = amigofs("prefetch", mnt.path / workspace)
            assert result.returncode == 0, result.stderr
            assert emulator.stats()["audio_bytes"] == stored_bytes(emulator, workspace)
        emulator.reset_stats()
        # A new mount on the same cache: the kernel's pages are gone, the disk cache is not.
        with mounted(emulator.url, emulator.api_key, *cache) as mnt:
            assert read_all(mnt.path / workspace) > stored_bytes(emulator, workspace)
            for recording in recordings(emulator, workspace):
                for name in PRESENTED:
                    path = mnt.path / workspace / recording.call_sid / name
                    assert path.read_bytes() == presented_bytes(emulator, recording, name), path
            assert emulator.stats()["audio_bytes"] == 0
            # A remount asks whether each file is still the version it cached (304: yes, no
            # byte sent), and fetches nothing.
            downloads = [e for e in request_log(emulator) if e["op"] == "download-recording-file"]
            assert [e["status"] for e in downloads] == [304] * len(downloads)


def test_prefetch_by_date_range_reads_only_those_calls() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=8, max_duration=10.0) as emulator,
        mounted(emulator.url, emulator.api_key) as mnt,
    ):
        workspace = emulator.data.workspaces[0].id
        days = {
            r.call_sid: dt.datetime.fromtimestamp(
                (mnt.path / workspace / r.call_sid).stat().st_mtime, dt.UTC
            ).date()
            for r in recordings(emulator, workspace)
        }
        day = sorted(days.values())[len(days) // 2]
        result = amigofs("prefetch", mnt.path / workspace, "--since", day, "--until", day)
        assert result.returncode == 0, result.stderr
        # Audio of those calls only (looking calls up loads their metadata.json).
        fetched = {
            path.split("/")[4]
            for path in emulator.stats()["download_bytes"]
            if not path.endswith("/metadata.json")
        }
        assert fetched == {sid for sid, d in days.items() if d == day}


def test_prefetch_interrupted_then_run_again_fetches_only_the_rest() -> None:
    with (
        running_emulator(
            # Enough calls that what a walk fetches ahead (8 calls) is not all of them.
            workspaces=1,
            calls_per_workspace=24,
            max_duration=12.0,
            bandwidth=800_000,
        ) as emulator,
        mounted(emulator.url, emulator.api_key) as mnt,
    ):
        workspace = emulator.data.workspaces[0].id
        total = stored_bytes(emulator, workspace)
        argv = [sys.executable, "-m", "amigofs", "prefetch", "-j", "2", str(mnt.path / workspace)]
        first = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(
                lambda: emulator.stats()["audio_bytes"] > total // 4, 60, "a quarter fetched"
            )
            first.send_signal(signal.SIGINT)
            _, err = first.communicate(timeout=STOP_DEADLINE)
        finally:
            first.kill()
            first.wait()
        assert first.returncode == 130 and "interrupted" in err, err

        def settled() -> bool:
            return json.loads(amigofs("stats", mnt.path, "--json").stdout)["bytes_in_flight"] == 0

        wait_until(settled, 30, "downloads under way to end")
        before = emulator.stats()["audio_bytes"]
        assert 0 < before < total
        emulator.reset_stats()
        again = amigofs("prefetch", mnt.path / workspace)
        assert again.returncode == 0, again.stderr
        assert emulator.stats()["audio_bytes"] == total - before


def test_demo_mounts_within_30_s_and_ffprobe_reads_it() -> None:
    mountpoint = public_tempdir("amigofs-demo-")
    demo = subprocess.Popen(
        [sys.executable, "-m", "amigofs", "demo", str(mountpoint)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: is_mounted(mountpoint) or demo.poll() is not None, 30, "the demo")
        assert demo.poll() is None
        workspace = sorted(workspace_names(mountpoint))[0]
        call = sorted(os.listdir(mountpoint / workspace))[0]
        probe = run(
            "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate",
            "-of", "json", mountpoint / workspace / call / "outbound.wav",
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        assert json.loads(probe.stdout)["streams"][0]["sample_rate"] == "16000"
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=STOP_DEADLINE * 2)
        assert demo.returncode == 0
        assert not is_mounted(mountpoint)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        force_unmount(mountpoint)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
