"""Hostile input through a real mount: crafted names, bad listings, broken metadata, stored
files that disagree with it, and download links that point elsewhere.

A bad entry costs that entry, a bad call costs that call: never the directory, the mount, or a
request the client did not build itself. (The parsers' property tests are in test_models.py.)
"""

from __future__ import annotations

import errno
import os
import re
import socket
import string
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amigofs.emulator.data import (
    HOSTILE_CALL_SIDS,
    HOSTILE_NON_OBJECTS,
    HOSTILE_WORKSPACE_IDS,
)
from amigofs.fs.namespace import CONTROL_NAME
from amigofs.fs.views import VIEWS
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted, wait_until, workspace_names
from tests.reliability import (
    PRESENTED,
    errno_of,
    presented_bytes,
    read_until_error,
    request_log,
    stored_bytes,
)

ID_CHARS = frozenset(string.ascii_letters + string.digits + "_-")


def could_be_an_id(name: str) -> bool:
    """What a workspace id (UUID) or call SID (CA + 32 hex) could look like, generously."""
    return 0 < len(name) <= 128 and set(name) <= ID_CHARS


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with running_emulator(workspaces=2, calls_per_workspace=4, max_duration=10.0) as emu:
        yield emu


@pytest.fixture(scope="module")
def mount(emulator: EmulatorProc) -> Iterator[Mount]:
    with mounted(emulator.url, emulator.api_key, "--timeout", "5") as mnt:
        # Listings cached from here on: only names must decide what is requested.
        for workspace in emulator.data.workspaces:
            os.listdir(mnt.path / workspace.id)
        yield mnt


CRAFTED_NAMES = (
    "...",
    "%2F",
    "a%2Fb",
    "%2e%2e",
    "..%2F..%2Fworkspaces",
    "CA%2F..",
    "\x01",
    "\x7f",
    "a\nb",
    "\x1b[31m",
    "x" * 129,
    "C" * 255,
    ".hidden",
    "a b",
    "a;b",
    "a?b",
    "a#b",
    "*",
    "~",
    "ünïcode",
    "inbound.wav~",
    "Inbound.wav",
    "CA" + "0" * 31 + "\u200b",
)


def test_crafted_names_are_enoent_without_a_request(emulator: EmulatorProc, mount: Mount) -> None:
    recording = next(emulator.data.recordings())
    call_dir = mount.path / recording.workspace_id / recording.call_sid
    os.listdir(call_dir)
    emulator.reset_stats()
    tried = 0
    for parent in (mount.path, mount.path / recording.workspace_id, call_dir):
        for name in CRAFTED_NAMES:
            assert errno_of(lambda p=parent, n=name: os.stat(p / n)) == errno.ENOENT, (parent, name)
            tried += 1
    # '..' and '.' never reach the filesystem as names; the kernel resolves them.
    assert os.stat(call_dir / ".." / "..").st_ino == os.stat(mount.path).st_ino
    assert emulator.stats()["requests"] == {}
    print(f"\ncrafted names tried: {tried}, requests: 0")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.one_of(
        st.text(min_size=1, max_size=140), st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
    )
)
def test_any_looked_up_name_requests_only_paths_the_client_built(
    emulator: EmulatorProc, mount: Mount, name: str
) -> None:
    try:
        encoded = os.fsencode(name)
    except UnicodeEncodeError:
        return
    if name in (".", "..") or "/" in name or "\0" in name or len(encoded) > 255:
        return
    workspace_id = emulator.data.workspaces[0].id
    emulator.reset_stats()
    # The root's own names (the stats file, the views) are there; any other is not.
    parents = [mount.path / workspace_id]
    if name not in (CONTROL_NAME, *VIEWS):
        parents.append(mount.path)
    for parent in parents:
        assert errno_of(lambda p=parent: os.stat(p / name)) == errno.ENOENT
    paths = {str(entry["path"]) for entry in request_log(emulator)}
    if not could_be_an_id(name):
        assert paths == set(), f"{name!r} made requests: {paths}"
    else:
        # An unknown but well-formed SID may be asked about, by the paths the client builds.
        built = {f"/v1/{workspace_id}/recordings/{name}/{leaf}" for leaf in ("urls", "metadata")}
        assert paths <= built, f"{name!r} made requests: {paths - built}"


def test_hostile_listings_show_only_the_valid_entries() -> None:
    # 130 calls: two pages, each carrying every hostile entry.
    with (
        running_emulator(
            workspaces=2, calls_per_workspace=130, max_duration=10.0, hostile_listing=True
        ) as emulator,
        mounted(emulator.url, emulator.api_key, "--timeout", "5") as mnt,
    ):
        assert sorted(workspace_names(mnt.path)) == sorted(ws.id for ws in emulator.data.workspaces)
        for workspace in emulator.data.workspaces:
            listing = os.listdir(mnt.path / workspace.id)
            expected = sorted(
                r.call_sid for r in emulator.data.recordings() if r.workspace_id == workspace.id
            )
            assert len(listing) == len(set(listing)), "duplicates listed"
            assert sorted(listing) == expected
            # The duplicate claimed another start time; the first entry wins.
            newest = emulator.data.calls(workspace.id)[0]
            assert newest.call_sid is not None
            assert (
                os.stat(mnt.path / workspace.id / newest.call_sid).st_mtime
                == newest.started_at.timestamp()
            )
        stats = emulator.stats()
        assert set(stats["requests"]) == {"list-workspaces", "list-calls"}, stats["requests"]
        # A valid call of the hostile listing reads as usual.
        recording = next(emulator.data.recordings())
        for name in PRESENTED:
            path = mnt.path / recording.workspace_id / recording.call_sid / name
            assert path.read_bytes() == presented_bytes(emulator, recording, name)
        log = mnt.log()
        skipped = [line for line in log.splitlines() if "skip" in line]
        hostile_pages = 2 * 2  # two workspaces of two pages
        per_call_page = len(HOSTILE_CALL_SIDS) + len(HOSTILE_NON_OBJECTS) + 1
        per_ws_page = len(HOSTILE_WORKSPACE_IDS) + len(HOSTILE_NON_OBJECTS) + 1
        print(
            f"\nhostile listing entries served: {hostile_pages * per_call_page + per_ws_page}, "
            f"skip lines logged: {len(skipped)}"
        )
        assert len(skipped) >= hostile_pages * per_call_page + per_ws_page
        # Logged safely: no raw terminal escapes or forged lines, nothing 10k long.
        assert "\x1b" not in log
        assert not any(line.startswith("WARNING forged") for line in log.splitlines())
        assert max(len(line) for line in log.splitlines()) < 2000
        assert mnt.process.poll() is None


def test_bad_metadata_fails_only_that_call() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=6, max_duration=10.0, bad_metadata=4
    ) as emulator:
        bad = emulator.data.faulty("metadata")
        assert [r.metadata_fault for r in bad] == [
            "truncated",
            "not_json",
            "negative_size",
            "absurd_size",
        ]
        workspace_id = emulator.data.workspaces[0].id
        with mounted(emulator.url, emulator.api_key, "--timeout", "5") as mnt:
            expected = sorted(r.call_sid for r in emulator.data.recordings())
            assert sorted(os.listdir(mnt.path / workspace_id)) == expected
            for recording in bad:
                call_dir = mnt.path / workspace_id / recording.call_sid
                for _ in range(2):  # and again: the same clear error, not a half-loaded call
                    assert errno_of(lambda d=call_dir: os.listdir(d)) == errno.EIO, (
                        recording.metadata_fault
                    )
                    assert errno_of(lambda d=call_dir: os.stat(d / "inbound.wav")) == errno.EIO
                error_lines = [line for line in mnt.log().splitlines()
                               if "ERROR" in line and recording.call_sid in line]  # fmt: skip
                assert error_lines, f"no error logged for {recording.metadata_fault} metadata"
            for recording in emulator.data.sound():
                for name in PRESENTED:
                    path = mnt.path / workspace_id / recording.call_sid / name
                    assert path.read_bytes() == presented_bytes(emulator, recording, name)
            assert mnt.process.poll() is None


def test_stored_files_that_disagree_with_the_metadata_give_eio_never_short_or_padded() -> None:
    with running_emulator(
        workspaces=1, calls_per_workspace=5, min_duration=40.0, max_duration=40.0, size_mismatch=3
    ) as emulator:
        faulty = emulator.data.faulty("size")
        assert [r.size_fault for r in faulty] == ["shorter", "longer", "cut_short"]
        with mounted(emulator.url, emulator.api_key, "--timeout", "3") as mnt:
            for recording in faulty:
                for name in ("inbound.wav", "outbound.wav"):
                    path = mnt.path / recording.workspace_id / recording.call_sid / name
                    # What is stored, behind the header a raw file gets: its bytes are exact
                    # as far as any read gets.
                    truth = presented_bytes(emulator, recording, name)
                    size = os.stat(path).st_size
                    claimed = int(str(recording.metadata[f"{name[:-4]}_size_bytes"]))
                    assert size - claimed in (
                        0,
                        len(truth) - len(stored_bytes(emulator, recording, name)),
                    )
                    got, error = read_until_error(path)
                    where = f"{recording.size_fault} {name}: {len(got)} of {size} bytes"
                    assert error == errno.EIO, f"{where}, then {error or 'EOF'}"
                    assert got == truth[: len(got)], f"{where}: bytes differ"
            for recording in emulator.data.sound():
                path = mnt.path / recording.workspace_id / recording.call_sid / "outbound.wav"
                assert path.read_bytes() == presented_bytes(emulator, recording, "outbound.wav")
            assert mnt.process.poll() is None


class _Listener:
    """A TCP server on 127.0.0.2 that records every connection and what it was sent."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_download_links_to_another_host_or_path_are_never_followed() -> None:
    listener = _Listener()
    try:
        with running_emulator(
            workspaces=1,
            calls_per_workspace=9,
            max_duration=10.0,
            evil_urls=7,
            evil_host=f"http://127.0.0.2:{listener.port}",
        ) as emulator:
            evil = emulator.data.faulty("url")
            assert len(evil) == 7
            workspace_id = emulator.data.workspaces[0].id
            with mounted(emulator.url, emulator.api_key, "--timeout", "5") as mnt:
                assert sorted(os.listdir(mnt.path / workspace_id)) == sorted(
                    r.call_sid for r in emulator.data.recordings()
                )
                emulator.reset_stats()
                # Against the listing's order: a walk in order would (rightly) load the
                # records of the calls after each one, which this test does not count.
                for recording in reversed(evil):
                    call_dir = mnt.path / workspace_id / recording.call_sid
                    try:
                        names = os.listdir(call_dir)
                    except OSError as exc:
                        assert exc.errno == errno.EIO, (recording.url_fault, exc)
                        names = list(PRESENTED)
                    for name in names:
                        if name == "metadata.json":
                            # The metadata answer itself: no link is followed for it.
                            got = (call_dir / name).read_bytes()
                            assert got == recording.metadata_bytes, recording.url_fault
                            continue
                        failure = errno_of(lambda d=call_dir, n=name: (d / n).read_bytes())
                        assert failure in (errno.EIO, errno.ENOENT), (recording.url_fault, name)
                log = request_log(emulator)
                allowed = {
                    f"/v1/{workspace_id}/recordings/{r.call_sid}/{leaf}"
                    for r in evil
                    for leaf in ("urls", "metadata")
                }
                strays = [str(e["path"]) for e in log if e["path"] not in allowed]
                assert strays == [], f"requests outside the calls' own API paths: {strays}"
                assert "download-recording-file" not in emulator.stats()["requests"]
                assert listener.received == [], "the client connected to the foreign host"
                assert len(re.findall(r"ERROR", mnt.log())) >= len(evil)
                # The sound calls of the same workspace are unaffected.
                for recording in emulator.data.sound():
                    path = mnt.path / workspace_id / recording.call_sid / "metadata.json"
                    assert path.read_bytes() == recording.metadata_bytes
                print(
                    f"\nevil link kinds tried: {[r.url_fault for r in evil]}, "
                    f"foreign connections: {len(listener.received)}"
                )
    finally:
        listener.close()


def test_listener_sees_a_connection() -> None:
    """The control for the test above: the listener does notice a client."""
    listener = _Listener()
    try:
        with socket.create_connection(("127.0.0.2", listener.port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\n\r\n")
        wait_until(lambda: len(listener.received) == 1, 5, "the listener to record it")
        assert listener.received[0].startswith(b"GET /")
    finally:
        listener.close()
