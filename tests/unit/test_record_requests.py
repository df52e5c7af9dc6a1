"""What loading a call's record costs in requests, and what it shows: a stat walk's load
is the metadata alone (one request), metadata.json is that answer's body, the sizes are
those a load with links shows, and the first read fetches the links, then the bytes.
Against the emulator in this process (tests/unit/inprocess.py), nothing mounted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from amigofs.api.models import DownloadPath, RecordingMetadata, RecordingUrls
from amigofs.cache.meta import MetaStore
from amigofs.cache.store import BlockStore
from amigofs.emulator.calls import Recording
from amigofs.fs.attributes import InodeT
from amigofs.fs.records import (
    CALL,
    INBOUND,
    METADATA,
    OUTBOUND,
    CallRecord,
    PresentedFile,
    RecordingSource,
)
from amigofs.fs.wav import audio_layout
from amigofs.policy.stored_audio import MIN_WAV_HEADER, guess_wav_container
from tests.unit.block_doubles import MemoryCache, MemoryFetcher
from tests.unit.inprocess import Served, served_emulator

BLOCK = 64 << 10
CALL_OPS = ("get-recording-urls", "get-recording-metadata", "download-recording-file")


@given(
    samples=st.integers(0, 10**8),
    width=st.sampled_from((1, 2)),
    rate=st.sampled_from((8000, 16000, 44100, 48000)),
    header=st.integers(MIN_WAV_HEADER, 1 << 16),
)
def test_a_stored_file_is_taken_for_a_wav_container_by_its_header_bytes(
    samples: int, width: int, rate: int, header: int
) -> None:
    duration = samples / rate
    assert guess_wav_container(samples * width + header, duration, rate, width)
    assert not guess_wav_container(samples * width, duration, rate, width)
    # Fewer bytes than the duration's samples (a cut recording) is no container either.
    assert not guess_wav_container(max(0, samples * width - header), duration, rate, width)


def test_a_headerless_file_of_an_unknown_format_is_taken_for_a_container() -> None:
    assert guess_wav_container(100, 1.0, 8000, None)
    assert not guess_wav_container(8000, float("inf"), 8000, 1)


def _counts(served: Served) -> dict[str, int]:
    return {op: served.requests(op) for op in CALL_OPS}


def _recordings(served: Served, workspace_id: str) -> list[Recording]:
    found = [r for r in served.app.data.recordings() if r.workspace_id == workspace_id]
    # Both kinds of stored files, or the sizes prove nothing about guessing them.
    assert {r.storage for r in found} == {"wav", "raw"}
    return found


def _shown(record: CallRecord) -> dict[str, int]:
    return {name: file.size for name, file in record.files.items()}


def _presented_size(recording: Recording, name: str) -> int:
    channel = name.removesuffix(".wav")
    stored = recording.inbound_filename if name == INBOUND else recording.outbound_filename
    metadata = recording.metadata
    return audio_layout(
        stored,
        str(metadata[f"{channel}_format"]),
        int(str(metadata[f"{channel}_sample_rate"])),
        int(str(metadata[f"{channel}_size_bytes"])),
    ).size


async def test_a_stat_walks_load_is_one_request_and_shows_what_a_load_with_links_shows() -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=16, max_duration=20.0) as served:
        workspace_id = served.workspace_ids[0]
        recordings = _recordings(served, workspace_id)
        store = BlockStore(
            MemoryCache(BLOCK), MemoryFetcher({}, MemoryCache(BLOCK)), served.nursery
        )
        walking = RecordingSource(served.client, store)
        walked = {
            r.call_sid: await walking.load(workspace_id, r.call_sid, None, links=False)
            for r in recordings
        }
        await trio.testing.wait_all_tasks_blocked()
        n = len(recordings)
        assert _counts(served) == dict(zip(CALL_OPS, (0, n, 0), strict=True))
        linked = RecordingSource(served.client, store)
        for recording in recordings:
            record = walked[recording.call_sid]
            assert not record.linked
            metadata = record.files[METADATA]
            assert metadata.content == recording.metadata_bytes
            assert metadata.size == len(recording.metadata_bytes)
            for name in (INBOUND, OUTBOUND):
                assert record.files[name].size == _presented_size(recording, name), name
            truth = await linked.load(workspace_id, recording.call_sid, None, links=True)
            assert truth.linked and _shown(record) == _shown(truth)
            assert set(record.files) == {INBOUND, OUTBOUND, CALL, METADATA}
        await trio.testing.wait_all_tasks_blocked()
        # The loads with links: urls and metadata each, and no download of metadata.json.
        assert _counts(served) == dict(zip(CALL_OPS, (n, 2 * n, 0), strict=True))


async def test_a_record_kept_on_disk_without_links_costs_no_request(tmp_path: Path) -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=4) as served:
        workspace_id = served.workspace_ids[0]
        store = BlockStore(
            MemoryCache(BLOCK), MemoryFetcher({}, MemoryCache(BLOCK)), served.nursery
        )
        meta = MetaStore(tmp_path)
        try:
            recording = next(r for r in served.app.data.recordings())
            sid = recording.call_sid
            first = await RecordingSource(served.client, store, meta).load(
                workspace_id, sid, None, links=False
            )
            before = _counts(served)
            kept = await RecordingSource(served.client, store, meta).load(
                workspace_id, sid, None, links=False
            )
            assert _counts(served) == before
            assert kept.from_disk and not kept.linked
            assert kept.files[METADATA].content == recording.metadata_bytes
            assert _shown(kept) == _shown(first)
        finally:
            meta.close()


@dataclass
class _Reader:
    inode: InodeT
    record: CallRecord | None
    file: PresentedFile
    versions: tuple[int, ...] | None = None


def _source_over(
    served: Served, recording: Recording
) -> tuple[dict[str, str], dict[str, bytes], RecordingSource]:
    """A records source whose downloads are the recording's stored files as the
    emulator has them (in memory), asking the emulator itself for urls and metadata:
    (presented name -> stored name, stored name -> bytes, the source)."""
    workspace_id, sid = recording.workspace_id, recording.call_sid
    names = {INBOUND: recording.inbound_filename, OUTBOUND: recording.outbound_filename}
    stored = {
        filename: served.app.data.read_range(workspace_id, sid, filename, 0, 1 << 40)
        for filename in names.values()
    }
    cache = MemoryCache(BLOCK)
    fetcher = MemoryFetcher(stored, cache)
    return names, stored, RecordingSource(served.client, BlockStore(cache, fetcher, served.nursery))


async def _no_reload(record: CallRecord, error: Exception) -> CallRecord:
    raise AssertionError(f"reloaded: {error}")


async def test_the_first_read_of_a_stat_walks_record_fetches_its_links_then_its_bytes() -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=8, max_duration=20.0) as served:
        workspace_id = served.workspace_ids[0]
        for recording in _recordings(served, workspace_id)[:4]:
            names, stored, source = _source_over(served, recording)
            record = await source.load(workspace_id, recording.call_sid, None, links=False)
            before = _counts(served)
            reload: Callable[[CallRecord, Exception], Awaitable[CallRecord]] = _no_reload
            for name in (INBOUND, OUTBOUND):
                reader = _Reader(InodeT(1), record, record.files[name])
                got = bytes(await source.read_checked(reader, 0, 1 << 20, reload))
                layout_size = _presented_size(recording, name)
                assert len(got) == layout_size == reader.file.size
                assert got.endswith(stored[names[name]])
                assert reader.file is record.files[name] and reader.file.stored is not None
            assert record.linked
            urls = served.requests("get-recording-urls") - before["get-recording-urls"]
            assert urls == 1, "the two files' first reads share one request for links"


async def test_a_file_opened_before_another_reader_linked_its_record_reads_whole() -> None:
    # amigofs prefetch opens a call's files together: the first read fetches the
    # record's links; a reader opened before that still holds the file made from the
    # metadata alone, and is moved to the linked one (it was an AssertionError: EIO).
    async with served_emulator(workspaces=1, calls_per_workspace=8, max_duration=20.0) as served:
        workspace_id = served.workspace_ids[0]
        recording = _recordings(served, workspace_id)[0]
        names, stored, source = _source_over(served, recording)
        record = await source.load(workspace_id, recording.call_sid, None, links=False)
        opened = (INBOUND, CALL, OUTBOUND)  # call.wav over the two, opened together
        readers = {name: _Reader(InodeT(1), record, record.files[name]) for name in opened}
        for name, reader in readers.items():
            got = bytes(await source.read_checked(reader, 0, 1 << 20, _no_reload))
            assert len(got) == min(1 << 20, reader.file.size), name
            if name in names:
                assert got.endswith(stored[names[name]]), name
            assert reader.file is record.files[name]


class _GuessDefeatingClient:
    """A call whose metadata says more seconds than its stored raw file holds, by a WAV
    header's worth and more: from the metadata alone it looks like a WAV container."""

    base_url = "http://api"

    def __init__(self, stored: bytes) -> None:
        self.stored = stored
        self.urls = 0

    async def recording_metadata(self, workspace_id: str, call_sid: str) -> RecordingMetadata:
        await trio.lowlevel.checkpoint()
        start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        seconds = (len(self.stored) - 100) / 8000  # 100 bytes fewer samples than stored
        return RecordingMetadata(
            "ws", "CA1", "inbound", seconds, "mulaw", 8000, "mulaw", 8000, "none",
            start, start + dt.timedelta(seconds=seconds), len(self.stored), len(self.stored),
            0.0, body=b'{"call_sid": "CA1"}',
        )  # fmt: skip

    async def recording_urls(self, workspace_id: str, call_sid: str) -> RecordingUrls:
        await trio.lowlevel.checkpoint()
        self.urls += 1
        prefix = "/v1/ws/recordings/CA1/download/"
        inbound, outbound = (
            DownloadPath("ws", "CA1", name, prefix + name) for name in ("in.ulaw", "out.ulaw")
        )
        return RecordingUrls("CA1", inbound, outbound, None)


async def test_a_wrong_guess_is_shown_uncached_and_put_right_before_the_first_byte() -> None:
    stored = bytes(range(256)) * 64
    client = _GuessDefeatingClient(stored)
    cache = MemoryCache(BLOCK)
    async with trio.open_nursery() as nursery:
        fetcher = MemoryFetcher({"in.ulaw": stored, "out.ulaw": stored}, cache)
        source = RecordingSource(client, BlockStore(cache, fetcher, nursery))  # type: ignore[arg-type]
        record = await source.load("ws", "CA1", None, links=False)
        # Taken for a WAV container: the stored size; shown uncached until the links say.
        assert record.files[INBOUND].size == len(stored)
        assert record.unconfirmed == {INBOUND, OUTBOUND, CALL}
        # metadata.json is shown whatever the (absent) metadata link.
        assert record.files[METADATA].content == b'{"call_sid": "CA1"}'
        reader = _Reader(InodeT(1), record, record.files[INBOUND])
        got = bytes(await source.read_checked(reader, 0, 1 << 20, _no_reload))
        header = audio_layout("in.ulaw", "mulaw", 8000, len(stored)).header
        assert got == header + stored
        assert reader.file.size == len(header) + len(stored) == record.files[INBOUND].size
        assert record.linked and not record.unconfirmed and client.urls == 1
        nursery.cancel_scope.cancel()
