"""What decides where the API key goes, and what it is, must be the user's own: config
files, key files and the cache directory that someone else could write are refused,
with one line naming the path and the fix, before anything is sent anywhere; plain http
leaves the machine only when asked for; errors never echo a secret. The refusals that
need no second user, server or mount run in this process: tests/unit/test_config.py."""

from __future__ import annotations

import os
import pwd
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amigofs.cache.block_format import FileKey, block_path
from amigofs.daemon.mount_table import is_mounted
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import (
    MOUNT_DEADLINE,
    force_unmount,
    public_tempdir,
    wait_until,
    workspace_names,
)
from tests.unit.test_config import SECRET, key_file, listener, nothing_arrived
from tests.unit.test_config import assert_refused as assert_one_line

pytestmark = pytest.mark.mount

REFUSAL_DEADLINE = 20.0  # a refusal is immediate; this only bounds a hang


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@pytest.fixture(scope="module")
def other_user() -> Iterator[User]:
    """A second local user, made for these tests and always removed."""
    name = "amigofs-t" + secrets.token_hex(3)
    subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=REFUSAL_DEADLINE)  # fmt: skip
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", "-r", name], check=True, capture_output=True,
                       timeout=REFUSAL_DEADLINE)  # fmt: skip


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=1, calls_per_workspace=1, max_duration=5.0) as emu:
        yield emu


@pytest.fixture
def mountpoint() -> Iterator[Path]:
    path = public_tempdir("amigofs-sec-")
    try:
        yield path
    finally:
        force_unmount(path)
        path.rmdir()


def own_address() -> str:
    """An address of this machine that is not loopback (the one its route out uses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # picks a route; a UDP connect sends nothing
        address: str = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no address other than loopback")
    return address


def url_of(server: socket.socket) -> str:
    host, port = server.getsockname()[:2]
    return f"http://{host}:{port}"


def without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "AMIGO_API_KEY"}


def mount(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amigofs", "mount", *map(str, argv)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=REFUSAL_DEADLINE, env=without_key() if env is None else env,
    )  # fmt: skip


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert SECRET not in result.stderr + result.stdout
    return assert_one_line((result.returncode, result.stderr), *needles)


# --- the config file ----------------------------------------------------------------------


def test_a_config_owned_by_another_user_is_refused_and_nothing_is_sent(
    other_user: User, tmp_path: Path, mountpoint: Path
) -> None:
    # The case: the config points at another host and at a file only root can read.
    root_only = key_file(tmp_path, SECRET)
    with listener("127.0.0.3") as server:
        config = tmp_path / "amigofs.toml"
        config.write_text(f'base_url = "{url_of(server)}"\napi_key_file = "{root_only}"\n')
        os.chown(config, other_user.uid, other_user.gid)
        result = mount(mountpoint, "--config", config, "--foreground")
        line = assert_refused(result, f"config {config} is owned by {other_user.name}")
        assert "use a config file of your own" in line
        assert nothing_arrived(server)
    assert not is_mounted(mountpoint)


def test_a_fifo_as_config_or_key_file_is_refused_at_once(tmp_path: Path, mountpoint: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    for argv, what in ((("--api-key-file", fifo), "API key file"), (("--config", fifo), "config")):
        started = time.monotonic()
        result = mount(mountpoint, *argv, "--foreground")
        assert_refused(result, f"{what} {fifo} is not a regular file")
        assert time.monotonic() - started < REFUSAL_DEADLINE / 2


# --- the key file -------------------------------------------------------------------------


def test_a_key_file_message_names_the_given_path_and_advises_only_the_users_own_file(
    tmp_path: Path, mountpoint: Path, other_user: User
) -> None:
    # A system file that is not a key: no advice to chmod it.
    shadow = assert_refused(mount(mountpoint, "--api-key-file", "/etc/shadow", "--foreground"),
                            "API key file /etc/shadow is accessible by group or others")  # fmt: skip
    assert "chmod" not in shadow and "use a key file of your own" in shadow
    # The user's own loose key file: the fix, naming that path.
    own = key_file(tmp_path, SECRET, 0o640)
    assert_refused(mount(mountpoint, "--api-key-file", own, "--foreground"),
                   f"API key file {own} is accessible by group or others (mode 0640)",
                   f"run: chmod 600 {own}")  # fmt: skip
    # Through a link: named as given, and no chmod of whatever the link points at.
    link = tmp_path / "link.key"
    link.symlink_to(own)
    through = assert_refused(mount(mountpoint, "--api-key-file", link, "--foreground"),
                             f"API key file {link} is accessible by group or others")  # fmt: skip
    assert "chmod" not in through
    # Another user's key file, even a private one.
    theirs = key_file(Path(tempfile.mkdtemp(dir=tmp_path)), SECRET, 0o600)
    os.chown(theirs, other_user.uid, other_user.gid)
    assert_refused(mount(mountpoint, "--api-key-file", theirs, "--foreground"),
                   f"API key file {theirs} is owned by {other_user.name}")  # fmt: skip


# --- plain http -------------------------------------------------------------------------


def test_plain_http_to_another_host_is_refused_before_connecting(mountpoint: Path) -> None:
    # This machine's own non-loopback address: a connection would show here.
    address = own_address()
    with listener(address) as server:
        env = {**without_key(), "AMIGO_API_KEY": SECRET}
        result = mount(mountpoint, "--base-url", url_of(server), "--foreground", env=env)
        assert_refused(result, f"--base-url {url_of(server)} is plain http", "--insecure-http")
        env_url = {**env, "AMIGOFS_BASE_URL": url_of(server)}
        assert_refused(mount(mountpoint, "--foreground", env=env_url), "--insecure-http")
        assert nothing_arrived(server)
    # The documentation's address, which nothing answers: refused, not waited on.
    result = mount(mountpoint, "--base-url", "http://192.0.2.1", "--foreground", env=env)
    assert_refused(result, "is plain http", "--insecure-http")
    assert not is_mounted(mountpoint)


def test_insecure_http_lets_plain_http_to_another_host_through(
    mountpoint: Path, tmp_path: Path
) -> None:
    address = own_address()
    with listener(address) as server:
        server.setblocking(True)
        server.settimeout(MOUNT_DEADLINE)
        for how in ("flag", "env", "config"):
            env = {**without_key(), "AMIGO_API_KEY": SECRET}
            argv = [mountpoint, "--base-url", url_of(server), "--cache-dir", tmp_path / how,
                    "--timeout", "3"]  # fmt: skip
            if how == "flag":
                argv.append("--insecure-http")
            elif how == "env":
                env["AMIGOFS_INSECURE_HTTP"] = "1"
            else:
                config = tmp_path / "amigofs.toml"
                config.write_text("insecure_http = true\n")
                argv += ["--config", config]
            # The mount's check before mounting is its first request: that it reaches the
            # other host, key and all, is what insecure_http allows. The listener never
            # answers, so the mount is then refused as a server that does not answer.
            started = subprocess.Popen(
                [sys.executable, "-m", "amigofs", "mount", *map(str, argv)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env,
            )  # fmt: skip
            try:
                connection, _ = server.accept()
                with connection:
                    connection.settimeout(MOUNT_DEADLINE)
                    request = connection.recv(65536)
                assert request.startswith(b"GET /v1/workspaces"), how
                assert b"Bearer " + SECRET.encode() in request, how
                _, err = started.communicate(timeout=REFUSAL_DEADLINE)
                assert started.returncode == 3, (how, err)  # exits.UNREACHABLE
                assert "gave no usable answer" in err, (how, err)
            finally:
                if started.poll() is None:
                    started.kill()
                    started.communicate()
                force_unmount(mountpoint)
            assert not is_mounted(mountpoint)


def test_plain_http_to_loopback_is_allowed(emulator: EmulatorProc, mountpoint: Path) -> None:
    env = {**without_key(), "AMIGO_API_KEY": emulator.api_key}
    for host in ("127.0.0.1", "localhost"):
        url = emulator.url.replace("127.0.0.1", host)
        with tempfile.TemporaryDirectory() as cache:
            result = mount(mountpoint, "--base-url", url, "--cache-dir", cache, env=env)
            try:
                assert result.returncode == 0, result.stderr
                assert workspace_names(mountpoint) == [emulator.data.workspaces[0].id]
            finally:
                force_unmount(mountpoint)


# --- the cache directory ------------------------------------------------------------------


def test_a_mount_log_symlink_in_the_cache_dir_is_refused_and_its_target_untouched(
    emulator: EmulatorProc, tmp_path: Path, mountpoint: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file\n")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / "mount.log").symlink_to(victim)
    env = {**without_key(), "AMIGO_API_KEY": emulator.api_key}
    try:
        result = mount(mountpoint, "--base-url", emulator.url, "--cache-dir", cache, env=env)
        assert_refused(result, f"{cache / 'mount.log'} is a symbolic link")
        assert victim.read_bytes() == b"root's file\n"
        assert not is_mounted(mountpoint)
    finally:
        force_unmount(mountpoint)


@pytest.mark.parametrize("foreground", [True, False])
@pytest.mark.parametrize("whose", ["another user's", "mode 0777"])
def test_a_cache_dir_someone_else_can_write_is_refused(
    emulator: EmulatorProc, tmp_path: Path, mountpoint: Path, other_user: User,
    whose: str, foreground: bool,
) -> None:  # fmt: skip
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    if whose == "mode 0777":
        cache.chmod(0o777)
        why = "writable"
    else:
        os.chown(cache, other_user.uid, other_user.gid)
        why = "owned by"
    env = {**without_key(), "AMIGO_API_KEY": emulator.api_key}
    flags = ["--foreground"] if foreground else []
    try:
        result = mount(mountpoint, "--base-url", emulator.url, "--cache-dir", cache, *flags,
                       env=env)  # fmt: skip
        assert_refused(result, f"cache directory {cache}", why)
        assert not is_mounted(mountpoint)
        assert os.listdir(cache) == []
    finally:
        force_unmount(mountpoint)
        wait_until(lambda: not is_mounted(mountpoint), MOUNT_DEADLINE, "no mount left")


# --- the cache directory in a world-writable place ----------------------------------------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory like /tmp: everyone may create entries in it (sticky)."""
    path = Path(tempfile.mkdtemp(prefix="amigofs-shared-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False, timeout=REFUSAL_DEADLINE)


def test_a_planted_symlink_as_the_default_cache_dir_is_refused_and_its_target_untouched(
    emulator: EmulatorProc, mountpoint: Path, other_user: User, shared_tmp: Path
) -> None:
    # XDG_CACHE_HOME in a shared place; the other user plants `amigofs` as a link to a
    # directory of the victim's (as /etc would be), before the first mount.
    target = shared_tmp / "victims-dir"
    target.mkdir(mode=0o755)
    (target / "passwd").write_text("root:x:0:0\n")
    subprocess.run([*as_user(other_user), "ln", "-s", str(target), str(shared_tmp / "amigofs")],
                   check=True, timeout=REFUSAL_DEADLINE)  # fmt: skip
    env = {**without_key(), "AMIGO_API_KEY": emulator.api_key, "XDG_CACHE_HOME": str(shared_tmp)}
    for flags in (["--foreground"], []):
        try:
            result = mount(mountpoint, "--base-url", emulator.url, *flags, env=env)
            assert_refused(result, str(shared_tmp / "amigofs"))
            assert not is_mounted(mountpoint)
        finally:
            force_unmount(mountpoint)
        assert (target.stat().st_mode & 0o777) == 0o755, "the link's target was chmodded"
        assert sorted(os.listdir(target)) == ["passwd"], "the mount wrote into the target"


def test_a_premade_cache_dir_with_planted_blocks_is_refused_and_nothing_is_served(
    emulator: EmulatorProc, mountpoint: Path, other_user: User, shared_tmp: Path
) -> None:
    # The other user makes the cache directory first, with forged blocks of a recording
    # and a data file anyone may read (where the mount would write the audio).
    cache = shared_tmp / "amigofs"
    recording = next(emulator.data.recordings())
    key = FileKey(recording.workspace_id, recording.call_sid, "x.wav", 100)
    planted = cache / block_path(key.relative_dir, 0)
    script = (f"mkdir -p {planted.parent} && chmod 700 {cache} && head -c 300 /dev/zero"
              f" > {planted} && chmod 666 {planted}")  # fmt: skip
    subprocess.run([*as_user(other_user), "sh", "-c", script], check=True,
                   timeout=REFUSAL_DEADLINE)  # fmt: skip
    env = {**without_key(), "AMIGO_API_KEY": emulator.api_key, "XDG_CACHE_HOME": str(shared_tmp)}
    try:
        result = mount(mountpoint, "--base-url", emulator.url, "--foreground", env=env)
        assert_refused(result, str(cache), "owned by")
        assert not is_mounted(mountpoint)
    finally:
        force_unmount(mountpoint)
    assert planted.read_bytes() == b"\0" * 300  # nothing written to it either


def as_user(user: User) -> list[str]:
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
