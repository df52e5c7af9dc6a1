"""A call's recording as files: which exist, their sizes, and where their bytes come from.

A call's sizes cost one request, its metadata: metadata.json is that answer's body
exactly (the platform serves the same document as a file), kept with the record, and
the audio files' sizes are the metadata's. The download links (get-recording-urls) are
fetched when an audio file is read (`RecordingSource.link`), or with the metadata, at
once, when the record is loaded for an audio file outside a walk, so that the first
bytes of a file cost two round trips, or ahead of a walk whose reader reads the calls
it visits (amigofs.policy.links_ahead), so that they cost one. Until its links are in, a record is not
`linked`: whether each stored file is a WAV container, which its name tells, is
guessed (amigofs.policy.stored_audio) and its files' sizes are shown uncached.
Audio bytes are only fetched when read, through the block cache.

A record kept on disk by an earlier mount is used without a request, but not
trusted beyond that: `CallRecord.from_disk` says so, and the namespace loads it
again from the API when a download contradicts it. Every request for a
workspace also says whether the key may still see it (`WorkspaceAccess`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import cachetools
import trio

from amigofs.api import errors as api
from amigofs.api.body import parse_json
from amigofs.api.client import PlatformClient
from amigofs.api.models import (
    CallSummary,
    DownloadPath,
    RecordingMetadata,
    RecordingUrls,
    parse_recording_metadata,
    parse_recording_urls,
    recording_urls_document,
)
from amigofs.cache.block_format import FileKey
from amigofs.cache.blocks import Fetch
from amigofs.cache.meta import MetaStore
from amigofs.cache.singleflight import SingleFlight
from amigofs.cache.store import BlockStore, LinkExpired, StoredFile
from amigofs.concurrency import gather
from amigofs.fs.attributes import InodeT
from amigofs.fs.errors import FsError
from amigofs.fs.stereo import Channel, NoStereo, StereoView
from amigofs.fs.wav import UnknownAudioFormat, audio_layout, codec_of, is_wav_container
from amigofs.policy.links_ahead import LinksAhead
from amigofs.policy.stored_audio import guess_wav_container

log = logging.getLogger(__name__)

T = TypeVar("T")

INBOUND, OUTBOUND, METADATA = "inbound.wav", "outbound.wav", "metadata.json"
CALL = "call.wav"  # both channels in one stereo file (amigofs.fs.stereo)
FILE_NAMES = (INBOUND, OUTBOUND, CALL, METADATA)
# The files read from stored files (metadata.json is the metadata answer).
AUDIO_NAMES = (INBOUND, OUTBOUND, CALL)
# Tries of a read whose links expire: a renewal, and one more for a sibling's link
# (call.wav reads two stored files) or a fetch that started on the old link.
LINK_ATTEMPTS = 4


@dataclass(slots=True, frozen=True)
class PresentedFile:
    """One file of a call directory: `header` (synthesized) then `stored` bytes,
    `content` held in memory (the control file), or a `stereo` mix of two stored
    files (call.wav)."""

    name: str
    size: int
    header: bytes = b""
    stored: StoredFile | None = None
    content: bytes | None = None
    stereo: StereoView | None = None


@dataclass(slots=True)
class CallRecord:
    workspace_id: str
    call_sid: str
    start: dt.datetime
    metadata: RecordingMetadata
    files: dict[str, PresentedFile] = field(default_factory=dict)
    # Kept by an earlier mount: a download may yet find it wrong (a size the
    # server contradicts), and then it is loaded again from the API.
    from_disk: bool = False
    # Of such a record, the stored files no read has yet found consistent; of one not
    # `linked`, its audio files, whose sizes are guessed: shown with no caching.
    unconfirmed: set[str] = field(default_factory=set)
    # Its files' download links by presented name, renewed together.
    links: dict[str, _Link] = field(default_factory=dict)
    # False: built from the metadata alone (no links yet): its audio files have no
    # stored file to read, and are made again from the links at the first read.
    linked: bool = True
    # The versions an earlier mount found its stored files of, by stored name.
    validators: dict[str, str] = field(default_factory=dict)
    # Whether a reader has been served its audio bytes (see policy.links_ahead).
    read: bool = False


class Reader(Protocol):
    """What reads one file: the file, and the record it belongs to (None: no call's);
    `versions`: the generations (BlockStore.generation) of its stored files when it was
    first served their bytes (None: not yet), set here."""

    inode: InodeT
    record: CallRecord | None
    file: PresentedFile
    versions: tuple[int, ...] | None


class WorkspaceAccess:
    """Which workspaces the API now refuses this key (403), and since when.

    Any refused request for a workspace marks it revoked; any answered one
    clears that. The namespace refuses the workspace while it is marked.
    """

    def __init__(self) -> None:
        self._refused: dict[str, float] = {}  # workspace -> last refusal (trio time)
        # Told of each newly revoked workspace: the kernel's cached entries below it
        # (call directories are cached for a day) must go too.
        self.on_revoked: Callable[[str], None] | None = None

    def revoked(self, workspace_id: str) -> bool:
        return workspace_id in self._refused

    def refused_at(self, workspace_id: str) -> float | None:
        return self._refused.get(workspace_id)

    async def checked(self, workspace_id: str, call: Callable[[], Awaitable[T]]) -> T:
        """Runs a request for the workspace, noting whether it was refused."""
        try:
            result = await call()
        except api.AuthError as exc:
            if exc.status == 403:
                newly = workspace_id not in self._refused
                if newly:
                    log.warning(
                        "%s: access revoked: the API refuses this key the workspace (%s); "
                        "refused here too (EACCES) until the API allows it again",
                        workspace_id,
                        exc,
                    )
                self._refused[workspace_id] = trio.current_time()
                if newly and self.on_revoked is not None:
                    self.on_revoked(workspace_id)
            raise
        if self._refused.pop(workspace_id, None) is not None:
            log.warning(
                "%s: access is back: the API allows this key the workspace again", workspace_id
            )
        return result


class _Link:
    """The current download path of one stored file; the records layer renews it when
    the store says it expired (`LinkExpired`). `siblings` are the links of the same
    record (by presented name), renewed together, as one request renews them all."""

    def __init__(
        self, key: tuple[str, str, str], path: DownloadPath, siblings: dict[str, _Link]
    ) -> None:
        self.key = key
        self.path = path
        self.siblings = siblings


@contextlib.contextmanager
def _unless_ahead_of_need(optional: bool, workspace_id: str, call_sid: str) -> Iterator[None]:
    """Links asked ahead of need (`optional`, policy.links_ahead): their failure is
    none of the record's (its sizes, its metadata.json), only of its first read, which
    asks again; else it is the caller's."""
    try:
        yield
    except api.AmigoError as exc:
        if not optional:
            raise
        log.debug("%s/%s: links ahead of need: %s", workspace_id, call_sid, exc)


def _made_unlinked(file: PresentedFile) -> bool:
    """Whether a stored file's presented file was made from its record's metadata
    alone (no link to read it by): a mono file without its stored file, or call.wav
    over such sources."""
    if file.stereo is not None:
        return any(isinstance(c.stored.link, _Unlinked) for c in file.stereo.channels)
    return file.stored is None


class _Unlinked:
    """The link of a stored file whose links are not fetched yet: call.wav's sources in
    a record not `linked`, which give it its size but are never read (a read links the
    record first, and reads the files made then)."""

    def __init__(self, what: str) -> None:
        self._what = what

    @property
    def path(self) -> DownloadPath:
        raise FsError(errno.EIO, f"{self._what}: no download link yet")


def _guessed_name(name: str, fmt: str, rate: int, size: int, duration: float) -> str:
    """The stored file's name as far as its kind goes, until its link gives it: a WAV
    container's or a raw file's (amigofs.policy.stored_audio says which)."""
    codec = codec_of(fmt)
    width = None if codec is None else codec[1] // 8
    stem = name.removesuffix(".wav")
    return f"{stem}.wav" if guess_wav_container(size, duration, rate, width) else f"{stem}.raw"


# How the records' owner loads a call's record again (fs/calls.Calls.reload).
Reload = Callable[[CallRecord, Exception], Awaitable[CallRecord]]


def _document(document: object) -> dict[str, object]:
    if not isinstance(document, dict):
        raise ValueError("not a record")
    return document


class RecordingSource:
    """Loads call records and reads their files, renewing expired links."""

    def __init__(
        self,
        client: PlatformClient,
        store: BlockStore,
        meta: MetaStore | None = None,
        *,
        concurrency: int = 8,
        call_wav: bool = True,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self._client = client
        # Where a prefetch whose link expired is renewed and started again; None: not.
        self._nursery = nursery
        self._call_wav = call_wav  # False: --no-call-wav
        self._meta = meta
        self._store = store
        self._limit = trio.CapacityLimiter(concurrency)
        self._url_refresh: SingleFlight[RecordingUrls] = SingleFlight()
        self._linking: SingleFlight[None] = SingleFlight()
        # Of each workspace, whether records loaded for their sizes alone come with
        # their links: its walker reads the calls it visits.
        self._links_ahead: dict[str, LinksAhead] = {}
        self.access = WorkspaceAccess()
        # Stored files of size 0 in their metadata that the server confirmed empty.
        self._confirmed_empty: set[FileKey] = set()
        # Presented files whose stored length was found not to be the metadata's.
        self._mismatched: set[str] = set()
        # The inodes of the presented files a stored file is read from (the namespace
        # numbers them from the call's row): nothing is kept per file served, so memory
        # does not grow with the files read (issue 21).
        self.inodes_of: Callable[[FileKey], set[InodeT]] | None = None
        # Told the inodes whose pages the kernel may keep (files are opened with
        # keep_cache) are stale: a stored file under them was replaced on the server.
        self.on_stale_pages: Callable[[set[InodeT]], None] | None = None
        store.on_replaced = self._replaced
        # Versions learnt of calls whose record is not saved yet, for when it is.
        self._unsaved: cachetools.LRUCache[tuple[str, str], dict[str, str]] = cachetools.LRUCache(
            1024
        )
        store.on_version = self._remember_version

    async def load(
        self,
        workspace_id: str,
        call_sid: str,
        summary: CallSummary | None,
        *,
        fresh: bool = False,
        links: bool = True,
    ) -> CallRecord:
        """The call's record: the one kept on disk unless `fresh`, else from the API.
        `links`: with its download links, asked at once with the metadata (the first
        bytes of a file then cost two round trips); else the metadata alone, one
        request (a stat walk), the links fetched at the first read (`link`), unless
        the workspace's walker reads the calls it visits (policy.links_ahead): then
        with its links too, in the same round trip, so that the first bytes of a call
        loaded ahead cost one."""
        # Links asked ahead of need (policy.links_ahead): their failure is none of the
        # record's (its sizes, its metadata.json), only of its first read, which asks.
        optional = False
        if not links:
            links_ahead = self._links_ahead.get(workspace_id)
            links = optional = links_ahead is not None and links_ahead.load()
        stored = None if fresh else self._load_stored(workspace_id, call_sid)
        if stored is not None:
            urls, metadata, validators = stored
            record = self._build(
                workspace_id, call_sid, summary, urls, metadata,
                from_disk=True, validators=validators,
            )  # fmt: skip
            if record.linked:
                await self._confirm_empty(record)
            elif links:
                with _unless_ahead_of_need(optional, workspace_id, call_sid):
                    await self.link(record)
            return record
        found: RecordingUrls | None
        async with self._limit:
            if links:
                found, metadata = await self.access.checked(
                    workspace_id,
                    lambda: gather(
                        lambda: self._urls(workspace_id, call_sid, optional),
                        lambda: self._client.recording_metadata(workspace_id, call_sid),
                    ),
                )
            else:
                found = None
                metadata = await self.access.checked(
                    workspace_id, lambda: self._client.recording_metadata(workspace_id, call_sid)
                )
        record = self._build(workspace_id, call_sid, summary, found, metadata)
        if record.linked:
            await self._confirm_empty(record)
        self._save(record, found)
        return record

    async def _urls(self, workspace_id: str, call_sid: str, optional: bool) -> RecordingUrls | None:
        """The call's links; `optional`: asked ahead of need, None if refused or
        broken (the first read asks again, and fails then if it must)."""
        urls = None
        with _unless_ahead_of_need(optional, workspace_id, call_sid):
            urls = await self._client.recording_urls(workspace_id, call_sid)
        return urls

    async def link(self, record: CallRecord) -> None:
        """Gives a record built from its metadata alone its download links (one
        request), its audio files made again from them: their stored names say what
        was guessed (see CallRecord.linked). Readers of one record share the request."""
        if record.linked:
            return
        await self._linking.run(
            (record.workspace_id, record.call_sid, id(record)), lambda: self._link(record)
        )

    async def _link(self, record: CallRecord) -> None:
        if record.linked:
            return
        workspace_id, call_sid = record.workspace_id, record.call_sid
        async with self._limit:
            urls = await self.access.checked(
                workspace_id, lambda: self._client.recording_urls(workspace_id, call_sid)
            )
        made = self._build(
            workspace_id, call_sid, None, urls, record.metadata,
            from_disk=record.from_disk, validators=record.validators,
        )  # fmt: skip
        await self._confirm_empty(made)
        guessed = {name: file.size for name, file in record.files.items()}
        if guessed != {name: file.size for name, file in made.files.items()}:
            log.info(
                "%s/%s: its download links show other files than its metadata suggested: "
                "%s, not %s (sizes by name)",
                workspace_id, call_sid,
                {name: file.size for name, file in made.files.items()}, guessed,
            )  # fmt: skip
        record.files, record.links, record.unconfirmed = made.files, made.links, made.unconfirmed
        record.linked = True
        self._save(record, urls)

    async def _confirm_empty(self, record: CallRecord) -> None:
        """An audio file of size 0 in the metadata is shown empty only once the server
        says it is (one request for the byte past its end, the first time): a file the
        server holds bytes of is not shown, with one log line, never shown empty."""
        for name in (INBOUND, OUTBOUND):
            file = record.files.get(name)
            stored = file.stored if file is not None else None
            if stored is None or stored.size != 0 or stored.key in self._confirmed_empty:
                continue
            link = record.links[name]
            for attempt in range(2):
                path = link.path
                try:
                    await self._client.check_length(path, 0)
                    break
                except api.AuthError:
                    if attempt:  # refused again right after its renewal: the server's word
                        raise
                    await self.renew(link, path)  # a link kept by an earlier mount expired
                except api.SizeMismatch as exc:
                    log.warning(
                        "%s/%s: %s not shown: %s", record.workspace_id, record.call_sid, name, exc
                    )
                    del record.files[name]
                    record.files.pop(CALL, None)
                    break
            if name in record.files:
                self._confirmed_empty.add(stored.key)

    def _save(self, record: CallRecord, urls: RecordingUrls | None) -> None:
        if self._meta is not None:
            key = (record.workspace_id, record.call_sid)
            validators = {**record.validators, **self._unsaved.pop(key, {})}
            document = {
                "urls": None if urls is None else recording_urls_document(urls),
                # The answer's bytes, one for one (latin-1 maps each byte to a character).
                "metadata_body": record.metadata.body.decode("latin-1"),
                "validators": validators,
            }
            self._meta.save(document, "records", record.workspace_id, record.call_sid)

    def _remember_version(self, file: StoredFile, validator: str) -> None:
        """Keeps with the call's record the version its file's blocks are of: a hint for
        the next mount, which asks whether the file is still of it (no byte if so);
        store.NO_VALIDATOR: the server sends none."""
        if self._meta is None:
            return
        key = file.key
        parts = ("records", key.workspace_id, key.call_sid)
        document = self._meta.load(_document, *parts)
        if document is None:  # not saved (yet, or no longer: a full cache disk)
            unsaved = self._unsaved.get((key.workspace_id, key.call_sid))
            if unsaved is None:
                unsaved = self._unsaved[(key.workspace_id, key.call_sid)] = {}
            unsaved[key.filename] = validator
            return
        validators = document.get("validators")
        document["validators"] = {
            **(validators if isinstance(validators, dict) else {}),
            key.filename: validator,
        }
        self._meta.save(document, *parts)

    def forget(self, workspace_id: str, call_sid: str) -> None:
        """Drops the call's record kept on disk (it was found wrong)."""
        if self._meta is not None:
            self._meta.discard("records", workspace_id, call_sid)

    def _load_stored(
        self, workspace_id: str, call_sid: str
    ) -> tuple[RecordingUrls | None, RecordingMetadata, dict[str, str]] | None:
        """A record an earlier mount kept: recordings never change, but their links
        expire, and an expired one is renewed when a download is refused. Its links
        are None if it was loaded from its metadata alone."""
        if self._meta is None:
            return None

        def parse(
            document: object,
        ) -> tuple[RecordingUrls | None, RecordingMetadata, dict[str, str]]:
            if not isinstance(document, dict):
                raise ValueError("not a record")
            found = document["urls"]
            urls = None if found is None else parse_recording_urls(
                found,
                workspace_id=workspace_id,
                call_sid=call_sid,
                base_url=self._client.base_url,
            )  # fmt: skip
            text = document["metadata_body"]
            if not isinstance(text, str):
                raise ValueError("metadata_body is not text")
            body = text.encode("latin-1")
            metadata = parse_recording_metadata(
                parse_json(body, "kept metadata"),
                workspace_id=workspace_id,
                call_sid=call_sid,
                body=body,
            )
            kept = document.get("validators")
            validators = {
                name: value
                for name, value in (kept.items() if isinstance(kept, dict) else ())
                if isinstance(name, str) and isinstance(value, str)
            }
            return urls, metadata, validators

        return self._meta.load(parse, "records", workspace_id, call_sid)

    def _build(
        self,
        workspace_id: str,
        call_sid: str,
        summary: CallSummary | None,
        urls: RecordingUrls | None,
        metadata: RecordingMetadata,
        *,
        from_disk: bool = False,
        validators: dict[str, str] | None = None,
    ) -> CallRecord:
        """The record of a call's metadata and its links; without links (None), its
        audio files as the metadata suggests them (see CallRecord.linked)."""
        start = summary.started_at if summary and summary.started_at else metadata.call_start
        record = CallRecord(
            workspace_id, call_sid, start, metadata, from_disk=from_disk,
            linked=urls is not None, validators=validators or {},
        )  # fmt: skip
        links: dict[str, _Link] = {}
        sources: dict[str, tuple[StoredFile, str, int, bool]] = {}
        for name, path, fmt, rate, size in (
            (INBOUND, urls.inbound if urls else None, metadata.inbound_format,
             metadata.inbound_sample_rate, metadata.inbound_size_bytes),
            (OUTBOUND, urls.outbound if urls else None, metadata.outbound_format,
             metadata.outbound_sample_rate, metadata.outbound_size_bytes),
        ):  # fmt: skip
            if urls is None:
                filename = _guessed_name(name, fmt, rate, size, metadata.duration_seconds)
            elif path is None:
                continue
            else:
                filename = path.filename
            try:
                layout = audio_layout(filename, fmt, rate, size)
            except UnknownAudioFormat as exc:
                log.warning("%s/%s: %s not shown: %s", workspace_id, call_sid, name, exc)
                continue
            key = FileKey(workspace_id, call_sid, filename, size)
            if path is None:
                # Not read before its links are in (a read links the record first).
                stored = StoredFile(key, _Unlinked(f"{workspace_id}/{call_sid}/{name}"))
                record.files[name] = PresentedFile(name, layout.size, header=layout.header)
                record.unconfirmed.add(name)
            else:
                link = links[name] = _Link((workspace_id, call_sid, name), path, links)
                stored = StoredFile(key, link, remembered=(validators or {}).get(filename))
                record.files[name] = PresentedFile(
                    name, layout.size, header=layout.header, stored=stored
                )
                if from_disk:
                    record.unconfirmed.add(name)
            sources[name] = (stored, fmt, rate, is_wav_container(filename))
        if self._call_wav and INBOUND in sources and OUTBOUND in sources:
            try:
                left, right = (
                    Channel.of(name, *sources[name][:3], metadata.duration_seconds,
                               sources[name][3])
                    for name in (INBOUND, OUTBOUND)
                )  # fmt: skip
                stereo = StereoView(left, right)
            except NoStereo as exc:
                log.warning("%s/%s: %s not shown: %s", workspace_id, call_sid, CALL, exc)
            else:
                record.files[CALL] = PresentedFile(CALL, stereo.size, stereo=stereo)
                if urls is None:
                    record.unconfirmed.add(CALL)
        record.links = links
        # The metadata answer itself, whatever its link says (none is fetched).
        record.files[METADATA] = PresentedFile(METADATA, len(metadata.body), content=metadata.body)
        return record

    async def read(
        self, file: PresentedFile, offset: int, size: int
    ) -> bytes | bytearray | memoryview:
        """Bytes [offset, offset+size) of a presented file, clipped to its end. A link
        the store finds expired is renewed and the read asked again; a link refused
        again right after its renewal is an error (the server's)."""
        end = min(offset + size, file.size)
        if offset >= end:
            return b""
        if file.content is not None:
            return memoryview(file.content)[offset:end]
        renewed: set[DownloadPath] = set()
        for attempt in range(LINK_ATTEMPTS):
            try:
                return await self._read_stored(file, offset, end)
            except LinkExpired as exc:
                if exc.stale in renewed or attempt == LINK_ATTEMPTS - 1:
                    raise exc.error from None
                link = exc.link
                assert isinstance(link, _Link)
                renewed.add(await self.renew(link, exc.stale))
        raise AssertionError("unreachable")

    async def _read_stored(
        self, file: PresentedFile, offset: int, end: int
    ) -> bytes | bytearray | memoryview:
        if file.stereo is not None:
            return await file.stereo.read(self._store, offset, end - offset)
        header_len = len(file.header)
        if end <= header_len:
            return file.header[offset:end]
        assert file.stored is not None
        data = await self._store.read(
            file.stored, max(offset, header_len) - header_len, end - header_len
        )
        if offset >= header_len:
            return data
        return file.header[offset:] + bytes(data)

    async def read_checked(
        self, reader: Reader, offset: int, size: int, reload: Reload
    ) -> bytes | bytearray | memoryview:
        """`read` of the reader's file, checking a record kept on disk against what the
        server says: a size it contradicts or a file it does not have (what a wrong
        record gets) has the record loaded again (`reload`, by the records' owner),
        once, and the reader moved to it before the read is made again. A reader is
        served one version of each stored file (`_one_version`). A record loaded from
        its metadata alone is given its links first (`link`)."""
        record = reader.record
        if record is not None and not record.read and reader.file.content is None:
            # A call's first read: the workspace's walker reads what it visits.
            record.read = True
            links_ahead = self._links_ahead.get(record.workspace_id)
            if links_ahead is None:
                links_ahead = self._links_ahead[record.workspace_id] = LinksAhead()
            links_ahead.read()
        await self._linked(reader)
        if self._mismatched and self._said_mismatch(reader) in self._mismatched:
            # Logged once, at the first read that found it; not again at each retry.
            raise FsError(errno.EIO, f"{self._said_mismatch(reader)}: length is not metadata's")
        first = reader.file
        before = self._generations(first)
        try:
            data = await self._read_or_reload(reader, offset, size, reload)
        except api.SizeMismatch:
            self._mismatched.add(self._said_mismatch(reader))
            raise
        if offset + size > len(reader.file.header):  # its stored bytes were read
            record = reader.record
            if record is not None and record.unconfirmed:
                record.unconfirmed.discard(reader.file.name)
            # A stereo read reads its two files one after the other: a file replaced
            # meanwhile may have been served as it was. A mono read's bytes are copied
            # in one step, of the version its store knows right after.
            strict = reader.file is first and first.stereo is not None
            self._one_version(reader, before if strict else None)
        return data

    async def _linked(self, reader: Reader) -> None:
        """Moves a reader of an audio file of a record not `linked` to the file made
        from the record's links, fetched now: the first read of a stat walk's record."""
        record = reader.record
        if record is None or reader.file.content is not None:
            return
        if record.linked:
            if not _made_unlinked(reader.file):
                return
            # Opened before another reader of the record had its links fetched: its
            # file is still the one made from the metadata alone.
        else:
            await self.link(record)
        file = record.files.get(reader.file.name)
        if file is None:
            where = f"{record.workspace_id}/{record.call_sid}/{reader.file.name}"
            raise FsError(errno.ENOENT, f"{where} is not offered (no download link)")
        reader.file = file

    @staticmethod
    def _said_mismatch(reader: Reader) -> str:
        record = reader.record
        where = f"{record.workspace_id}/{record.call_sid}/" if record is not None else ""
        return f"{where}{reader.file.name}.{reader.file.size}"

    async def _read_or_reload(
        self, reader: Reader, offset: int, size: int, reload: Reload
    ) -> bytes | bytearray | memoryview:
        record = reader.record
        try:
            return await self.read(reader.file, offset, size)
        except (api.ProtocolError, api.NotFound, api.RequestRejected) as exc:
            file = reader.file
            if (
                record is None
                or not record.from_disk
                or (file.stored is None and file.stereo is None)
            ):
                raise
            record = await reload(record, exc)
            fresh = record.files.get(file.name)
            if fresh is None:
                raise FsError(errno.ENOENT, f"{file.name} is no longer offered") from exc
            reader.file, reader.record = fresh, record
            return await self.read(fresh, offset, size)

    def _stored_of(self, file: PresentedFile) -> list[StoredFile]:
        stored = file.stereo.stored_files if file.stereo is not None else (file.stored,)
        return [one for one in stored if one is not None]

    def _generations(self, file: PresentedFile) -> tuple[int, ...]:
        return tuple(self._store.generation(one.key) for one in self._stored_of(file))

    def _replaced(self, key: FileKey) -> None:
        if self.inodes_of is None or self.on_stale_pages is None:
            return
        # Whether the kernel holds pages of them or not: dropping none costs nothing.
        inodes = self.inodes_of(key)
        if inodes:
            self.on_stale_pages(inodes)

    def _one_version(self, reader: Reader, before: tuple[int, ...] | None) -> None:
        """A reader is served one version of a file: once a stored file under it was
        replaced on the server after (or while) it was served bytes of it, it gets
        VersionChanged (EIO) for the rest; an open after that gets the new version."""
        now = self._generations(reader.file)
        if now == (reader.versions or now) and now == (before or now):
            reader.versions = now
            return
        where = reader.file.name
        if reader.record is not None:
            where = f"{reader.record.workspace_id}/{reader.record.call_sid}/{where}"
        raise api.VersionChanged(
            f"{where} was replaced on the server while open: this reader gets no more "
            "of it (an open from now on reads the new version)",
            validator=None,
        )

    def prefetch(self, file: PresentedFile, offset: int, end: int) -> None:
        """Starts fetching [offset, end) of a presented file ahead of its reader. A
        download that finds its link expired has the link renewed and is started again,
        once, still ahead of the reader: a walk after a remount finds every link kept on
        disk expired, and fetching ahead must not wait for the reader to renew them."""
        launched = self._start_prefetch(file, offset, end)
        if launched and self._nursery is not None:
            self._nursery.start_soon(self._renewed_prefetch, file, offset, end, launched)

    def _start_prefetch(self, file: PresentedFile, offset: int, end: int) -> list[Fetch]:
        launched: list[Fetch] = []
        if file.stereo is not None:
            if any(isinstance(one.link, _Unlinked) for one in file.stereo.stored_files):
                return launched  # no links yet: its first read fetches them
            launched += file.stereo.prefetch(self._store, offset, end)
        if file.stored is not None:
            header_len = len(file.header)
            launched += self._store.prefetch(
                file.stored, max(0, offset - header_len), max(0, end - header_len)
            )
        return launched

    async def _renewed_prefetch(
        self, file: PresentedFile, offset: int, end: int, launched: list[Fetch]
    ) -> None:
        for fetch in launched:
            while not fetch.done:
                await fetch.changed.wait()
        expired = {id(f.error.link): f.error for f in launched if isinstance(f.error, LinkExpired)}
        if not expired:
            return
        try:
            for exc in expired.values():
                assert isinstance(exc.link, _Link)
                await self.renew(exc.link, exc.stale)
        except (api.AmigoError, FsError) as exc:
            # Fetched ahead of need: whoever reads it later gets the error then.
            log.debug("%s: renewing a link for a prefetch failed: %s", file.name, exc)
            return
        self._start_prefetch(file, offset, end)

    def closed(self, file: PresentedFile) -> None:
        """The file's last reader has closed it."""
        if file.stored is not None:
            self._store.forget(file.stored.key)
        if file.stereo is not None:
            # Only the blocks kept in memory (no room on disk) go: those of a mono
            # file still open are fetched again if needed, at worst.
            for stored in file.stereo.stored_files:
                self._store.forget(stored.key)

    async def renew(self, link: _Link, stale: DownloadPath) -> DownloadPath:
        workspace_id, call_sid, name = link.key
        if link.path != stale:
            return link.path  # another reader renewed it meanwhile
        urls = await self._url_refresh.run(
            (workspace_id, call_sid),
            lambda: self.access.checked(
                workspace_id, lambda: self._client.recording_urls(workspace_id, call_sid)
            ),
        )
        log.info("%s/%s: download links renewed", workspace_id, call_sid)
        for other, path in ((INBOUND, urls.inbound), (OUTBOUND, urls.outbound)):
            other_link = link.siblings.get(other)
            if path is not None and other_link is not None:
                other_link.path = path
        if link.path == stale:
            raise api.NotFound(f"{workspace_id}/{call_sid}/{name} is no longer offered", status=404)
        return link.path
