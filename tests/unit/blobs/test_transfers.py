"""One blob transfer: which of its spool's bytes a reader may have when. The last byte asked for is held back
until the digest's verdict, so that no answer is complete before it; a failure reaches every reader and waiter."""
import asyncio
import hashlib

import pytest

import registry_mirror.blobs.transfers as transfers
from registry_mirror.blobs.transfers import Transfer, TransferFailed, UpstreamHead
from tests.unit.support.spool_reads import sent_bytes
from tests.unit.support.waits import BOUND

DATA = bytes(range(256)) * 16
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def spooled(tmp_path, data: bytes = DATA, size: int | None = len(DATA)) -> Transfer:
    """A transfer whose fill has written `data` to its spool (and not yet been checked)."""
    path = tmp_path / "blob-spool"
    path.write_bytes(data)
    transfer = Transfer(DIGEST, "team/app", path, size=size)
    transfer.head.set_result(UpstreamHead(200, {}))
    transfer.written = len(data)
    return transfer


def verify(transfer: Transfer) -> None:
    """What the spool writer and the coalescer do once the bytes matched their digest."""
    transfer.verified = True
    transfer.notify()


def end_failed(transfer: Transfer, error: str) -> None:
    """What the coalescer does at the end of a failed fill: fail the transfer, then wake its readers."""
    transfer.fail(error)
    transfer.notify()


async def test_the_last_byte_asked_for_waits_for_the_verdict(tmp_path):
    transfer = spooled(tmp_path)
    spans = transfer.spans(0, len(DATA) - 1)
    assert await anext(spans) == (0, len(DATA) - 1)  # all a reader may have: every byte but the last
    asyncio.get_running_loop().call_soon(verify, transfer)  # once the reader waits
    assert await asyncio.wait_for(anext(spans), BOUND) == (len(DATA) - 1, 1)
    assert transfer.verified
    assert [span async for span in spans] == []


async def test_a_range_short_of_the_end_also_holds_its_last_byte_back(tmp_path):
    transfer = spooled(tmp_path)
    spans = transfer.spans(100, 199)
    assert await anext(spans) == (100, 99)
    verify(transfer)
    assert [span async for span in spans] == [(199, 1)]


async def test_of_a_blob_of_unknown_size_the_newest_byte_is_held_back(tmp_path):
    transfer = spooled(tmp_path, DATA[:1000], size=None)
    spans = transfer.spans(0, len(DATA) - 1)
    assert await anext(spans) == (0, 999)  # the 1000th byte might be the last
    transfer.written = 2000
    transfer.notify()
    assert await anext(spans) == (999, 1000)
    await spans.aclose()


async def test_a_verified_transfer_gives_any_range_at_once(tmp_path):
    transfer = spooled(tmp_path)
    transfer.verified = True
    assert [span async for span in transfer.spans(10, 19)] == [(10, 10)]
    assert [span async for span in transfer.spans(0, 10 * len(DATA))] == [(0, len(DATA))]  # past the end: to it
    got = bytearray()
    async for chunk in sent_bytes(transfer, 4000, 4095):
        got += chunk
    assert got == DATA[4000:]


async def test_an_empty_range_ends_only_after_a_good_verdict(tmp_path):
    transfer = spooled(tmp_path)
    asyncio.get_running_loop().call_soon(verify, transfer)  # runs once the reader waits, not before
    assert await asyncio.wait_for(anext(transfer.spans(0, -1), "ended"), BOUND) == "ended"
    assert transfer.verified  # it ended after the verdict, not at once


async def test_an_empty_range_fails_with_a_failed_verdict(tmp_path):
    transfer = spooled(tmp_path)
    asyncio.get_running_loop().call_soon(end_failed, transfer, "upstream bytes do not match")
    with pytest.raises(TransferFailed, match="do not match"):
        await asyncio.wait_for(anext(transfer.spans(0, -1), "ended"), BOUND)


async def test_a_failure_reaches_readers_and_waiters_and_removes_the_spool(tmp_path):
    path = tmp_path / "blob-spool"
    path.write_bytes(b"")
    transfer = Transfer(DIGEST, "team/app", path)
    waiting_for_head = asyncio.ensure_future(transfer.head)
    waiting_for_verdict = asyncio.create_task(transfer.verdict())
    reading = asyncio.create_task(anext(transfer.spans(0, 99)))
    asyncio.get_running_loop().call_soon(end_failed, transfer, "upstream GET failed after 0 bytes: connection reset")
    for waiter in (waiting_for_head, waiting_for_verdict, reading):
        with pytest.raises(TransferFailed, match="connection reset"):
            await asyncio.wait_for(waiter, BOUND)
    assert transfer.finished and not transfer.verified and not path.exists()


async def test_a_failure_after_the_head_leaves_the_head_as_it_was(tmp_path):
    transfer = spooled(tmp_path)
    end_failed(transfer, "reset")
    assert (await transfer.head).status == 200  # answered already; the bytes after it fail instead
    with pytest.raises(TransferFailed, match="reset"):
        await transfer.verdict()


async def test_a_mib_wakes_readers_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(transfers, "NOTIFY_SECONDS", 3600.0)  # the timer cannot be what wakes them
    transfer = spooled(tmp_path, b"", size=None)
    asyncio.get_running_loop().call_soon(transfer.wrote, transfers.NOTIFY_BYTES)  # once the reader waits
    await asyncio.wait_for(transfer.wait_for_progress(0), BOUND)
    assert transfer.written == transfers.NOTIFY_BYTES


async def test_a_few_bytes_wake_readers_by_the_timer(tmp_path, monkeypatch):
    monkeypatch.setattr(transfers, "NOTIFY_SECONDS", 0.0)
    transfer = spooled(tmp_path, b"", size=None)
    asyncio.get_running_loop().call_soon(transfer.wrote, 10)
    await asyncio.wait_for(transfer.wait_for_progress(0), BOUND)
    assert transfer.written == 10


def admit(transfer: Transfer) -> None:
    """What the upstream fill does once it has one of the upstream's transfer slots."""
    transfer.queued = False
    transfer.notify()


@pytest.mark.parametrize("ending", ["admitted", "failed"])
async def test_a_queued_transfer_waits_until_it_is_admitted_or_finished(tmp_path, ending):
    path = tmp_path / "blob-spool"
    path.write_bytes(b"")
    transfer = Transfer(DIGEST, "team/app", path, queued=True)
    loop = asyncio.get_running_loop()
    if ending == "admitted":
        loop.call_soon(admit, transfer)
    else:
        loop.call_soon(end_failed, transfer, "the mirror is shutting down")
    await asyncio.wait_for(transfer.admitted(), BOUND)
    assert not transfer.queued if ending == "admitted" else transfer.finished  # it waited for that
    if ending == "failed":
        with pytest.raises(TransferFailed, match="shutting down"):
            await transfer.head
