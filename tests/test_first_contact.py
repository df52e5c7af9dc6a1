"""What a new user meets first, tried as one would: every mistake is one line and exit 2,
a mount that cannot work is refused before it says yes, Ctrl-C leaves a clean
terminal and no mount, and the commands around a mount (unmount, workspaces, stats,
prefetch, -o, the fstab helper) say what is true."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from amigofs.config import is_workspace_id
from amigofs.daemon.mount_table import is_mounted
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    MOUNT_DEADLINE,
    STOP_DEADLINE,
    empty_mountpoint,
    mount_command,
    mounted,
    stop_process,
    wait_until,
)

TIMEOUT = 60
FOREIGN = str(uuid.UUID(int=0x3F0C0E6A1B2C4D5E8F90A1B2C3D4E5F6))  # visible to no key


def python_m(
    module: str, *argv: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, argv)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def amigofs(
    *argv: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return python_m("amigofs", *argv, env=env)


def fstab_helper(
    *argv: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """mount.fuse.amigofs, as mount(8) runs it (through python, so that it is this tree's)."""
    return python_m("amigofs.commands.fstab", *argv, env=env)


def workspaces_in(root: Path) -> list[str]:
    """The workspaces a mount's root lists (whatever else it may list beside them)."""
    return sorted(name for name in os.listdir(root) if is_workspace_id(name))


def with_key(key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMIGO_", "AMIGOFS_"))}
    if key is not None:
        env["AMIGO_API_KEY"] = key
    return env


def assert_one_line(result: subprocess.CompletedProcess[str], says: str, code: int = 2) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert says in result.stderr, result.stderr
    assert result.stdout == ""


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amigofs-first-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def mountpoint() -> Iterator[Path]:
    """A mount point that is always left unmounted (for the daemon mode and helpers)."""
    with empty_mountpoint("amigofs-first-mnt-") as path:
        yield path


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=2, calls_per_workspace=3, max_duration=5.0) as emu:
        yield emu


def key_file(directory: Path, key: str) -> Path:
    path = directory / "api.key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- mistakes: one line, exit 2 -------------------------------------------------------


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemon"])
@pytest.mark.parametrize(
    ("cache_dir", "says"),
    [("FILE", "is not a directory"), ("/proc", "cannot hold files"), ("/sys/kernel", "cannot hold files")],
)  # fmt: skip
def test_a_cache_dir_that_cannot_hold_files_is_one_line(
    emulator: EmulatorProc, cache_dir: str, says: str, foreground: bool
) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        if cache_dir == "FILE":
            cache_dir = str(tmp / "a-file")
            Path(cache_dir).write_text("not a directory\n")
        extra = ["--foreground"] if foreground else []
        result = amigofs("mount", mnt, "--base-url", emulator.url, "--cache-dir", cache_dir,
                         *extra, env=with_key(emulator.api_key))  # fmt: skip
        assert_one_line(result, says)
        assert f"amigofs: cache directory {cache_dir}" in result.stderr
        assert not is_mounted(mnt)


def test_a_cache_dir_under_proc_through_the_fstab_helper(emulator: EmulatorProc) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        options = f"base_url={emulator.url},api_key_file={key_file(tmp, emulator.api_key)},cache_dir=/proc"
        result = fstab_helper("none", mnt, "-o", options, env=with_key(None))
        assert_one_line(result, "cache directory /proc cannot hold files")
        assert not is_mounted(mnt)


def test_a_workspace_that_is_no_uuid_is_refused_before_any_request(emulator: EmulatorProc) -> None:
    emulator.reset_stats()
    with mountpoint() as mnt:
        result = amigofs("mount", mnt, "--base-url", emulator.url, "--workspace", "not-a-uuid",
                         env=with_key(emulator.api_key))  # fmt: skip
        assert_one_line(result, "--workspace: 'not-a-uuid' is not a workspace id")
    assert emulator.stats()["requests"] == {}


def test_a_port_out_of_range_is_one_line() -> None:
    with mountpoint() as mnt:
        result = amigofs("mount", mnt, "--base-url", "http://127.0.0.1:99999", env=with_key("k"))
        assert_one_line(result, "--base-url: must be an http(s) URL")


# --- refused at mount time -------------------------------------------------------------


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemon"])
def test_a_wrong_key_is_refused_at_mount_time(emulator: EmulatorProc, foreground: bool) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        argv = mount_command(emulator.url, mnt, tmp / "cache")[3:]
        if not foreground:
            argv.remove("--foreground")
        result = amigofs(*argv, env=with_key("not-the-key"))
        assert_one_line(result, "the API key was refused by")
        assert "HTTP 401" in result.stderr
        assert not is_mounted(mnt)


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemon"])
def test_a_server_that_is_down_is_refused_at_mount_time(foreground: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with scratch() as tmp, mountpoint() as mnt:
        argv = mount_command(url, mnt, tmp / "cache")[3:]
        if not foreground:
            argv.remove("--foreground")
        result = amigofs(*argv, env=with_key("k"))
        assert_one_line(result, f"cannot mount: {url} gave no usable answer", code=3)
        assert not is_mounted(mnt)


def test_a_server_that_is_down_mounts_what_an_earlier_mount_cached() -> None:
    with scratch() as tmp, mountpoint() as mnt:
        cache = tmp / "cache"
        with running_emulator(
            workspaces=1, calls_per_workspace=2, min_duration=2.0, max_duration=3.0
        ) as emu:
            workspace = emu.data.workspaces[0].id
            with mounted(emu.url, emu.api_key, "--cache-dir", str(cache)) as first:
                calls = sorted(os.listdir(first.path / workspace))
                assert calls
            url, key = emu.url, emu.api_key
        # The server is gone now; the cache holds the tree.
        result = amigofs("mount", mnt, "--base-url", url, "--cache-dir", cache, env=with_key(key))
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert f"serving what the cache in {cache} holds" in result.stderr, result.stderr
        assert workspaces_in(mnt) == [workspace]
        assert sorted(os.listdir(mnt / workspace)) == calls


def test_a_workspace_the_key_cannot_see_is_refused(emulator: EmulatorProc) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        result = amigofs("mount", mnt, "--base-url", emulator.url, "--cache-dir", tmp / "c",
                         "--workspace", FOREIGN, env=with_key(emulator.api_key))  # fmt: skip
        assert_one_line(result, f"workspace {FOREIGN} is not visible to this API key")
        assert not is_mounted(mnt)


def test_one_bad_workspace_among_good_ones_mounts_the_good_ones(emulator: EmulatorProc) -> None:
    good = sorted(ws.id for ws in emulator.data.workspaces)[0]
    with scratch() as tmp, mountpoint() as mnt:
        result = amigofs("mount", mnt, "--base-url", emulator.url, "--cache-dir", tmp / "c",
                         "--workspace", FOREIGN, "--workspace", good,
                         env=with_key(emulator.api_key))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stderr == (
            f"amigofs: warning: workspace {FOREIGN} is not visible to this API key: not mounted\n"
        )
        assert workspaces_in(mnt) == [good]
        assert FOREIGN in (tmp / "c" / "mount.log").read_text()


# --- Ctrl-C --------------------------------------------------------------------------------


def start_demo(mnt: Path) -> subprocess.Popen[str]:
    """The demo in a session of its own: the test is its terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "amigofs", "demo", str(mnt)], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def interrupt(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group."""
    os.killpg(process.pid, signal.SIGINT)
    return process.communicate(timeout=STOP_DEADLINE * 2)


def test_ctrl_c_on_the_demo_leaves_a_clean_terminal_and_no_mount() -> None:
    with mountpoint() as mnt:
        demo = start_demo(mnt)
        try:
            assert demo.stdout is not None
            # The guide is printed once the mount is up and listed.
            for line in demo.stdout:
                if "Press Ctrl-C" in line:
                    break
            assert is_mounted(mnt)
            _, err = interrupt(demo)
        finally:
            stop_process(demo)
        assert demo.returncode == 0, err
        assert "Traceback" not in err and "Error" not in err, err
        assert err.strip().splitlines()[-1] == "amigofs demo: unmounted and stopped", err
        # Nothing but one-line messages (no exception group from the fetch worker).
        assert all(line.startswith("amigofs") for line in err.strip().splitlines()), err
        assert not is_mounted(mnt)


def test_ctrl_c_while_the_demo_starts_is_a_stop_not_a_failure() -> None:
    with mountpoint() as mnt:
        demo = start_demo(mnt)
        try:
            # The demo's mount process has started, and is not up yet.
            wait_until(lambda: mounts_started(mnt), MOUNT_DEADLINE, "the demo's mount process")
            _, err = interrupt(demo)
        finally:
            stop_process(demo)
        assert demo.returncode == 0, err
        assert "Traceback" not in err and "failed" not in err, err
        assert err.strip().splitlines()[-1] == "amigofs demo: unmounted and stopped", err
        assert not is_mounted(mnt)


def mounts_started(mnt: Path) -> bool:
    """Whether an `amigofs mount` process for `mnt` is running."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:4] == [b"-m", b"amigofs", b"mount"] and os.fsencode(str(mnt)) in argv:
            return True
    return False


def test_ctrl_c_on_a_foreground_mount_leaves_a_clean_terminal_and_no_mount(
    emulator: EmulatorProc,
) -> None:
    with scratch() as tmp, mountpoint() as mnt:
        process = subprocess.Popen(
            mount_command(emulator.url, mnt, tmp / "cache"), env=with_key(emulator.api_key),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: is_mounted(mnt) or process.poll() is not None, MOUNT_DEADLINE, "mount"
            )
            workspace = workspaces_in(mnt)[0]
            call = sorted(os.listdir(mnt / workspace))[0]
            (mnt / workspace / call / "outbound.wav").read_bytes()  # the fetch worker at work
            _, err = interrupt(process)
        finally:
            stop_process(process)
        assert process.returncode == 0, err
        assert "Traceback" not in err, err
        assert "SIGINT: unmounting" in err and "unmounted" in err, err
        assert not is_mounted(mnt)


def test_ctrl_c_while_the_daemon_starts_stops_it_and_nothing_mounts_later() -> None:
    # Each request takes 3 s: Ctrl-C comes while the daemon checks the server.
    with (
        running_emulator(workspaces=1, calls_per_workspace=1, latency=3.0) as emu,
        scratch() as tmp,
        mountpoint() as mnt,
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "amigofs", "mount", str(mnt), "--base-url", emu.url,
             "--cache-dir", str(tmp / "cache")],
            env=with_key(emu.api_key), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: any(e.get("op") == "list-workspaces" for e in emu.stats()["log"]),
                MOUNT_DEADLINE,
                "the daemon's first request",
            )
            _, err = interrupt(process)
        finally:
            stop_process(process)
        assert process.returncode == 130, err
        assert err == "amigofs: interrupted; nothing was mounted\n"
        # The daemon is gone (the command waited for it), so nothing can mount later.
        assert not daemons_of(mnt)
        assert not is_mounted(mnt)


def daemons_of(mnt: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[-1].split()[0]
        except OSError:
            continue
        if os.fsencode(str(mnt)) in argv and b"amigofs" in argv and state != b"Z":
            found.append(int(entry.name))
    return found


# --- signals while stopping ----------------------------------------------------------------


def test_a_second_signal_while_it_stops_exits_1_not_killed_by_it(emulator: EmulatorProc) -> None:
    with mounted(emulator.url, emulator.api_key) as mnt:
        os.listdir(mnt.path)
        mnt.process.send_signal(signal.SIGTERM)
        # Unmounted, still shutting down: the moment a second signal used to kill it.
        wait_until(lambda: "unmounted" in mnt.log(), STOP_DEADLINE, "the unmount")
        mnt.process.send_signal(signal.SIGTERM)
        code = mnt.process.wait(STOP_DEADLINE)
        # 0 if it had exited before the second arrived; never killed by it (-15).
        assert code in (0, 1), (code, mnt.log())
        assert "Traceback" not in mnt.log()
        wait_until(lambda: not is_mounted(mnt.path), STOP_DEADLINE, "the mount to go")


def test_a_stop_held_up_by_a_request_says_what_it_waits_on_and_how_to_force_it() -> None:
    with (
        running_emulator(workspaces=1, calls_per_workspace=1) as emu,
        mounted(emu.url, emu.api_key, "--timeout", "60") as mnt,
    ):
        emu.control(latency=30.0)  # from now on: the mount's own check went through
        lister = subprocess.Popen(["ls", str(mnt.path)], stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: emu.stats()["requests"].get("list-workspaces", 0) >= 2, 20,
                       "the listing request")  # fmt: skip
            mnt.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "still unmounting" in mnt.log(), 10, "the word on what it waits")
            line = next(x for x in mnt.log().splitlines() if "still unmounting" in x)
            assert "waiting for file operations in progress" in line
            assert f"kill -TERM {mnt.process.pid}" in line
            mnt.process.send_signal(signal.SIGTERM)
            assert mnt.process.wait(STOP_DEADLINE) == 1
        finally:
            lister.kill()
            lister.wait()


# --- unmount -------------------------------------------------------------------------------


def test_unmount_waits_for_the_daemon_and_says_when_busy_or_not_mounted(
    emulator: EmulatorProc,
) -> None:
    with mounted(emulator.url, emulator.api_key) as mnt:
        workspace = workspaces_in(mnt.path)[0]
        # A shell sitting in a directory of the mount keeps it busy.
        holder = subprocess.Popen(["sleep", "600"], cwd=mnt.path / workspace)
        try:
            busy = amigofs("unmount", mnt.path)
            assert_one_line(busy, f"amigofs: {mnt.path} is busy", code=1)
            assert f"amigofs unmount --lazy {mnt.path}" in busy.stderr
            assert is_mounted(mnt.path) and mnt.process.poll() is None
        finally:
            holder.kill()
            holder.wait()
        done = amigofs("unmount", mnt.path)
        assert (done.returncode, done.stderr, done.stdout) == (0, "", "")
        # Returned only once the daemon had exited.
        assert mnt.process.poll() == 0
        assert not is_mounted(mnt.path)
        again = amigofs("unmount", mnt.path)
        assert_one_line(again, f"amigofs: {mnt.path} is not mounted")


def test_unmount_lazy_detaches_a_busy_mount(emulator: EmulatorProc) -> None:
    with mounted(emulator.url, emulator.api_key) as mnt:
        holder = subprocess.Popen(["sleep", "600"], cwd=mnt.path)
        try:
            result = amigofs("unmount", "--lazy", mnt.path)
            assert result.returncode == 0, result.stderr
            assert not is_mounted(mnt.path)
        finally:
            holder.kill()
            holder.wait()
        assert mnt.process.wait(STOP_DEADLINE) == 0


# --- workspaces ----------------------------------------------------------------------------


def test_workspaces_lists_id_slug_and_name(emulator: EmulatorProc) -> None:
    with scratch() as tmp:
        table = amigofs("workspaces", "--base-url", emulator.url, env=with_key(emulator.api_key))
        assert table.returncode == 0 and table.stderr == "", table
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["ID", "SLUG", "NAME"]
        rows = {line.split()[0]: line for line in lines[1:]}
        assert set(rows) == {ws.id for ws in emulator.data.workspaces}
        for ws in emulator.data.workspaces:
            assert re.fullmatch(
                rf"{ws.id}\s+{re.escape(ws.slug)}\s+{re.escape(ws.name)}", rows[ws.id]
            )

        # The key from a file, the server from a config file, as mount takes them.
        conf = tmp / "amigofs.toml"
        conf.write_text(
            f'base_url = "{emulator.url}"\napi_key_file = "{key_file(tmp, emulator.api_key)}"\n'
        )
        as_json = amigofs("workspaces", "--config", conf, "--json", env=with_key(None))
        assert as_json.returncode == 0, as_json.stderr
        assert sorted(json.loads(as_json.stdout), key=lambda w: w["id"]) == sorted(
            ({"id": ws.id, "slug": ws.slug, "name": ws.name} for ws in emulator.data.workspaces),
            key=lambda w: w["id"],
        )
        wrong = amigofs("workspaces", "--base-url", emulator.url, env=with_key("wrong"))
        assert_one_line(wrong, "the API key was refused")


# --- -o and the fstab helper ------------------------------------------------------------------


def test_mount_takes_o_options_with_the_fstab_names(emulator: EmulatorProc) -> None:
    workspace = sorted(ws.id for ws in emulator.data.workspaces)[1]
    with scratch() as tmp, mountpoint() as mnt:
        options = (f"base_url={emulator.url},cache_dir={tmp / 'cache'},workspace={workspace},"
                   "timeout=20,negative_ttl=3,cache_size=64M,kernel_readahead=512K")  # fmt: skip
        result = amigofs("mount", mnt, "-o", options, env=with_key(emulator.api_key))
        assert result.returncode == 0, result.stderr
        assert workspaces_in(mnt) == [workspace]
        stats = json.loads(amigofs("stats", "--json", mnt).stdout)
        assert stats["cache"]["max_bytes"] == 64 << 20

    with mountpoint() as mnt:
        bad = amigofs("mount", mnt, "-o", "timeout=abc", env=with_key("k"))
        assert_one_line(bad, "amigofs: option timeout=: expected a number of seconds, not 'abc'")


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ("timeout=abc", "option timeout=: expected a number of seconds, not 'abc'"),
        ("cache_size=1K", "option cache_size=: must be at least 16M"),
        ("workspace=nope", "option workspace=: 'nope' is not a workspace id"),
        ("colour=blue", "unknown option 'colour'"),
        ("allow_other=yes", "option allow_other takes no value"),
    ],
)
def test_fstab_helper_names_a_bad_option_as_it_was_typed(options: str, says: str) -> None:
    with mountpoint() as mnt:
        result = fstab_helper("none", mnt, "-o", f"base_url=http://127.0.0.1:9,{options}",
                              env=with_key("k"))  # fmt: skip
        assert_one_line(result, f"mount.fuse.amigofs: {says}")
        assert "--" not in result.stderr  # no flag of `amigofs mount`, no usage dump


def test_fstab_helper_says_api_key_file_not_a_flag() -> None:
    with mountpoint() as mnt:
        result = fstab_helper("none", mnt, "-o", "base_url=http://127.0.0.1:9", env=with_key(None))
        assert_one_line(
            result, "no API key: set AMIGO_API_KEY or pass the option api_key_file=FILE"
        )


def test_fstab_helper_help_lists_every_option() -> None:
    result = fstab_helper("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: mount.fuse.amigofs none MOUNTPOINT -o")
    for name in ("base_url=", "workspace=", "api_key_file=", "cache_dir=", "cache_size=",
                 "cache_min_free=", "kernel_readahead=", "timeout=", "listing_ttl=",
                 "negative_ttl=", "log_level=", "config=", "allow_other", "insecure_http"):  # fmt: skip
        assert name in result.stdout, name


# --- stats ---------------------------------------------------------------------------------------


def test_stats_in_the_prometheus_format_parse_and_agree_with_json(emulator: EmulatorProc) -> None:
    with mounted(emulator.url, emulator.api_key) as mnt:
        workspace = workspaces_in(mnt.path)[0]
        call = sorted(os.listdir(mnt.path / workspace))[0]
        (mnt.path / workspace / call / "outbound.wav").read_bytes()
        wait_until(
            lambda: json.loads(amigofs("stats", "--json", mnt.path).stdout)["bytes_in_flight"] == 0,
            20, "downloads to land",
        )  # fmt: skip
        doc = json.loads(amigofs("stats", "--json", mnt.path).stdout)
        result = amigofs("stats", "--prometheus", mnt.path)
        assert result.returncode == 0 and result.stderr == "", result
        families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
        # Every family declared: the parser calls a sample it cannot place "unknown".
        assert {f.type for f in families.values()} <= {"counter", "gauge"}, families
        label = {"mountpoint": str(mnt.path)}

        def value(name: str, **labels: str) -> float:
            for sample in families[name].samples:
                if sample.labels == {**label, **labels} and not sample.name.endswith("_created"):
                    return float(sample.value)
            raise AssertionError(f"no sample {name} {labels}")

        assert families["amigofs_requests"].type == "counter"
        for op, count in doc["requests"].items():
            assert value("amigofs_requests", operation=op) == count
        assert value("amigofs_fetched_bytes") == doc["bytes_fetched"] > 0
        assert value("amigofs_errors") == doc["errors"]
        assert value("amigofs_retries") == doc["retries"]
        assert value("amigofs_cache_used_bytes") == doc["cache"]["used_bytes"] > 0
        assert value("amigofs_cache_max_bytes") == doc["cache"]["max_bytes"]
        assert value("amigofs_cache_blocks", event="fetched") == doc["cache"]["blocks_fetched"] > 0
        assert value("amigofs_cache_reads", result="waited") == doc["cache"]["reads_waited"]


def test_stats_text_names_what_is_counted_and_a_normalised_path(emulator: EmulatorProc) -> None:
    with mounted(emulator.url, emulator.api_key) as mnt:
        workspace = workspaces_in(mnt.path)[0]
        result = amigofs("stats", f"{mnt.path}/{workspace}/..")
        assert result.returncode == 0, result.stderr
        first = result.stdout.splitlines()[0]
        assert first.startswith(f"amigofs at {mnt.path} (pid {mnt.process.pid}"), first
        assert "hits" not in result.stdout  # reads of the disk cache were called memory hits
        assert re.search(
            r"^reads: +\d+ served at once from the disk cache, \d+ waited", result.stdout, re.M
        )
        assert re.search(
            r"^blocks: +\d+ fetched \(\d+ failed\), \d+ checked on first use", result.stdout, re.M
        )


def test_stats_of_a_dead_mount_say_so_in_one_line(emulator: EmulatorProc) -> None:
    with mounted(emulator.url, emulator.api_key) as mnt:
        # A dead mount: the daemon killed while its cleaners are held back.
        guards = [int(p) for p in subprocess.run(
            ["pgrep", "-f", f"(amigofs.daemon.unmount_guard|fusermount3) .*{mnt.path}"],
            capture_output=True, text=True).stdout.split()]  # fmt: skip
        for pid in guards:
            os.kill(pid, signal.SIGSTOP)
        try:
            mnt.process.kill()
            mnt.process.wait(STOP_DEADLINE)
            result = amigofs("stats", mnt.path)
            assert_one_line(result, f"amigofs: {mnt.path} is a dead mount")
            assert f"fusermount3 -u -z {mnt.path}" in result.stderr
            assert "Errno" not in result.stderr
        finally:
            for pid in guards:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --- prefetch --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_emulator() -> Iterator[EmulatorProc]:
    # About 8 s to fetch: long enough for lines every few seconds.
    with running_emulator(
        workspaces=1, calls_per_workspace=4, min_duration=20.0, max_duration=25.0,
        bandwidth=100_000,
    ) as emu:  # fmt: skip
        yield emu


def test_prefetch_without_a_terminal_prints_a_line_every_few_seconds(
    slow_emulator: EmulatorProc,
) -> None:
    emu = slow_emulator
    with mounted(emu.url, emu.api_key) as mnt:
        workspace = mnt.path / emu.data.workspaces[0].id
        result = amigofs("prefetch", workspace)
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        progress = [x for x in lines if x.startswith("prefetch: ") and "%)" in x]
        assert len(progress) >= 2, result.stderr  # on the way, and at the end
        assert progress[-1].startswith("prefetch: ") and "(100%)" in progress[-1]
        assert "\r" not in result.stderr and "\033" not in result.stderr
        # No ETA guessed from the first bytes: none beyond what the run took.
        for line in progress:
            eta = line.rsplit("ETA ", 1)[1]
            assert eta == "-" or re.fullmatch(r"\d+s|\dm\d\ds", eta), line
        summary = lines[-1]
        calls = len(os.listdir(workspace))
        assert summary.startswith(f"amigofs prefetch: {calls * 3} files, "), summary
        assert summary.endswith("fetched from the API (none of it was cached)"), summary

        again = amigofs("prefetch", workspace / sorted(os.listdir(workspace))[0] / "inbound.wav")
        assert again.returncode == 0, again.stderr
        assert again.stderr.splitlines()[-1].startswith("amigofs prefetch: 1 file, ")
        assert again.stderr.endswith(
            "all of it from the disk cache (nothing fetched from the API)\n"
        )


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1)")
def test_prefetch_on_a_terminal_draws_a_bar_and_shows_the_scan(slow_emulator: EmulatorProc) -> None:
    emu = slow_emulator
    with scratch() as tmp, mounted(emu.url, emu.api_key, "--cache-dir", str(tmp / "c")) as mnt:
        workspace = mnt.path / emu.data.workspaces[0].id
        command = f"{sys.executable} -m amigofs prefetch {workspace}"
        # Half a second a request: listing what to read takes a while, as on a large
        # workspace behind the internet, and the scan shows meanwhile. The bar redraws every
        # 0.2 s, so the bytes need not come as slowly as for the plain lines (5 s apart).
        emu.control(latency=0.5, bandwidth=1_000_000)
        try:
            # script(1) gives the command a terminal and copies what it writes.
            result = subprocess.run(["script", "-qec", command, "/dev/null"],
                                    capture_output=True, timeout=TIMEOUT,
                                    stdin=subprocess.DEVNULL)  # fmt: skip
        finally:
            emu.control(latency=0.0, bandwidth=emu.config.bandwidth)
        out = result.stdout.decode()  # bytes: text mode would turn each \r into a newline
        assert result.returncode == 0, out
        assert "\rscanning: " in out or out.startswith("scanning: "), out
        assert "\r[" in out and "#" in out and "ETA" in out, out
        assert "(100%)" in out
        assert "Traceback" not in out
        assert "amigofs prefetch: 12 files, " in out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_metrics_units_pass_verify() -> None:
    repo = Path(__file__).resolve().parent.parent
    with scratch() as tmp:
        for unit in ("amigofs-metrics@.service", "amigofs-metrics@.timer"):
            text = (repo / "systemd" / unit).read_text()
            # The units name the installed command; here it is the test's virtualenv's.
            text = text.replace(
                "/usr/local/bin/amigofs", str(Path(sys.executable).parent / "amigofs")
            )
            (tmp / unit).write_text(text)
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", tmp / "amigofs-metrics@mnt-amigo.service",
             tmp / "amigofs-metrics@mnt-amigo.timer"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert result.returncode == 0 and not result.stdout and not result.stderr, result
