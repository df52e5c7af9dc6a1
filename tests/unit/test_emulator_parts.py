"""The emulator's parts in-process: SIDs, its own G.711 and WAV code, stored audio read by
range, and a large workspace's calls made on demand (ground truth from the index, without
iterating the calls)."""

from __future__ import annotations

import io
import wave
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from amigofs.emulator.audio import AudioObject, lin2ulaw, ulaw2lin
from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.data import Dataset
from amigofs.emulator.sids import SidCodec

KEY = "unit-test-key-0123456789"
CODEC = SidCodec(seed=5)
# Past EAGER_CALLS: calls are made one by one, from their position.
LAZY = Dataset(EmulatorConfig(api_key=KEY, workspaces=2, calls_per_workspace=50_000, seed=9))


@given(st.integers(0, (1 << 24) - 1), st.integers(0, (1 << 40) - 1))
def test_a_sid_names_its_call_and_only_its_canonical_spelling_does(ws: int, serial: int) -> None:
    sid = CODEC.encode(ws, serial)
    assert len(sid) == 34 and sid.startswith("CA")
    assert CODEC.decode(sid) == (ws, serial)
    if sid.upper() != sid:
        assert CODEC.decode(sid.upper()) is None
    assert SidCodec(seed=6).decode(sid) is None  # another seed's codec: not ours


@given(st.integers(-32768, 32767))
def test_mu_law_decodes_near_the_sample(sample: int) -> None:
    decoded = ulaw2lin(lin2ulaw(sample))
    # The step of mu-law's segment: 8 near zero, 1024 at full scale.
    assert abs(decoded - sample) <= max(8, abs(sample) // 16) + 132


def test_every_mu_law_code_survives_a_round_trip() -> None:
    for code in range(256):
        again = lin2ulaw(ulaw2lin(code))
        assert again == code or ulaw2lin(again) == ulaw2lin(code) == 0


@given(st.integers(0, 200_000), st.integers(0, 200_000), st.booleans())
def test_stored_audio_reads_the_same_bytes_however_it_is_split(a: int, b: int, wav: bool) -> None:
    audio = AudioObject(
        seed=1, workspace_id="ws", call_sid="CA1", channel="outbound", samples=80_001, wav=wav
    )
    start, end = sorted((a, b))
    whole = audio.read(0, audio.size)
    assert len(whole) == audio.size
    assert audio.read(start, end) == whole[start:end]
    assert audio.read(0, start) + audio.read(start, audio.size + 10) == whole


def test_a_pcm_wav_header_is_what_wave_reads() -> None:
    audio = AudioObject(
        seed=1, workspace_id="ws", call_sid="CA1", channel="outbound", samples=16_001, wav=True
    )
    with wave.open(io.BytesIO(audio.read(0, audio.size))) as parsed:
        assert (parsed.getnchannels(), parsed.getsampwidth(), parsed.getframerate()) == (
            1,
            2,
            16000,
        )
        assert parsed.getnframes() == 16_001
    assert audio.size == 44 + 2 * 16_001  # no pad: the data chunk is even


@given(st.integers(0, 2 * 50_004 - 1))
def test_a_lazy_call_is_found_by_its_sid_at_its_position(n: int) -> None:
    ws = LAZY.workspaces[n % 2].id
    calls = LAZY.call_list(ws)
    assert calls is not None and len(calls) == 50_004  # two null SIDs, two without recording
    position = n // 2
    call = calls[position]
    if call.call_sid is None:
        return
    assert calls.find(call.call_sid) == position
    assert LAZY.call(ws, call.call_sid) == call
    assert calls.started(position) == call.started_at
    if position:
        assert calls.started(position - 1) > call.started_at  # newest first, strictly
    assert calls.first_before(call.started_at) == position + 1
    assert calls.first_before(call.started_at + timedelta(seconds=1)) == position
