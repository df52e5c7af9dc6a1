"""The emulator's synthetic dataset (`Dataset`): all workspaces and calls of a config, and the
bytes of every stored file, made from the config's seed.

What it is made of lives beside it: `calls` (workspaces, calls, recordings and how they are
made), `call_list` (a workspace's calls in listing order, eager or made on demand), `sids`
(the SID codec), `audio` (the stored audio and its WAV headers, the ground truth of amigofs'
own), `faults` (what is broken on purpose). The names tests and benchmarks import from here
are re-exported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Literal

from amigofs.emulator import audio, faults, seeded
from amigofs.emulator.audio import BytesObject, StoredObject
from amigofs.emulator.call_list import EAGER_CALLS, CallList, workspace_calls
from amigofs.emulator.calls import METADATA_FILENAME, Call, CallMaker, Recording, Workspace
from amigofs.emulator.config import EmulatorConfig
from amigofs.emulator.faults import HOSTILE_CALL_SIDS, HOSTILE_NON_OBJECTS, HOSTILE_WORKSPACE_IDS

# What tests and benchmarks import from here, besides Dataset.
__all__ = [
    "HOSTILE_CALL_SIDS",
    "HOSTILE_NON_OBJECTS",
    "HOSTILE_WORKSPACE_IDS",
    "METADATA_FILENAME",
    "Call",
    "Dataset",
    "Recording",
]


class Dataset:
    """All workspaces and calls of an emulator config, and the bytes of every stored file.

    Workspaces are made up front. Their calls are too when there are at most EAGER_CALLS of
    them; larger workspaces (up to a million calls and beyond) are made call by call, with
    memory and start-up time independent of the count. ``add_calls`` puts new calls at the
    head of a workspace, as the emulator does at run time.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = replace(config)
        maker = CallMaker(self.config)
        self.seed = config.seed
        self.epoch = maker.epoch
        self.sid_codec = maker.sid_codec
        rng = seeded.rng(config.seed, "workspaces")
        self.workspaces: list[Workspace] = [
            maker.workspace(
                rng, index, configured=index < config.workspaces - config.not_configured_workspaces
            )
            for index in range(config.workspaces)
        ]
        self.evil_host = config.evil_host
        self.foreign_workspace_id: str = seeded.uuid4(seeded.rng(config.seed, "foreign"))
        """A workspace that exists but that the emulator's key does not own (403)."""
        self._workspaces = {ws.id: ws for ws in self.workspaces}
        self.lazy = config.calls_per_workspace > EAGER_CALLS
        self._calls: dict[str, CallList] = {
            ws.id: workspace_calls(maker, ws, index) for index, ws in enumerate(self.workspaces)
        }

    # workspaces and calls

    def workspace(self, workspace_id: str) -> Workspace | None:
        return self._workspaces.get(workspace_id)

    def calls(self, workspace_id: str) -> Sequence[Call]:
        """Every call of a workspace, newest first (the listing order)."""
        return self._calls.get(workspace_id, ())

    def call_list(self, workspace_id: str) -> CallList | None:
        return self._calls.get(workspace_id)

    def call(self, workspace_id: str, call_sid: str) -> Call | None:
        calls = self._calls.get(workspace_id)
        if calls is None:
            return None
        position = calls.find(call_sid)
        return None if position is None else calls[position]

    def recording(self, workspace_id: str, call_sid: str) -> Recording | None:
        call = self.call(workspace_id, call_sid)
        return None if call is None else call.recording

    def find_recording(self, call_sid: str) -> Recording | None:
        """The recording with this SID in any workspace."""
        for workspace_id in self._calls:
            rec = self.recording(workspace_id, call_sid)
            if rec is not None:
                return rec
        return None

    def add_calls(self, count: int, workspace_id: str | None = None) -> None:
        """Add ``count`` new recorded calls at the head of one workspace (or of every one), with
        start times after every call it holds: listing offsets shift by ``count``."""
        if count < 0:
            raise ValueError("count must be >= 0")
        for ws_id, calls in self._calls.items():
            if workspace_id is None or ws_id == workspace_id:
                calls.added += count

    def added_calls(self) -> dict[str, int]:
        """Calls added to each workspace since the start."""
        return {ws_id: calls.added for ws_id, calls in self._calls.items()}

    def archived_sids(self) -> Iterator[str]:
        """The SIDs of the recordings that start in the archive."""
        for calls in self._calls.values():
            yield from calls.archived_sids()

    def recordings(self) -> Iterator[Recording]:
        for calls in self._calls.values():
            for call in calls:
                if call.recording is not None:
                    yield call.recording

    def faulty(self, kind: Literal["metadata", "size", "url", "row"]) -> list[Recording]:
        """The recordings with a metadata, size, url or row fault, in listing order."""
        attr = f"{kind}_fault"
        return [r for r in self.recordings() if getattr(r, attr) is not None]

    def sound(self) -> list[Recording]:
        """Recordings without any injected fault (archived ones included)."""
        return list(self._sound())

    def _sound(self) -> Iterator[Recording]:
        for r in self.recordings():
            if r.metadata_fault is r.size_fault is r.url_fault is r.row_fault is None:
                yield r

    def _sound_in(self, workspace_id: str) -> Iterator[Recording]:
        for call in self.calls(workspace_id):
            r = call.recording
            if r is None:
                continue
            if r.metadata_fault is r.size_fault is r.url_fault is r.row_fault is None:
                yield r

    # hostile listings

    def hostile_call_items(self, page: list[dict[str, object]]) -> list[object]:
        """What hostile_listing adds to a list-calls page (faults.hostile_call_items)."""
        return faults.hostile_call_items(page, self.epoch)

    def hostile_workspace_items(self, page: list[dict[str, object]]) -> list[object]:
        """What hostile_listing adds to a list-workspaces page."""
        return faults.hostile_workspace_items(page)

    # stored files

    def open(self, workspace_id: str, call_sid: str, filename: str) -> StoredObject:
        """The stored file of a call; FileNotFoundError if the call or file does not exist."""
        rec = self.recording(workspace_id, call_sid)
        if rec is None or filename not in rec.filenames:
            raise FileNotFoundError(f"{workspace_id}/{call_sid}/{filename}")
        if filename == METADATA_FILENAME:
            return BytesObject(rec.metadata_bytes, "application/json")
        channel: audio.Channel = "inbound" if filename == rec.inbound_filename else "outbound"
        samples = rec.inbound_samples if channel == "inbound" else rec.outbound_samples
        # Through the module: a test substitutes the stored files' shape there.
        return audio.AudioObject(
            seed=self.seed,
            workspace_id=workspace_id,
            call_sid=call_sid,
            channel=channel,
            samples=faults.stored_samples(rec, samples),
            wav=rec.storage == "wav",
        )

    def body_limit(self, workspace_id: str, call_sid: str, filename: str) -> int | None:
        """For a "cut_short" recording's audio, the offset where every body of it ends (the
        connection closes there, short of what the headers promised); None otherwise."""
        rec = self.recording(workspace_id, call_sid)
        if rec is None or rec.size_fault != "cut_short" or filename == METADATA_FILENAME:
            return None
        return faults.cut_short_end(self.open(workspace_id, call_sid, filename).size)

    def download_links(
        self, workspace_id: str, call_sid: str, own_host: str
    ) -> tuple[str, str, str] | None:
        """The inbound, outbound and metadata links an evil_urls recording hands out instead
        of its own download paths (None for other recordings). ``own_host`` is the emulator's
        host:port as the client addressed it."""
        rec = self.recording(workspace_id, call_sid)
        if rec is None or rec.url_fault is None:
            return None
        other = next(
            (r for r in self._sound_in(workspace_id) if r.call_sid != call_sid and not r.archived),
            None,
        )
        return faults.evil_links(
            rec,
            other,
            own_host=own_host,
            evil_host=self.evil_host,
            foreign_workspace_id=self.foreign_workspace_id,
        )

    def file_size(self, workspace_id: str, call_sid: str, filename: str) -> int:
        return self.open(workspace_id, call_sid, filename).size

    def read_range(
        self, workspace_id: str, call_sid: str, filename: str, start: int, end: int
    ) -> bytes:
        """Bytes [start, end) of a stored file (end exclusive, clipped to the size)."""
        return self.open(workspace_id, call_sid, filename).read(start, end)

    def iter_range(
        self,
        workspace_id: str,
        call_sid: str,
        filename: str,
        start: int,
        end: int,
        chunk_size: int = 1024 * 1024,
    ) -> Iterator[bytes]:
        """Bytes [start, end) of a stored file as chunks of at most chunk_size bytes."""
        obj = self.open(workspace_id, call_sid, filename)
        end = min(end, obj.size)
        for position in range(start, end, chunk_size):
            yield obj.read(position, min(position + chunk_size, end))
