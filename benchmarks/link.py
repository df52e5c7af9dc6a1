"""Over an internet link (issue 13): amigofs against the emulator's `--link-profile internet`
with `--tls` (50 ms before each answer, 3 MB/s a response, 24 MB/s shared by every response,
32 requests in flight; HTTPS with certificate checks on: the mount trusts the emulator's
certificate through SSL_CERT_FILE, curl through --cacert), on one workspace of 100 calls (20
with --quick). Each measurement is on a fresh mount with a fresh cache, so everything is cold:

- walks of the whole workspace: `rsync -a` into a local directory, `tar -cf - . | wc -c` (not
  `tar -cf /dev/null`: GNU tar then skips reading the files), and `sha256sum */outbound.wav`.
  Each against two baselines from the same run and server: a shell script of curl and jq
  (`SCRIPT`) that lists the calls, then fetches each call's links and then its files (or, for
  sha256sum, hashes its outbound file), eight calls at once with `xargs -P 8`; and the link
  limit, the bytes that must cross the link over the shared bandwidth. The copies are checked
  against the emulator's bytes (rsync, the script) or hashes (sha256sum), and tar's stream must
  hold every byte;
- the first 64 KiB of a cold file (`head -c 65536` of inbound.wav) of a listed call (after `ls`
  of the workspace), and of a call not listed yet, looked up by its SID: time in round trips
  (the profile's latency) and the emulator's requests;
- a file manager's peek at every audio file of the workspace, four at once as thumbnailers
  work: the first 4 KiB of each (as `file` reads), then `ffprobe` of each, each on a cold
  mount: the audio bytes fetched per file, over the average file size;
- `ffmpeg -ss 1800 -t 10` on a cold hour-long inbound.wav (the middle of a 20-minute one with
  --quick), from an emulator of its own: bytes fetched over the file's size and time, median and
  max over the runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amigofs.emulator.data import Dataset, Recording
from benchmarks.harness import Harness
from benchmarks.memfs import PresentedFile, config_from_knobs, presented_file, recordings
from benchmarks.report import median
from tests.emulator_proc import EmulatorProc
from tests.mounting import Mount, wait_until

PROFILE = "internet"
HEAD_BYTES = 64 * 1024
PEEK_BYTES = 4096
PEEKERS = 4  # file managers run a few thumbnailers at once
SCRIPT_WAYS = 8
STORED = ("inbound.wav", "outbound.wav", "metadata.json")
STATS_FILE = ".amigofs-stats"
SETTLE_DEADLINE = 120.0

SCRIPT = r"""#!/bin/bash
# What a user could write instead of mounting: list the calls, then, eight calls at once, each
# call's download links and then its files over one connection (MODE=all: into $OUT/SID/), or
# the sha256 of its outbound file (MODE=outbound: "HASH  SID" lines on stdout).
# Environment: BASE (https://host:port), WS (workspace id), CACERT, HEADER (a file holding the
# Authorization header line), OUT, MODE.
set -euo pipefail
get() { curl -sS --fail --cacert "$CACERT" -H "@$HEADER" "$@"; }
if [ "${1:-}" = call ]; then
    sid=$2
    urls=$(get "$BASE/v1/$WS/recordings/$sid/urls")
    if [ "$MODE" = outbound ]; then
        sum=$(get "$BASE$(jq -r .outbound_url <<<"$urls")" | sha256sum)
        echo "${sum%% *}  $sid"
        exit 0
    fi
    mkdir -p "$OUT/$sid"
    args=()
    for link in $(jq -r '.inbound_url, .outbound_url, .metadata_url | values' <<<"$urls"); do
        args+=(-o "$OUT/$sid/${link##*/}" "$BASE$link")
    done
    get "${args[@]}"
    exit 0
fi
offset=0
while :; do
    page=$(get "$BASE/v1/$WS/calls?limit=100&offset=$offset")
    jq -r '.items[] | select(.call_sid != null and .has_recording) | .call_sid' <<<"$page"
    [ "$(jq -r .has_more <<<"$page")" = true ] || break
    offset=$(jq -r .continuation_token <<<"$page")
done > "$OUT/sids"
xargs -P __WAYS__ -n 1 "$0" call < "$OUT/sids"
""".replace("__WAYS__", str(SCRIPT_WAYS))


@dataclass(slots=True, frozen=True)
class FileTruth:
    """A file of a call as the mount presents it and as the emulator stores it."""

    presented: PresentedFile
    presented_sha: str
    stored_sha: str

    @property
    def stored_size(self) -> int:
        return self.presented.size - len(self.presented.header)


def truths(data: Dataset, recs: list[Recording]) -> dict[tuple[str, str], FileTruth]:
    """(call SID, presented name) -> its sizes and hashes, from the emulator's own bytes."""
    found = {}
    for rec in recs:
        for name in STORED:
            pf = presented_file(data, rec, name)
            whole = pf.build(data)
            stored = memoryview(whole)[len(pf.header) :]
            found[rec.call_sid, name] = FileTruth(
                pf, hashlib.sha256(whole).hexdigest(), hashlib.sha256(stored).hexdigest()
            )
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run(harness: Harness) -> None:
    s = harness.settings
    knobs = harness.knobs(calls_per_workspace=s.link_calls, long_calls=0, tls=True)
    data = Dataset(config_from_knobs(knobs))
    recs = list(recordings(data))
    harness.progress(f"link: the expected bytes of {len(recs)} calls")
    truth = truths(data, recs)
    harness.raw["link"] = raw = {"profile": PROFILE, "calls": len(recs), "knobs": knobs}
    with harness.emulator("link", PROFILE, **knobs) as emu:
        raw["served"] = emu.knobs
        harness.scenario("link: rsync, tar, sha256sum", lambda: walks(harness, emu, recs, truth))
        harness.scenario("link: first 64 KiB", lambda: first_bytes(harness, emu, data, recs))
        harness.scenario("link: file-manager peek", lambda: peek(harness, emu, data, recs))
    harness.scenario("link: ffmpeg seek", lambda: seek(harness))


# --- what the emulator and the mount counted ----------------------------------------------------


def served(emu: EmulatorProc, log: bool = False) -> dict[str, Any]:
    """What the emulator served since its last reset; with `log`, its requests too (when each
    arrived, after the first, and the range asked for)."""
    stats = emu.stats()
    link = emu.client.get("/__stats/link").json()
    counted: dict[str, Any] = {
        "requests": stats["requests"],
        "audio_bytes": stats["audio_bytes"],
        "bytes": sum(stats["download_bytes"].values()),
        "faults": stats["faults"],
        "peak_in_flight": link["peak_in_flight"],
        "queued": link["queued"],
    }
    if log and stats["log"]:
        began = stats["log"][0]["time"]
        counted["log"] = [
            [round(entry["time"] - began, 4), entry["op"], entry["path"].rsplit("/", 1)[-1],
             entry["range"], entry["status"]]
            for entry in stats["log"]
        ]  # fmt: skip
    return counted


def mount_stats(mnt: Mount) -> dict[str, Any]:
    """The mount's own counters (its hidden stats file): requests, retries, errors, and the
    bytes of the downloads it has in flight."""
    document: dict[str, Any] = json.loads((mnt.path / STATS_FILE).read_text())
    keys = ("requests", "retries", "errors", "bytes_in_flight")
    return {key: document.get(key) for key in keys}


def settle(emu: EmulatorProc, mnt: Mount) -> None:
    """Waits until no download is in flight, in the mount or at the emulator: the fetches a
    command started ahead of its reads (readahead) count against it too, finished."""

    def idle() -> bool:
        in_flight: int = emu.client.get("/__stats/link").json()["in_flight"]
        return in_flight == 0 and mount_stats(mnt)["bytes_in_flight"] == 0

    wait_until(idle, SETTLE_DEADLINE, "the mount's downloads to end")


def measured_on_mount(
    harness: Harness,
    emu: EmulatorProc,
    body: Callable[[Mount], float],
    prepare: Callable[[Mount], object] | None = None,
    log: bool = False,
) -> dict[str, Any]:
    """`body` (which returns seconds) on a fresh cold mount, after `prepare` if given: its time
    and what the emulator served, when the command ended and once the mount is idle."""
    with harness.amigofs(emu) as mnt:
        if prepare is not None:
            prepare(mnt)
        emu.reset_stats()
        seconds = body(mnt)
        at_exit = served(emu)
        settle(emu, mnt)
        return {
            "s": seconds,
            "served": served(emu, log),
            "served_at_exit": at_exit,
            "mount": mount_stats(mnt),
        }


# --- walks of the workspace ---------------------------------------------------------------------


def script(
    harness: Harness, emu: EmulatorProc, workspace_id: str, mode: str, out: Path
) -> tuple[float, bytes]:
    path = harness.work.path / "fetch-calls.sh"
    if not path.exists():
        path.write_text(SCRIPT)
        path.chmod(0o755)
    assert emu.certificate is not None, "the link scenario runs the emulator with --tls"
    env = {
        "BASE": emu.url,
        "WS": workspace_id,
        "CACERT": emu.certificate,
        "HEADER": str(harness.header_file),
        "OUT": str(out),
        "MODE": mode,
    }
    return harness.timed_output([str(path)], env=env)


def check_copy(
    root: Path, recs: list[Recording], truth: dict[tuple[str, str], FileTruth], stored: bool
) -> None:
    """Every file of every call in `root` holds the emulator's bytes: as stored (the script's
    copies, named as stored) or as presented (the mount's)."""
    for rec in recs:
        for name in STORED:
            expected = truth[rec.call_sid, name]
            file_name = expected.presented.stored_name if stored else name
            got = sha256_file(root / rec.call_sid / file_name)
            if got != (expected.stored_sha if stored else expected.presented_sha):
                raise RuntimeError(f"{root / rec.call_sid / file_name}: not the emulator's bytes")


def check_hashes(
    output: bytes, recs: list[Recording], truth: dict[tuple[str, str], FileTruth], stored: bool
) -> None:
    """sha256sum-style lines ("HASH  SID" or "HASH  SID/outbound.wav") match every outbound."""
    got = {}
    for line in output.decode().splitlines():
        digest, _, name = line.partition("  ")
        got[name.split("/")[0]] = digest
    for rec in recs:
        expected = truth[rec.call_sid, "outbound.wav"]
        if got.get(rec.call_sid) != (expected.stored_sha if stored else expected.presented_sha):
            raise RuntimeError(f"{rec.call_sid}: outbound sha256 differs from the emulator's")


def walks(
    harness: Harness,
    emu: EmulatorProc,
    recs: list[Recording],
    truth: dict[tuple[str, str], FileTruth],
) -> None:
    s = harness.settings
    ws = recs[0].workspace_id
    link_rate = emu.knobs["link_bandwidth"]
    everything = sum(t.stored_size for t in truth.values())
    audio = sum(t.stored_size for (_, name), t in truth.items() if name != STORED[2])
    outbound = sum(t.stored_size for (_, name), t in truth.items() if name == STORED[1])
    raw: dict[str, Any] = {
        "stored_bytes": everything,
        "outbound_bytes": outbound,
        "link_bandwidth": link_rate,
        "script_all": [],
        "script_outbound": [],
        "rsync": [],
        "tar": [],
        "sha256sum": [],
    }
    harness.raw["link"]["walks"] = raw

    def by_script(mode: str) -> dict[str, Any]:
        out = harness.work.new(f"script-{mode}")
        emu.reset_stats()
        seconds, output = script(harness, emu, ws, mode, out)
        entry = {"s": seconds, "served": served(emu)}
        if mode == "all":
            check_copy(out, recs, truth, stored=True)
        else:
            check_hashes(output, recs, truth, stored=True)
        shutil.rmtree(out)
        return entry

    def rsync(mnt: Mount) -> float:
        dest = harness.work.new("rsync-dest")
        try:
            seconds = harness.timed(["rsync", "-a", f"{mnt.path / ws}/", f"{dest}/"])
            check_copy(dest, recs, truth, stored=False)
            return seconds
        finally:
            shutil.rmtree(dest)

    tar_said: list[tuple[int, str]] = []

    def tar(mnt: Mount) -> float:
        # tar's own status and message, which the pipe would hide: 1 is a warning ("file
        # changed as we read it"), more a failure.
        said = harness.work.path / "tar-stderr"
        command = 'tar -cf - -C "$1" . 2>"$2" | wc -c; echo "${PIPESTATUS[0]}"'
        argv = ["bash", "-c", command, "tar", str(mnt.path / ws), str(said)]
        seconds, output = harness.timed_output(argv)
        written, status = map(int, output.split())
        tar_said.append((status, said.read_text().strip()))
        if status > 1:
            raise RuntimeError(f"tar exited {status}: {tar_said[-1][1][-500:]}")
        presented = sum(t.presented.size for t in truth.values())
        if written < presented:
            raise RuntimeError(f"tar wrote {written} bytes, less than the {presented} read")
        return seconds

    def sha256sum(mnt: Mount) -> float:
        command = 'cd "$1" && sha256sum */outbound.wav'
        seconds, output = harness.timed_output(["sh", "-c", command, "sha", str(mnt.path / ws)])
        check_hashes(output, recs, truth, stored=False)
        return seconds

    for run in range(s.runs):
        raw["script_all"].append(by_script("all"))
        raw["rsync"].append(measured_on_mount(harness, emu, rsync))
        raw["tar"].append(measured_on_mount(harness, emu, tar))
        raw["tar"][-1]["tar_status"], raw["tar"][-1]["tar_stderr"] = tar_said.pop()
        if raw["tar"][-1]["served"]["audio_bytes"] < audio:
            raise RuntimeError("tar through the mount did not read every audio byte")
        raw["script_outbound"].append(by_script("outbound"))
        raw["sha256sum"].append(measured_on_mount(harness, emu, sha256sum))
        harness.progress(
            f"run {run + 1}/{s.runs}: {len(recs)} calls, script {raw['script_all'][-1]['s']:.2f}s,"
            f" rsync {raw['rsync'][-1]['s']:.2f}s, tar {raw['tar'][-1]['s']:.2f}s"
            f" (tar exit {raw['tar'][-1]['tar_status']});"
            f" outbound: script {raw['script_outbound'][-1]['s']:.2f}s,"
            f" sha256sum {raw['sha256sum'][-1]['s']:.2f}s"
        )
    for name, baseline, size in (
        ("rsync -a", "script_all", everything),
        ("tar -cf - .", "script_all", everything),
        ("sha256sum */outbound.wav", "script_outbound", outbound),
    ):
        key = name.split()[0]
        mount_s = median([entry["s"] for entry in raw[key]])
        harness.figure(
            f"amigofs.link.{key}.script",
            "other",
            f"link: {name} of {len(recs)} calls: {SCRIPT_WAYS}-way curl script / amigofs time",
            median([entry["s"] for entry in raw[baseline]]),
            mount_s,
            "s",
        )
        harness.figure(
            f"amigofs.link.{key}.limit",
            "other",
            f"link: {name}: link limit ({size / 1e6:.0f} MB at {link_rate / 1e6:g} MB/s)"
            " / amigofs time",
            size / link_rate,
            mount_s,
            "s",
        )


# --- the first bytes of a file ------------------------------------------------------------------


def first_bytes(harness: Harness, emu: EmulatorProc, data: Dataset, recs: list[Recording]) -> None:
    """`head -c 65536` of a cold inbound.wav of a listed call and of one looked up by SID."""
    s = harness.settings
    latency = float(emu.knobs["latency"])
    raw: dict[str, Any] = {"latency": latency, "listed": [], "by_sid": []}
    harness.raw["link"]["first_64k"] = raw
    for run in range(s.runs):
        for kind, rec in (
            ("listed", recs[run % len(recs)]),
            ("by_sid", recs[-1 - run % len(recs)]),
        ):
            pf = presented_file(data, rec, "inbound.wav")
            path = Path(pf.workspace_id, pf.call_sid, pf.name)

            def head(mnt: Mount, path: Path = path, pf: PresentedFile = pf) -> float:
                argv = ["head", "-c", str(HEAD_BYTES), str(mnt.path / path)]
                seconds, got = harness.timed_output(argv)
                if got != pf.read(data, 0, HEAD_BYTES):
                    raise RuntimeError(f"{path}: the first bytes are not the emulator's")
                return seconds

            def ls(mnt: Mount, path: Path = path) -> float:
                return harness.timed(["ls", str(mnt.path / path.parts[0])])

            prepare = ls if kind == "listed" else None
            raw[kind].append(measured_on_mount(harness, emu, head, prepare, log=True))
        harness.progress(
            f"run {run + 1}/{s.runs}: first {HEAD_BYTES >> 10} KiB: listed"
            f" {raw['listed'][-1]['s'] / latency:.1f} round trips"
            f" ({sum(raw['listed'][-1]['served']['requests'].values())} requests), by SID"
            f" {raw['by_sid'][-1]['s'] / latency:.1f}"
            f" ({sum(raw['by_sid'][-1]['served']['requests'].values())} requests)"
        )
    for kind, label in (("listed", "a listed call"), ("by_sid", "a call by SID, not listed")):
        entries = raw[kind]
        harness.figure(
            f"amigofs.link.head_{kind}.round_trips",
            "other",
            f"link: first {HEAD_BYTES >> 10} KiB of a cold file of {label}: time / latency"
            " (round trips)",
            median([e["s"] for e in entries]),
            latency,
            "s",
        )
        harness.figure(
            f"amigofs.link.head_{kind}.requests",
            "other",
            f"link: first {HEAD_BYTES >> 10} KiB of a cold file of {label}: emulator requests",
            median([sum(e["served"]["requests"].values()) for e in entries]),
            1,
            "count",
        )


# --- a file manager's peek ----------------------------------------------------------------------


def peek(harness: Harness, emu: EmulatorProc, data: Dataset, recs: list[Recording]) -> None:
    """The first 4 KiB of every audio file, then ffprobe of every audio file, four at once."""
    s = harness.settings
    ws = recs[0].workspace_id
    find = f'find "$1" -name "*.wav" -print0 | xargs -0 -P {PEEKERS} -n 1'
    commands = {
        "head": (f"{find} head -c {PEEK_BYTES} | wc -c", PEEK_BYTES),
        "ffprobe": (f"{find} ffprobe -v error -show_entries format=duration -of csv=p=0", None),
    }
    raw: dict[str, Any] = {"peekers": PEEKERS, "head": [], "ffprobe": []}
    harness.raw["link"]["peek"] = raw
    for run in range(s.runs):
        for name, (command, each) in commands.items():

            def body(
                mnt: Mount,
                name: str = name,
                command: str = command,
                each: int | None = each,
            ) -> float:
                root = mnt.path / ws
                seconds, output = harness.timed_output(["sh", "-c", command, name, str(root)])
                files = sorted(str(p.relative_to(root)) for p in root.glob("*/*.wav"))
                sizes = [(root / f).stat().st_size for f in files]
                got = output.split()
                if (int(got[0]) if each else len(got)) != (each or 1) * len(files):
                    raise RuntimeError(f"{name} peeked at fewer than the {len(files)} audio files")
                raw.setdefault("files", len(files))
                raw.setdefault("mean_file_bytes", statistics.mean(sizes))
                return seconds

            raw[name].append(measured_on_mount(harness, emu, body))
        harness.progress(
            f"run {run + 1}/{s.runs}: peek at {raw['files']} audio files: first"
            f" {PEEK_BYTES} bytes fetched {raw['head'][-1]['served']['audio_bytes'] / raw['files']:,.0f}"
            f" bytes a file ({raw['head'][-1]['s']:.1f}s), ffprobe"
            f" {raw['ffprobe'][-1]['served']['audio_bytes'] / raw['files']:,.0f}"
            f" ({raw['ffprobe'][-1]['s']:.1f}s)"
        )
    for name, label in (
        ("head", f"the first {PEEK_BYTES} bytes"),
        ("ffprobe", "ffprobe"),
    ):
        harness.figure(
            f"amigofs.link.peek_{name}_fetched",
            "bytes",
            f"link: file-manager peek ({label} of each of {raw['files']} audio files):"
            " audio fetched per file / mean size",
            median([e["served"]["audio_bytes"] / raw["files"] for e in raw[name]]),
            raw["mean_file_bytes"],
            "bytes",
        )


# --- an ffmpeg seek -----------------------------------------------------------------------------


def seek(harness: Harness) -> None:
    """ffmpeg -ss to the middle of a cold hour-long inbound.wav, one call a run."""
    s = harness.settings
    knobs = harness.knobs(
        calls_per_workspace=s.runs, long_calls=s.runs, long_duration=s.long_duration, tls=True
    )
    data = Dataset(config_from_knobs(knobs))
    files = [presented_file(data, rec, "inbound.wav") for rec in recordings(data)]
    at = s.long_duration / 2
    raw: dict[str, Any] = {"seek_s": at, "file_bytes": files[0].size, "runs": []}
    harness.raw["link"]["ffmpeg_seek"] = raw
    with harness.emulator("link-long", PROFILE, **knobs) as emu:
        latency = float(emu.knobs["latency"])
        for run in range(s.runs):
            pf = files[run]
            path = Path(pf.workspace_id, pf.call_sid, pf.name)

            def ffmpeg(mnt: Mount, path: Path = path) -> float:
                return harness.ffmpeg(mnt.path / path, at)

            entry = measured_on_mount(harness, emu, ffmpeg, log=True)
            raw["runs"].append(entry)
            fetched = entry["served"]["audio_bytes"]  # of this file: nothing else is read
            requests = entry["served"]["requests"].get("download-recording-file", 0)
            harness.progress(
                f"run {run + 1}/{s.runs}: ffmpeg -ss {at:g} on a cold {pf.size / 1e6:.0f} MB"
                f" inbound.wav: {entry['s']:.2f}s, fetched {fetched / 1e6:.2f} MB in"
                f" {requests} requests"
            )
    fetched_bytes = [e["served"]["audio_bytes"] for e in raw["runs"]]
    seconds = [e["s"] for e in raw["runs"]]
    for which, bytes_of_run, seconds_of_run in (
        ("median", median(fetched_bytes), median(seconds)),
        ("max", max(fetched_bytes), max(seconds)),
    ):
        what = f"link: ffmpeg -ss {at:g} -t {s.ffmpeg_seconds:g} on a cold inbound.wav"
        harness.figure(
            f"amigofs.link.seek_fetched_{which}",
            "bytes",
            f"{what}: fetched / size ({which})",
            bytes_of_run,
            files[0].size,
            "bytes",
        )
        harness.figure(
            f"amigofs.link.seek_round_trips_{which}",
            "other",
            f"{what}: time / latency ({which})",
            seconds_of_run,
            latency,
            "s",
        )
