"""Link renewal in the records layer: the block store says a link expired
(LinkExpired), RecordingSource renews it and reads again, within bounds."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from amigofs.api import errors
from amigofs.api.models import DownloadPath, RecordingUrls
from amigofs.cache.block_format import FileKey
from amigofs.cache.store import BlockStore, StoredFile
from amigofs.fs.records import INBOUND, OUTBOUND, PresentedFile, RecordingSource, _Link
from tests.unit.block_doubles import FailingFetcher, MemoryCache

BLOCK = 64
NAME = "in.wav"
DATA = random.Random(3).randbytes(5 * BLOCK)


def path(target: str) -> DownloadPath:
    return DownloadPath("ws", "call", NAME, target)


class UrlsClient:
    """What renewing asks of the API: a call's urls, newly signed each time."""

    def __init__(self) -> None:
        self.renewals = 0

    async def recording_urls(self, workspace_id: str, call_sid: str) -> RecordingUrls:
        await trio.lowlevel.checkpoint()
        self.renewals += 1
        return RecordingUrls(call_sid, path(f"/download/{self.renewals}"), None, None)


async def read_through_records(refused: set[str]) -> tuple[bytes, UrlsClient, FailingFetcher]:
    cache = MemoryCache(BLOCK)
    fetcher = FailingFetcher({NAME: DATA}, cache)
    for target in refused:
        fetcher.refused[target] = errors.AuthError("403 expired", status=403)
    client = UrlsClient()
    async with trio.open_nursery() as nursery:
        store = BlockStore(cache, fetcher, nursery)
        source = RecordingSource(client, store)  # type: ignore[arg-type]
        links: dict[str, _Link] = {}
        link = links[INBOUND] = _Link(("ws", "call", INBOUND), path("/download/0"), links)
        stored = StoredFile(FileKey("ws", "call", NAME, len(DATA)), link)
        file = PresentedFile(INBOUND, len(DATA), stored=stored)
        try:
            got = bytes(await source.read(file, 10, 3 * BLOCK))
        except errors.AmigoError as exc:
            failed: errors.AmigoError | None = exc
        else:
            failed = None
        nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return got, client, fetcher


async def test_an_expired_link_is_renewed_once_and_the_read_answered() -> None:
    got, client, fetcher = await read_through_records({"/download/0"})
    assert got == DATA[10 : 3 * BLOCK + 10]
    # One renewal, however many of the read's fetches the old link had failed.
    assert client.renewals == 1
    assert fetcher.fetched == {(NAME, i): 1 for i in range(4)}


async def test_a_link_refused_right_after_its_renewal_is_the_servers_error() -> None:
    with pytest.raises(errors.AuthError):
        await read_through_records({"/download/0", "/download/1"})


async def test_a_link_the_server_no_longer_offers_is_not_found() -> None:
    class Gone(UrlsClient):
        async def recording_urls(self, workspace_id: str, call_sid: str) -> RecordingUrls:
            await trio.lowlevel.checkpoint()
            return RecordingUrls(call_sid, None, path("/download/x"), None)

    cache = MemoryCache(BLOCK)
    fetcher = FailingFetcher({NAME: DATA}, cache)
    fetcher.refused["/download/0"] = errors.AuthError("403 expired", status=403)
    async with trio.open_nursery() as nursery:
        source = RecordingSource(Gone(), BlockStore(cache, fetcher, nursery))  # type: ignore[arg-type]
        links: dict[str, _Link] = {}
        link = links[INBOUND] = _Link(("ws", "call", INBOUND), path("/download/0"), links)
        links[OUTBOUND] = _Link(("ws", "call", OUTBOUND), path("/download/o"), links)
        stored = StoredFile(FileKey("ws", "call", NAME, len(DATA)), link)
        with pytest.raises(errors.NotFound):
            await source.read(PresentedFile(INBOUND, len(DATA), stored=stored), 0, BLOCK)
        assert links[OUTBOUND].path == path("/download/x")  # siblings renewed together
        nursery.cancel_scope.cancel()


async def test_a_prefetch_that_finds_its_link_expired_renews_it_and_fetches_ahead() -> None:
    # A walk after a remount: every link kept on disk has expired, and nothing reads yet.
    cache = MemoryCache(BLOCK)
    fetcher = FailingFetcher({NAME: DATA}, cache)
    fetcher.refused["/download/0"] = errors.AuthError("403 expired", status=403)
    client = UrlsClient()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            store = BlockStore(cache, fetcher, nursery)
            source = RecordingSource(client, store, nursery=nursery)  # type: ignore[arg-type]
            links: dict[str, _Link] = {}
            link = links[INBOUND] = _Link(("ws", "call", INBOUND), path("/download/0"), links)
            stored = StoredFile(FileKey("ws", "call", NAME, len(DATA)), link)
            source.prefetch(PresentedFile(INBOUND, len(DATA), stored=stored), 0, len(DATA))
            await trio.testing.wait_all_tasks_blocked()  # every fetch and renewal done
            nursery.cancel_scope.cancel()
    assert client.renewals == 1
    assert link.path == path("/download/1")
    assert fetcher.fetched == {(NAME, i): 1 for i in range(5)}
