"""call.wav through real mounts: the stereo mix of a call's two channels.

What is checked is what a user notices: ffprobe's and sox's view of the file, its
channels against the sources (the caller's through a G.711 decode made here, not
amigofs's), its bytes against a reference built here from the emulator's stored
bytes by the documented method (README / amigofs.fs.stereo: caller left, agent
right, 16 kHz PCM16, the 8 kHz caller's samples each repeated twice, the shorter
channel padded with silence), and the emulator's byte counts.

The emulator stores half its calls raw and half as WAV; for WAV headers with extra
chunks (LIST/INFO, as many recorders write them) and for headers that lie, this
module runs the emulator with its WAV headers varied (`_varied_headers`, applied
both in the emulator's process and to the ground truth here).
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import random
import re
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amigofs.emulator import audio as emulator_audio
from amigofs.emulator.cli import knob_arguments
from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.data import Recording
from amigofs.emulator.process import await_listening
from tests.emulator_proc import EmulatorProc, running_emulator
from tests.mounting import Mount, mounted
from tests.reliability import read_until_error

API_KEY = "test-key"
RATE = 16000
LONG = 3600.0

# --- varied WAV headers in the emulator ---------------------------------------------

_INFO = b"INFO" + b"ISFT" + struct.pack("<I", 13) + b"amigo-rec 1.0" + b"\0"  # odd: padded
_INFO += b"ICMT" + struct.pack("<I", 20) + b"caller left, agent\0\0"
LIST_CHUNK = b"LIST" + struct.pack("<I", len(_INFO)) + _INFO
STALE_EXTRA = 8000  # bytes a stale header's data chunk claims beyond what the file holds


def _vary(make: Callable[[int, int], bytes], variant: str) -> Callable[[int, int], bytes]:
    """A header maker whose headers get a LIST chunk before the data chunk ("list"),
    or a data chunk claiming more than is stored ("stale": a recorder that never
    fixed its header)."""

    def varied(count: int, rate: int) -> bytes:
        header = make(count, rate)
        assert header[-8:-4] == b"data"
        if variant == "list":
            riff = struct.unpack("<I", header[4:8])[0] + len(LIST_CHUNK)
            return header[:4] + struct.pack("<I", riff) + header[8:-8] + LIST_CHUNK + header[-8:]
        claimed = struct.unpack("<I", header[-4:])[0] + STALE_EXTRA
        return header[:-4] + struct.pack("<I", claimed)

    return varied


MEDIA_EXTRA = 800  # samples a "longer_media" stored file has beyond the metadata's duration


class _LongerMedia(emulator_audio.AudioObject):
    """A stored file, raw or WAV, with more samples than the metadata's duration says
    (its size, and a WAV's header, say so truly)."""

    def __init__(self, *, samples: int, **rest: object) -> None:
        super().__init__(samples=samples + MEDIA_EXTRA, **rest)  # type: ignore[arg-type]


@contextlib.contextmanager
def _varied_headers(variant: str) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        if variant == "longer_media":
            patch.setattr(emulator_audio, "AudioObject", _LongerMedia)
        elif variant != "plain":
            for name in ("_pcm_wav_header", "_ulaw_wav_header"):
                patch.setattr(emulator_audio, name, _vary(getattr(emulator_audio, name), variant))
        yield


class Source:
    """A running emulator, the variant of its WAV headers, and its ground truth."""

    def __init__(self, proc: EmulatorProc, variant: str) -> None:
        self.proc = proc
        self.variant = variant
        with _varied_headers(variant):
            self.data = proc.data  # built under the variant: its sizes include it

    def stored(
        self, recording: Recording, channel: str, start: int = 0, end: int = 1 << 62
    ) -> bytes:
        name = recording.inbound_filename if channel == "inbound" else recording.outbound_filename
        with _varied_headers(self.variant):
            return self.data.read_range(
                recording.workspace_id, recording.call_sid, name, start, end
            )

    def recordings(self, *, longest: float = 600.0) -> list[Recording]:
        return [
            r for r in self.data.sound()
            if float(r.metadata["duration_seconds"]) <= longest  # type: ignore[arg-type]
        ]  # fmt: skip

    def audio_bytes(self) -> int:
        return int(self.proc.stats()["audio_bytes"])


@contextlib.contextmanager
def emulator_with(variant: str, **knobs: object) -> Iterator[Source]:
    if variant == "plain":
        with running_emulator(API_KEY, **knobs) as proc:  # type: ignore[arg-type]
            yield Source(proc, variant)
        return
    config = EmulatorConfig(api_key=API_KEY, **knobs)  # type: ignore[arg-type]
    argv = [sys.executable, "-m", "tests.test_call_wav", variant, "--host", "127.0.0.1",
            "--port", "0", *knob_arguments(knobs)]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "AMIGO_API_KEY": API_KEY}
    )
    try:
        url = await_listening(process, 30.0)
    except BaseException:
        process.kill()
        process.wait()
        raise
    proc = EmulatorProc(process, url, dataclasses.replace(config))
    try:
        yield Source(proc, variant)
    finally:
        proc.stop()


# --- the reference, built here ------------------------------------------------------


def _ulaw_table() -> list[int]:
    """G.711 mu-law decoding of every code: Python's audioop where it still exists,
    else the standard's formula (sign, 3-bit exponent, 4-bit mantissa, bias 0x84)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import audioop
    except ImportError:
        table = []
        for code in range(256):
            u = ~code & 0xFF
            magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)) - 0x84
            table.append(-magnitude if u & 0x80 else magnitude)
        return table
    return list(array.array("h", audioop.ulaw2lin(bytes(range(256)), 2)))


ULAW = _ulaw_table()


def samples_region(stored: bytes, recording: Recording) -> bytes:
    """The sample bytes of a stored file: all of a raw one, a WAV's data chunk."""
    if recording.storage == "raw":
        return stored
    position = 12
    while True:
        chunk, size = (
            stored[position : position + 4],
            struct.unpack_from("<I", stored, position + 4)[0],
        )
        if chunk == b"data":
            return stored[position + 8 : position + 8 + size]
        position += 8 + size + (size & 1)


def caller_samples(source: Source, recording: Recording) -> array.array[int]:
    region = samples_region(source.stored(recording, "inbound"), recording)
    return array.array("h", (ULAW[code] for code in region))


def agent_samples(source: Source, recording: Recording) -> array.array[int]:
    samples = array.array("h")
    samples.frombytes(samples_region(source.stored(recording, "outbound"), recording))
    return samples


def stereo_header(frames: int) -> bytes:
    data = frames * 4
    return b"".join((
        struct.pack("<4sI4s", b"RIFF", 36 + data, b"WAVE"),
        struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 2, RATE, RATE * 4, 4, 16),
        struct.pack("<4sI", b"data", data),
    ))  # fmt: skip


def reference(source: Source, recording: Recording) -> bytes:
    """call.wav as documented: caller left (each 8 kHz sample twice), agent right."""
    caller, agent = caller_samples(source, recording), agent_samples(source, recording)
    frames = max(2 * len(caller), len(agent))
    out = array.array("h", bytes(4 * frames))
    out[0 : 4 * len(caller) : 4] = caller
    out[2 : 4 * len(caller) : 4] = caller
    out[1 : 2 * len(agent) : 2] = agent
    return stereo_header(frames) + out.tobytes()


def call_wav(mnt: Mount, recording: Recording) -> Path:
    return mnt.path / recording.workspace_id / recording.call_sid / "call.wav"


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=300, check=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    # Raw and WAV-with-LIST sources side by side (storage is drawn per call), two of
    # them an hour long.
    with emulator_with(
        "list", workspaces=1, calls_per_workspace=8, min_duration=20.0, max_duration=45.0,
        long_calls=2, long_duration=LONG,
    ) as src:  # fmt: skip
        assert {r.storage for r in src.recordings()} == {"raw", "wav"}
        yield src


@pytest.fixture
def mnt(source: Source) -> Iterator[Mount]:
    """A fresh mount (an empty cache) for each test: its byte counts are its own."""
    with mounted(source.proc.url, API_KEY) as mount:
        yield mount


# --- tests --------------------------------------------------------------------------


def test_sizes_come_before_any_download(source: Source, mnt: Mount) -> None:
    source.proc.reset_stats()
    for recording in source.data.sound():
        call_dir = call_wav(mnt, recording).parent
        assert "call.wav" in os.listdir(call_dir)
        frames = max(2 * int(recording.inbound_samples), int(recording.outbound_samples))
        assert os.stat(call_dir / "call.wav").st_size == 44 + 4 * frames
    listing = run("ls", "-l", str(call_wav(mnt, source.data.sound()[0]).parent))
    assert listing.returncode == 0 and b"call.wav" in listing.stdout
    assert source.audio_bytes() == 0, "stat or ls -l of call.wav downloaded audio"
    for recording in source.recordings()[:2]:  # the size is the file's, byte for byte
        assert os.stat(call_wav(mnt, recording)).st_size == len(reference(source, recording))


@pytest.mark.parametrize("storage", ["raw", "wav"])
def test_ffprobe_sox_and_the_channels(source: Source, mnt: Mount, storage: str) -> None:
    recording = next(r for r in source.recordings() if r.storage == storage)
    path = call_wav(mnt, recording)
    duration = float(recording.metadata["duration_seconds"])  # type: ignore[arg-type]
    probe = run(
        "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels",
        "-show_entries", "format=duration", "-of", "json", str(path),
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    info = json.loads(probe.stdout)
    stream = info["streams"][0]
    assert (stream["channels"], int(stream["sample_rate"]), stream["codec_name"]) == (
        2, 16000, "pcm_s16le",
    )  # fmt: skip
    assert abs(float(info["format"]["duration"]) - duration) <= 0.05

    def channel(number: int) -> array.array[int]:
        out = run("sox", str(path), "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", "-",
                  "remix", str(number))  # fmt: skip
        assert out.returncode == 0, out.stderr
        samples = array.array("h")
        samples.frombytes(out.stdout)
        return samples

    left, right = channel(1), channel(2)
    agent, caller = agent_samples(source, recording), caller_samples(source, recording)
    assert right == agent, "the right channel is not the agent's samples"
    assert left[0::2] == caller, "the left channel's even samples are not the caller's"
    assert left[1::2] == caller, "each caller sample is not repeated (sample-and-hold)"

    stat = run("sox", str(path), "-n", "stat")
    assert stat.returncode == 0, stat.stderr
    seconds = float(re.search(rb"Length \(seconds\):\s+([\d.]+)", stat.stderr)[1])  # type: ignore[index]
    assert abs(seconds - duration) <= 0.05
    amplitude = float(re.search(rb"Maximum amplitude:\s+([-\d.]+)", stat.stderr)[1])  # type: ignore[index]
    assert amplitude > 0.01, "sox reads silence"


def test_a_seek_into_an_hour_fetches_only_the_blocks_there(source: Source, mnt: Mount) -> None:
    long_calls = [r for r in source.data.sound() if r.metadata["duration_seconds"] == LONG]
    assert long_calls
    for recording in long_calls:
        path = call_wav(mnt, recording)
        os.stat(path)
        source.proc.reset_stats()
        out = run("ffmpeg", "-v", "error", "-ss", "1800", "-i", str(path), "-t", "1",
                  "-f", "s16le", "-")  # fmt: skip
        assert out.returncode == 0, out.stderr
        sources = int(str(recording.metadata["inbound_size_bytes"])) + int(
            str(recording.metadata["outbound_size_bytes"])
        )
        fetched = source.audio_bytes()
        assert 0 < fetched <= 0.05 * sources, f"{recording.storage}: {fetched} of {sources}"
        # And what it played is minute 30, both channels.
        first = 1800 * RATE
        in_base = _data_offset(source.stored(recording, "inbound", 0, 4096), recording)
        out_base = _data_offset(source.stored(recording, "outbound", 0, 4096), recording)
        caller = source.stored(recording, "inbound", in_base + first // 2,
                               in_base + first // 2 + RATE // 2)  # fmt: skip
        agent = array.array("h")
        agent.frombytes(source.stored(recording, "outbound", out_base + 2 * first,
                                      out_base + 2 * (first + RATE)))  # fmt: skip
        played = array.array("h")
        played.frombytes(out.stdout)
        assert len(played) == 2 * RATE
        assert played[1::2] == agent
        assert played[0::4] == array.array("h", (ULAW[c] for c in caller))


def _data_offset(head: bytes, recording: Recording) -> int:
    if recording.storage == "raw":
        return 0
    position = 12
    while head[position : position + 4] != b"data":
        size = struct.unpack_from("<I", head, position + 4)[0]
        position += 8 + size + (size & 1)
    return position + 8


def test_the_mono_files_after_call_wav_fetch_nothing_more(source: Source, mnt: Mount) -> None:
    for storage in ("raw", "wav"):
        recording = next(r for r in source.recordings() if r.storage == storage)
        path = call_wav(mnt, recording)
        os.stat(path)
        source.proc.reset_stats()
        assert sha(path.read_bytes()) == sha(reference(source, recording))
        sizes = sum(
            int(str(recording.metadata[f"{c}_size_bytes"])) for c in ("inbound", "outbound")
        )
        assert source.audio_bytes() == sizes, f"{storage}: call.wav fetched other than once"
        for name in ("inbound.wav", "outbound.wav"):
            (path.parent / name).read_bytes()
            assert source.audio_bytes() == sizes, f"{storage}: {name} fetched again"


def test_byte_exact_at_random_offsets_and_under_eight_readers(source: Source, mnt: Mount) -> None:
    rng = random.Random(12)
    for recording in source.recordings()[:4]:
        truth = reference(source, recording)
        path = call_wav(mnt, recording)
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(60):
                offset = rng.randrange(len(truth) + 100)
                size = rng.choice((1, 3, 4, 4095, 65536, 300_001))
                assert os.pread(fd, size, offset) == truth[offset : offset + size], (offset, size)
        finally:
            os.close(fd)

    recordings = source.recordings()[4:]
    truths = {r.call_sid: sha(reference(source, r)) for r in recordings}
    failures: list[str] = []

    def reader(index: int) -> None:
        own = random.Random(index)
        recording = recordings[index % len(recordings)]
        path = call_wav(mnt, recording)
        size = os.stat(path).st_size
        chunk = own.choice((4096, 65536, 131072 + 4))
        offsets = list(range(0, size, chunk))
        own.shuffle(offsets)
        pieces: dict[int, bytes] = {}
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset in offsets:
                pieces[offset] = os.pread(fd, chunk, offset)
        except OSError as exc:
            failures.append(f"reader {index}: {exc}")
            return
        finally:
            os.close(fd)
        whole = b"".join(pieces[o] for o in sorted(pieces))
        if sha(whole) != truths[recording.call_sid]:
            failures.append(f"reader {index}: {recording.storage} call.wav differs")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(t.is_alive() for t in threads), "a reader hangs"
    assert not failures, failures


@pytest.mark.parametrize("variant", ["stale", "longer_media"])
def test_a_header_that_disagrees_with_the_metadata_is_eio_and_logged(variant: str) -> None:
    # "stale": a data chunk claiming more than the file holds; "longer_media": headers
    # true to the file, but more samples than the duration call.wav was sized from.
    with emulator_with(
        variant, workspaces=1, calls_per_workspace=6, min_duration=5.0, max_duration=10.0
    ) as src, mounted(src.proc.url, API_KEY) as mnt:  # fmt: skip
        lying = [r for r in src.data.sound() if r.storage == "wav"]
        honest = [r for r in src.data.sound() if r.storage == "raw"]
        assert lying and honest
        for recording in lying:
            path = call_wav(mnt, recording)
            assert os.stat(path).st_size == 44 + 4 * recording.outbound_samples
            got, error = read_until_error(path)
            assert error == errno.EIO and len(got) <= 44, (len(got), error)
            lines = [line for line in mnt.log().splitlines()
                     if "ERROR" in line and recording.call_sid in line and "call.wav" in line]  # fmt: skip
            assert lines, "no log line says why call.wav failed"
            # The mono file is served as stored, lying header and all.
            assert (path.parent / "outbound.wav").read_bytes() == src.stored(recording, "outbound")
        for recording in honest:
            assert call_wav(mnt, recording).read_bytes() == reference(src, recording)


def test_stored_files_that_disagree_with_the_metadata_give_eio_never_short_or_padded() -> None:
    with running_emulator(
        API_KEY, workspaces=1, calls_per_workspace=5, min_duration=20.0, max_duration=20.0,
        size_mismatch=3,
    ) as proc, mounted(proc.url, API_KEY, "--timeout", "3") as mnt:  # fmt: skip
        src = Source(proc, "plain")
        faulty = src.data.faulty("size")
        assert [r.size_fault for r in faulty] == ["shorter", "longer", "cut_short"]
        logged = mnt.log().count(" ERROR ")
        for recording in faulty:
            path = call_wav(mnt, recording)
            frames = max(2 * recording.inbound_samples, recording.outbound_samples)
            assert os.stat(path).st_size == 44 + 4 * frames
            got, error = read_until_error(path)
            where = f"{recording.size_fault} {recording.storage}: {len(got)} bytes"
            assert error == errno.EIO, f"{where}, then {error or 'EOF'}"
            if recording.size_fault == "cut_short":
                assert got == reference(src, recording)[: len(got)], f"{where}: bytes differ"
            else:
                assert len(got) <= 44, where
            errors = mnt.log().count(" ERROR ")
            assert errors > logged, f"{where}: no log line"
            logged = errors
        for recording in src.data.sound():
            assert call_wav(mnt, recording).read_bytes() == reference(src, recording)


def _mount_knows(flag: str) -> bool:
    helped = run(sys.executable, "-m", "amigofs", "mount", "--help")
    return flag.encode() in helped.stdout


@pytest.mark.skipif(not _mount_knows("--no-call-wav"), reason="the mount has no --no-call-wav yet")
def test_no_call_wav_leaves_it_out(source: Source) -> None:
    recording = source.recordings()[0]
    with mounted(source.proc.url, API_KEY, "--no-call-wav") as mnt:
        call_dir = call_wav(mnt, recording).parent
        assert sorted(os.listdir(call_dir)) == ["inbound.wav", "metadata.json", "outbound.wav"]
        assert not call_wav(mnt, recording).exists()


if __name__ == "__main__":
    # The emulator with varied WAV headers: python -m tests.test_call_wav VARIANT ARGS...
    from amigofs.emulator.__main__ import main

    with _varied_headers(sys.argv.pop(1)):
        sys.exit(main())
