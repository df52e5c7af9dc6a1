"""The pure parts of issue #19's "the server's length is the truth" and "one version per
read": a ranged answer's length checks, Content-Range with "*", the byte past the end."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from amigofs.api import errors
from amigofs.api.models import DownloadPath
from amigofs.api.ranges import (
    Version,
    check_content_range,
    check_end,
    fetch_range,
    if_range,
    validator_of,
)
from amigofs.api.stats import ClientStats
from amigofs.cache.block_format import FileKey, key_digest
from amigofs.cache.seams import FetchJob, Landed
from amigofs.cache.store import NO_VALIDATOR, BlockStore, StoredFile
from amigofs.cache.worker import _error_message, error_from_message
from tests.unit.block_doubles import MemoryCache, MemoryFetcher
from tests.unit.inprocess import Served, served_emulator

PATH = DownloadPath("WS", "CA", "inbound.raw", "/download/inbound.raw")
FILE = bytes(range(256)) * 40  # 10,240 bytes on the server


class Server:
    """Answers ranged GETs of FILE as a server of one framing does, noting each Range."""

    def __init__(
        self,
        framing: str,
        data: bytes = FILE,
        etag: str | None = None,
        *,
        honours_if_range: bool = True,
    ) -> None:
        self.framing = framing
        self.honours_if_range = honours_if_range
        self.data = data
        self.etag = etag
        self.ranges: list[str] = []
        self.if_ranges: list[str | None] = []

    @contextlib.asynccontextmanager
    async def get(self, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        asked = headers["Range"].removeprefix("bytes=")
        self.ranges.append(asked)
        self.if_ranges.append(headers.get("If-Range"))
        first, last = (int(n) for n in asked.split("-"))
        size = len(self.data)
        request = httpx.Request("GET", "http://x/")
        tag = {"etag": self.etag} if self.etag is not None else {}
        changed = self.honours_if_range and headers.get("If-Range") not in (None, self.etag)
        if self.framing == "chunked" or changed:  # Range ignored, no length said
            yield httpx.Response(200, headers=tag, content=_chunks(self.data), request=request)
            return
        if first >= size:
            yield httpx.Response(416, headers={"content-range": f"bytes */{size}"}, request=request)
            return
        last = min(last, size - 1)
        total = "*" if self.framing == "unknown_total" else str(size)
        body = self.data[first : last + 1]
        yield httpx.Response(
            206,
            headers={"content-range": f"bytes {first}-{last}/{total}",
                     "content-length": str(len(body)), **tag},
            content=_chunks(body),
            request=request,
        )  # fmt: skip


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), 1000):
        yield data[offset : offset + 1000]


async def fetch(
    server: Server, start: int, want: int, total: int, version: Version | None = None
) -> tuple[bytes, bool]:
    buf = bytearray(want)
    fetched = await fetch_range(
        server.get, PATH, start, memoryview(buf), total, lambda n: None, ClientStats(),
        version if version is not None else Version(),
    )  # fmt: skip
    return bytes(buf[: fetched.got]), fetched.end_unconfirmed


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "http://x/"))


def test_a_content_range_with_a_star_says_no_length_and_one_with_a_number_does() -> None:
    good = {"content-length": "10"}
    assert check_content_range(
        PATH, answer(206, **good, **{"content-range": "bytes 10-19/100"}), 10, 10, 100
    )
    assert not check_content_range(
        PATH, answer(206, **good, **{"content-range": "bytes 10-19/*"}), 10, 10, 100
    )
    with pytest.raises(errors.SizeMismatch, match="stored file has 105 bytes, metadata says 100"):
        check_content_range(
            PATH, answer(206, **good, **{"content-range": "bytes 10-19/105"}), 10, 10, 100
        )


@pytest.mark.parametrize("framing", ["length", "chunked", "unknown_total"])
async def test_the_last_range_of_a_file_longer_than_its_metadata_is_never_served_cut(
    framing: str,
) -> None:
    """Metadata 5,000 bytes short: the range that ends at the metadata's end either fails
    (a length said, or a chunked body read past that end) or is marked unconfirmed, for
    the byte past the end to be asked; check_end then fails."""
    total = len(FILE) - 5000
    server = Server(framing)
    try:
        _, unconfirmed = await fetch(server, total - 1000, 1000, total)
    except errors.SizeMismatch:
        assert framing != "unknown_total"
        return
    assert framing == "unknown_total" and unconfirmed
    with pytest.raises(errors.SizeMismatch, match="more than 5240"):
        await check_end(server.get, PATH, total, ClientStats())


@pytest.mark.parametrize("framing", ["length", "chunked", "unknown_total"])
async def test_a_file_of_the_metadatas_length_is_served_whole_in_every_framing(
    framing: str,
) -> None:
    server = Server(framing)
    total = len(FILE)
    got, unconfirmed = await fetch(server, 0, 4000, total)
    assert got == FILE[:4000] and not unconfirmed  # not the end: nothing to confirm
    got, unconfirmed = await fetch(server, total - 3000, 3000, total)
    assert got == FILE[-3000:]
    assert unconfirmed == (framing == "unknown_total")
    await check_end(server.get, PATH, total, ClientStats())  # the file ends there


@pytest.mark.parametrize("framing", ["length", "chunked", "unknown_total"])
async def test_a_size_of_0_in_the_metadata_is_checked_against_the_server(framing: str) -> None:
    with pytest.raises(errors.SizeMismatch):
        await check_end(Server(framing).get, PATH, 0, ClientStats())
    await check_end(Server(framing, b"").get, PATH, 0, ClientStats())


async def test_a_chunked_body_that_ends_before_the_metadatas_end_is_a_mismatch() -> None:
    with pytest.raises(errors.SizeMismatch, match="has 10240 bytes, metadata says 11000"):
        await fetch(Server("chunked"), 10000, 1000, 11000)


def test_the_validator_is_the_etag_else_the_last_modified_date() -> None:
    date = "Tue, 14 Nov 2023 22:13:20 GMT"
    assert validator_of(answer(206, etag='"a1"', **{"last-modified": date})) == '"a1"'
    assert validator_of(answer(206, **{"last-modified": date})) == date
    assert validator_of(answer(206)) is None


def test_if_range_carries_a_known_strong_etag_or_a_date_and_nothing_else() -> None:
    assert if_range(Version()) == {}  # not known: the first answer says
    assert if_range(Version(None, True)) == {}  # the server sends none
    assert if_range(Version('W/"a1"', True)) == {}  # RFC 9110: no weak ETag there
    assert if_range(Version('"a1"', True)) == {"If-Range": '"a1"'}
    date = "Tue, 14 Nov 2023 22:13:20 GMT"
    assert if_range(Version(date, True)) == {"If-Range": date}


async def test_the_first_answer_sets_the_version_and_later_ones_must_match_it() -> None:
    server = Server("length", etag='"v1"')
    version = Version()
    got, _ = await fetch(server, 0, 1000, len(FILE), version)
    assert got == FILE[:1000] and version == Version('"v1"', True)
    assert server.if_ranges == [None]
    got, _ = await fetch(server, 1000, 1000, len(FILE), version)
    assert got == FILE[1000:2000] and server.if_ranges[-1] == '"v1"'


@pytest.mark.parametrize("honours_if_range", [True, False])
async def test_an_answer_of_another_version_is_version_changed_before_a_byte_is_kept(
    honours_if_range: bool,
) -> None:
    """Replaced in place (same size, other bytes, a new ETag): a server that honours
    If-Range answers 200 with the new file, one that does not a 206 of it; both are
    VersionChanged naming the new validator, and nothing of the new bytes is kept."""
    new = bytes(255 - b for b in FILE)
    server = Server("length", new, etag='"v2"', honours_if_range=honours_if_range)
    buf = bytearray(1000)
    with pytest.raises(errors.VersionChanged) as raised:
        await fetch_range(
            server.get, PATH, 1000, memoryview(buf), len(FILE), lambda n: None, ClientStats(),
            Version('"v1"', True),
        )  # fmt: skip
    assert raised.value.validator == '"v2"'
    assert buf == bytearray(1000)


# --- the store over a server whose file is replaced ---------------------------------

BLOCK = 64
NAME = "a.wav"


class Link:
    path = DownloadPath("ws", "call", NAME, "/download/a")


class ReplacingFetcher(MemoryFetcher):
    """A MemoryFetcher whose file has a version: it answers as a server with ETags
    does (a job of a known version gets VersionChanged once the file was replaced), and
    `replace_after` requests later, the file is replaced in place."""

    def __init__(self, versions: list[bytes], cache: MemoryCache, replace_after: int) -> None:
        super().__init__({NAME: versions[0]}, cache)
        self.versions = versions
        self.current = 0
        self.replace_after = replace_after

    async def fetch(
        self,
        job: FetchJob,
        *,
        nursery: trio.Nursery,
        on_blocks: Callable[[list[Landed]], None] | None = None,
    ) -> None:
        served = self.current
        etag = f'"v{served}"'
        if len(self.requests) + 1 >= self.replace_after:
            self.current = min(len(self.versions) - 1, served + 1)
        if job.version.known and job.version.validator != etag:
            self.requests.append((job.filename, job.start, job.end))
            raise errors.VersionChanged("replaced", validator=etag)
        job.version.validator, job.version.known = etag, True
        self.files[NAME] = self.versions[served]
        await super().fetch(job, nursery=nursery, on_blocks=on_blocks)


def test_a_file_replaced_between_two_reads_is_served_whole_in_one_version_each_time() -> None:
    size = 8 * BLOCK
    old = bytes(i % 251 for i in range(size))
    new = bytes((i * 7) % 253 for i in range(size))
    replaced: list[FileKey] = []

    async def main() -> None:
        cache = MemoryCache(BLOCK)
        fetcher = ReplacingFetcher([old, new], cache, replace_after=1)
        async with trio.open_nursery() as nursery:
            store = BlockStore(cache, fetcher, nursery, min_chunk_bytes=BLOCK)
            store.on_replaced = replaced.append
            file = StoredFile(FileKey("ws", "call", NAME, size), Link())
            # The first GET is of the old version; the server replaces the file after it.
            assert await store.read(file, 0, BLOCK) == old[:BLOCK]
            assert store.generation(file.key) == 0
            # The next GET asks for the old version and is told of the new one: the old
            # blocks go, the new version is fetched, and the generation counts it.
            assert await store.read(file, 4 * BLOCK, 5 * BLOCK) == new[4 * BLOCK : 5 * BLOCK]
            assert store.generation(file.key) == 1
            assert replaced == [file.key]
            # Block 0 is fetched again, of the new version: never the old one beside it.
            assert await store.read(file, 0, size) == new
            nursery.cancel_scope.cancel()

    trio.run(main)


# --- the client against the emulator (in this process) --------------------------------


async def _outbound(served: Served) -> tuple[DownloadPath, int, str]:
    recording = next(iter(served.app.data.sound()))
    urls = await served.client.recording_urls(recording.workspace_id, recording.call_sid)
    assert urls.outbound is not None
    size = served.app.data.file_size(
        recording.workspace_id, recording.call_sid, recording.outbound_filename
    )
    return urls.outbound, size, recording.call_sid


async def test_the_client_asks_for_one_version_and_learns_of_a_replacement() -> None:
    async with served_emulator(workspaces=1, calls_per_workspace=2, min_duration=5.0) as served:
        client = served.client
        path, size, sid = await _outbound(served)
        version = Version()
        first = bytearray(1000)
        await client.download_into(path, 0, memoryview(first), total=size, version=version)
        assert version.known and version.validator is not None
        # Still that version: asked with If-None-Match, answered 304, no byte.
        before = client.stats.bytes_received
        assert await client.current_version(path, version.validator) == version.validator
        assert client.stats.bytes_received == before
        served.app.versions[sid] += 1  # replaced in place
        with pytest.raises(errors.VersionChanged) as raised:
            await client.download_into(
                path, 1000, memoryview(bytearray(1000)), total=size, version=version
            )
        new = raised.value.validator
        assert new is not None and new != version.validator
        assert await client.current_version(path, version.validator) == new


@pytest.mark.parametrize("framing", ["chunked", "unknown_total"])
async def test_the_client_never_returns_a_file_cut_to_a_metadata_5000_bytes_short(
    framing: str,
) -> None:
    async with served_emulator(
        workspaces=1, calls_per_workspace=2, min_duration=5.0, download_framing=framing
    ) as served:
        path, size, _ = await _outbound(served)
        claimed = size - 5000
        with pytest.raises(errors.SizeMismatch):
            await served.client.read_range(path, 0, claimed, total=claimed)
        # The whole file at its real length is served whole.
        data = await served.client.read_range(path, 0, size, total=size)
        assert len(data) == size
        with pytest.raises(errors.SizeMismatch):  # a 0 in the metadata is checked
            await served.client.check_length(path, 0)


def test_a_blocks_digest_holds_its_version_and_none_is_the_layout_before_versions() -> None:
    plain = FileKey("ws", "call", NAME, 100)
    assert plain.digest == key_digest(plain.relative_dir)  # blocks of older mounts still fit
    one = FileKey("ws", "call", NAME, 100, '"v1"')
    two = FileKey("ws", "call", NAME, 100, '"v2"')
    assert one.relative_dir == two.relative_dir == plain.relative_dir  # one place on disk
    assert len({plain.digest, one.digest, two.digest}) == 3  # three versions told apart


def test_the_fetch_worker_hands_a_replacement_back_with_its_new_validator() -> None:
    sent = errors.VersionChanged("replaced", validator='"v2"')
    back = error_from_message(json.loads(json.dumps(_error_message(7, sent))))
    assert isinstance(back, errors.VersionChanged) and back.validator == '"v2"'


@pytest.mark.parametrize("remembered", [None, '"v1"', NO_VALIDATOR])
def test_blocks_an_earlier_mount_left_wait_for_the_files_version_unless_the_server_has_none(
    remembered: str | None,
) -> None:
    """Blocks found on disk are served once the file's version now is known: one request
    (a job for no bytes) asks it, whether or not a version is remembered (it is sent as
    a hint); of a server that sends none, nothing can be asked and none is."""
    data = bytes(i % 249 for i in range(4 * BLOCK))

    async def main() -> None:
        cache = MemoryCache(BLOCK)
        fetcher = MemoryFetcher({NAME: data}, cache)
        file = StoredFile(FileKey("ws", "call", NAME, len(data)), Link(), remembered=remembered)
        for offset in range(0, len(data), BLOCK):  # as an earlier mount left them
            index, length, crc = cache.write_block(
                file.key.relative_dir, offset // BLOCK, data[offset : offset + BLOCK]
            )
            cache.added(file.key, index, length, crc)
        async with trio.open_nursery() as nursery:
            store = BlockStore(cache, fetcher, nursery)
            assert await store.read(file, 0, len(data)) == data
            asked = [r for r in fetcher.requests if r[1] == r[2]]
            assert len(asked) == (0 if remembered == NO_VALIDATOR else 1)
            assert [r for r in fetcher.requests if r[1] != r[2]] == []  # no byte again
            nursery.cancel_scope.cancel()

    trio.run(main)
