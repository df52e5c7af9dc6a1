"""Access and secrets: a private, read-only mount; a key that is refused from a loose file and
never shows in arguments, logs (even --debug), the cache directory or the files the mount
writes; cache files 0600 in directories 0700."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amigofs.daemon.mount_table import is_mounted
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, force_unmount, mounted, public_tempdir, wait_until
from tests.reliability import presented_bytes

TOOL_TIMEOUT = 60
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def run(*argv: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, **kw)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=1, calls_per_workspace=2, max_duration=10.0) as emu:
        yield emu


def test_other_users_can_neither_list_nor_read_without_allow_other_and_nobody_writes(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    recording = next(emulator.data.recordings())
    relative = Path(recording.workspace_id, recording.call_sid)
    truth_dir = public_tempdir("amigofs-truth-")
    try:
        truth = truth_dir / "inbound.wav"
        truth.write_bytes(presented_bytes(emulator, recording, "inbound.wav"))
        truth.chmod(0o644)
        with mounted(emulator.url, emulator.api_key) as private:
            # Known paths do not help: the kernel refuses every other user.
            for argv in (("ls", str(private.path / recording.workspace_id)),
                         ("stat", str(private.path / relative / "inbound.wav")),
                         ("cat", str(private.path / relative / "metadata.json"))):  # fmt: skip
                denied = run(*AS_NOBODY, *argv)
                assert denied.returncode != 0 and "Permission denied" in denied.stderr, argv
                assert denied.stdout == ""
        with mounted(emulator.url, emulator.api_key, "--allow-other") as shared:
            call_dir = shared.path / relative
            cat = subprocess.run([*AS_NOBODY, "cat", str(call_dir / "metadata.json")],
                                 capture_output=True, timeout=TOOL_TIMEOUT)  # fmt: skip
            assert cat.returncode == 0 and cat.stdout == recording.metadata_bytes
            same = run(*AS_NOBODY, "cmp", str(call_dir / "inbound.wav"), str(truth))
            assert same.returncode == 0, same.stdout + same.stderr
            target = str(call_dir / "inbound.wav")
            for argv in (("touch", str(call_dir / "new")), ("touch", target),
                         ("sh", "-c", f"echo x >> {target}"), ("truncate", "-s", "0", target),
                         ("rm", "-f", target), ("mkdir", str(call_dir / "d")),
                         ("chmod", "666", target), ("mv", target, str(call_dir / "x"))):  # fmt: skip
                for user in ((), AS_NOBODY):
                    result = run(*user, *argv)
                    assert result.returncode != 0, (user, argv)
                    assert ("Read-only file system" in result.stderr
                            or "Permission denied" in result.stderr), (user, argv, result.stderr)  # fmt: skip
            assert (call_dir / "inbound.wav").read_bytes() == truth.read_bytes()
            mode = os.stat(call_dir / "inbound.wav").st_mode
            assert stat.S_IMODE(mode) == 0o444
    finally:
        for child in truth_dir.iterdir():
            child.unlink()
        truth_dir.rmdir()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o666, 0o650])
def test_a_key_file_others_can_read_is_refused(
    emulator: EmulatorProc, tmp_path: Path, mode: int
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(emulator.api_key + "\n")
    key_file.chmod(mode)
    mountpoint = public_tempdir("amigofs-key-")
    env = {k: v for k, v in os.environ.items() if k != "AMIGO_API_KEY"}
    try:
        result = run(sys.executable, "-m", "amigofs", "mount", str(mountpoint), "--base-url",
                     emulator.url, "--api-key-file", str(key_file), "--foreground",
                     "--cache-dir", str(tmp_path / "cache"), env=env)  # fmt: skip
        assert result.returncode == 2, result
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "chmod 600" in result.stderr and f"{mode:04o}" in result.stderr
        assert "Traceback" not in result.stderr
        assert emulator.api_key not in result.stderr + result.stdout
        assert not is_mounted(mountpoint)
    finally:
        force_unmount(mountpoint)
        mountpoint.rmdir()


@contextlib.contextmanager
def daemon_mount(
    url: str, key_file: Path, cache_dir: Path, *extra: str
) -> Iterator[tuple[Path, int]]:
    """amigofs mount without --foreground (the daemon writes CACHE_DIR/mount.log), started with
    umask 0 so that only the modes amigofs asks for protect what it writes. Yields the
    mount point and the daemon's pid; always unmounts and waits for the daemon to exit."""
    mountpoint = public_tempdir("amigofs-daemon-")
    env = {k: v for k, v in os.environ.items() if k != "AMIGO_API_KEY"}
    pid = None
    try:
        result = run(sys.executable, "-m", "amigofs", "mount", str(mountpoint), "--base-url", url,
                     "--api-key-file", str(key_file), "--cache-dir", str(cache_dir), *extra,
                     env=env, preexec_fn=lambda: os.umask(0))  # fmt: skip
        assert result.returncode == 0, result.stderr
        pid = _daemon_pid(mountpoint)
        yield mountpoint, pid
    finally:
        force_unmount(mountpoint)
        if pid is not None:
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 15, "the daemon to exit")
        mountpoint.rmdir()


def _daemon_pid(mountpoint: Path) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"mount" in argv and os.fsencode(mountpoint) in argv:
                return int(proc.name)
    raise AssertionError(f"no daemon serving {mountpoint}")


def test_the_key_never_leaks_and_cache_files_are_private(tmp_path: Path) -> None:
    key = "sk-amigo-" + secrets.token_hex(20)
    needles = [key.encode(), key[9:].encode()]
    with running_emulator(
        api_key=key,
        workspaces=2,
        not_configured_workspaces=1,
        calls_per_workspace=8,
        max_duration=10.0,
        archived_calls=1,
        bad_metadata=1,
        size_mismatch=1,
        evil_urls=2,
        hostile_listing=True,
        url_ttl=1.0,
        fault_rate=0.2,
        fault_kinds=("500", "503", "429", "drop"),
        retry_after=0,
    ) as emulator:
        key_file = tmp_path / "key"
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        cache_dir = tmp_path / "cache"
        with daemon_mount(emulator.url, key_file, cache_dir, "--debug", "--timeout", "5") as (
            mountpoint,
            pid,
        ):
            # Every kind of failure gets logged at some level: errors, retries, refusals.
            walk = run("ls", "-lR", str(mountpoint))
            assert walk.stdout.count(".wav") >= 2 * 4, walk.stdout
            for recording in emulator.data.recordings():
                for name in ("metadata.json", "inbound.wav"):
                    with contextlib.suppress(OSError):
                        (
                            mountpoint / recording.workspace_id / recording.call_sid / name
                        ).read_bytes()
            with contextlib.suppress(OSError):
                os.stat(mountpoint / emulator.data.workspaces[0].id / ("CA" + "0" * 32))
            with contextlib.suppress(OSError):
                os.listdir(mountpoint / emulator.data.foreign_workspace_id)
            for leak in ("cmdline", "environ"):
                exposed = Path(f"/proc/{pid}/{leak}").read_bytes()
                assert not any(n in exposed for n in needles), f"the key is in /proc/PID/{leak}"
        log = (cache_dir / "mount.log").read_text(errors="replace")
        # --debug was on (requests are logged), and failures were met and logged.
        assert " DEBUG " in log and "GET /v1/" in log
        assert " ERROR " in log and " WARNING " in log
        assert sum(emulator.stats()["faults"].values()) > 0
        scanned = 0
        assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
        for root, dirs, files in os.walk(cache_dir):
            for name in dirs:
                mode = stat.S_IMODE((Path(root) / name).stat().st_mode)
                assert mode == 0o700, f"{Path(root) / name}: mode {mode:04o}"
            for name in files:
                path = Path(root) / name
                mode = stat.S_IMODE(path.lstat().st_mode)
                assert mode == 0o600, f"{path}: mode {mode:04o}"
                content = path.read_bytes()
                assert not any(n in content for n in needles), f"the key is in {path}"
                scanned += 1
        print(f"\nfiles scanned for the key: {scanned}; log lines: {len(log.splitlines())}")
        assert scanned >= 1


def test_cache_files_after_reads_are_0600_in_0700_dirs(emulator: EmulatorProc) -> None:
    # umask 0 for the mount: only the modes amigofs chooses protect its files.
    previous = os.umask(0)
    try:
        context = mounted(emulator.url, emulator.api_key)
        mnt: Mount = context.__enter__()
    finally:
        os.umask(previous)
    try:
        for recording in emulator.data.recordings():
            for name in ("inbound.wav", "outbound.wav", "metadata.json"):
                path = mnt.path / recording.workspace_id / recording.call_sid / name
                assert path.read_bytes() == presented_bytes(emulator, recording, name)
        assert mnt.cache_dir.exists()
        assert stat.S_IMODE(mnt.cache_dir.stat().st_mode) == 0o700
        checked = 0
        for root, dirs, files in os.walk(mnt.cache_dir):
            for name in dirs:
                assert stat.S_IMODE((Path(root) / name).stat().st_mode) == 0o700, name
            for name in files:
                path = Path(root) / name
                assert stat.S_IMODE(path.lstat().st_mode) == 0o600, path
                assert emulator.api_key.encode() not in path.read_bytes(), path
                checked += 1
        assert checked >= 1, "nothing in the cache to check"
    finally:
        context.__exit__(None, None, None)


def test_other_users_cannot_run_up_the_owners_key_with_made_up_names(
    emulator: EmulatorProc,
) -> None:
    workspace = next(emulator.data.recordings()).workspace_id
    with mounted(emulator.url, emulator.api_key, "--allow-other") as shared:
        listed = sorted(os.listdir(shared.path / workspace))
        emulator.reset_stats()
        probe = (
            "import os, sys\n"
            "gone = 0\n"
            "for i in range(1000):\n"
            "    try:\n"
            f"        os.stat({str(shared.path / workspace)!r} + '/CA%032x' % i)\n"
            "    except FileNotFoundError:\n"
            "        gone += 1\n"
            "print(gone)\n"
        )
        result = run(*AS_NOBODY, sys.executable, "-c", probe)
        assert result.returncode == 0 and result.stdout.strip() == "1000", result
        # Every name answered from the listing: not one request on the owner's key.
        assert sum(emulator.stats()["requests"].values()) == 0, emulator.stats()["requests"]
        # The calls that exist are still there for everyone.
        visible = run(*AS_NOBODY, "stat", str(shared.path / workspace / listed[0]))
        assert visible.returncode == 0, visible.stderr
