import asyncio
import builtins
import contextlib
import hashlib

import pytest

import registry_mirror.blobs.spool_writer as spool_writer
from registry_mirror.blobs.answer import parse_range
from registry_mirror.blobs.coalesce import BlobCoalescer
from registry_mirror.blobs.transfers import Transfer, TransferFailed, UpstreamHead
from tests.unit.support.clocks import Clock
from tests.unit.support.spool_reads import sent_bytes
from tests.unit.support.waits import BOUND, until

DATA = bytes(range(256)) * 4096  # 1 MiB
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("header,size,expected", [
    (None, 100, None),
    ("bytes=0-", 100, (0, 99)),
    ("bytes=10-19", 100, (10, 19)),
    ("bytes=90-200", 100, (90, 99)),
    ("bytes=-10", 100, (90, 99)),
    ("bytes=100-", 100, None),
    ("bytes=5-1", 100, None),
    ("bytes=0-1,5-6", 100, None),
    ("items=0-1", 100, None),
    ("bytes=a-b", 100, None),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


def make_fetch(data: bytes, gate: asyncio.Event | None = None, fail_after: int | None = None, calls=None):
    async def fetch(transfer):
        if calls is not None:
            calls.append(transfer.digest)
        transfer.size = len(data)
        transfer.head.set_result(UpstreamHead(200, {"Content-Type": "application/octet-stream"}))
        for i in range(0, len(data), 65536):
            if fail_after is not None and i >= fail_after:
                raise ConnectionResetError("reset by peer")
            if gate is not None and i == len(data) // 2:
                await gate.wait()  # the upstream stalls half-way until the test lets it go on
            yield data[i:i + 65536]
            await asyncio.sleep(0)
    return fetch


async def collect(coalescer, transfer, first=0, last=None):
    """What a request that joined `transfer` receives; it leaves the transfer afterwards, as requests do."""
    try:
        await transfer.head
        out = bytearray()
        async for chunk in sent_bytes(transfer, first, len(DATA) - 1 if last is None else last):
            out += chunk
        return bytes(out)
    finally:
        coalescer.leave(transfer)


async def test_overlapping_requests_share_one_fetch_and_followers_stream_early(tmp_path):
    gate, calls = asyncio.Event(), []
    c = BlobCoalescer(make_fetch(DATA, gate, calls=calls), str(tmp_path))
    leader, following = c.join(DIGEST, "app")
    assert not following
    first_bytes = asyncio.get_running_loop().create_future()

    async def follower():
        t, following = c.join(DIGEST, "other/app")
        assert following and t is leader
        await t.head
        out = bytearray()
        async for chunk in sent_bytes(t, 0, len(DATA) - 1):
            if not first_bytes.done():
                first_bytes.set_result(len(chunk))
            out += chunk
        c.leave(t)
        return bytes(out)
    tasks = [asyncio.create_task(collect(c, leader)), asyncio.create_task(follower())]
    assert await asyncio.wait_for(first_bytes, BOUND) > 0  # while the upstream is still stalled
    assert not leader.finished
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [DATA, DATA] and calls == [DIGEST] and leader.verified
    await c.close()


async def test_range_from_the_spool(tmp_path):
    c = BlobCoalescer(make_fetch(DATA), str(tmp_path))
    t, _ = c.join(DIGEST, "app")
    assert await collect(c, t, 1000, 70000) == DATA[1000:70001]
    await c.close()


async def test_wrong_bytes_are_never_handed_on_whole(tmp_path):
    corrupt = bytes([DATA[0] ^ 1]) + DATA[1:]
    c = BlobCoalescer(make_fetch(corrupt), str(tmp_path))
    t, _ = c.join(DIGEST, "app")
    got = bytearray()
    with pytest.raises(TransferFailed, match="do not match"):
        await t.head
        async for chunk in sent_bytes(t, 0, len(DATA) - 1):
            got += chunk
    c.leave(t)
    assert len(got) < len(DATA)  # the last byte is held back until the digest is checked
    assert not t.path.exists()
    t2, following = c.join(DIGEST, "app")  # a failed transfer is not reused
    assert not following and t2 is not t
    await c.close()


@pytest.mark.parametrize("sent,told", [(DATA, [(DIGEST, len(DATA))]), (DATA[:-1] + b"x", [])],
                         ids=["verified", "corrupt"])
async def test_only_a_verified_transfer_is_told_with_its_size(tmp_path, sent, told):
    heard = []
    c = BlobCoalescer(make_fetch(sent), str(tmp_path), on_verified=lambda t: heard.append((t.digest, t.written)))
    t, _ = c.join(DIGEST, "app")
    with pytest.raises(TransferFailed) if not told else contextlib.nullcontext():
        await t.verdict()
    assert heard == told
    c.leave(t)
    await c.close()


async def test_leader_failure_fails_followers_cleanly(tmp_path):
    c = BlobCoalescer(make_fetch(DATA, fail_after=300000), str(tmp_path))
    t, _ = c.join(DIGEST, "app")
    t2, following = c.join(DIGEST, "app")
    assert following
    results = await asyncio.gather(collect(c, t), collect(c, t2), return_exceptions=True)
    assert all(isinstance(r, TransferFailed) and "reset" in str(r) for r in results)
    await c.close()


async def test_finished_spools_expire_and_are_deleted(tmp_path):
    c = BlobCoalescer(make_fetch(DATA), str(tmp_path), keep_seconds=0)
    t, _ = c.join(DIGEST, "app")
    assert await collect(c, t) == DATA
    c._expire()
    assert c.transfers == {} and not t.path.exists()
    await c.close()


async def test_a_finished_spool_serves_stragglers_for_keep_seconds_on_the_coalescers_timer(tmp_path):
    clock, calls = Clock(), []
    c = BlobCoalescer(make_fetch(DATA, calls=calls), str(tmp_path), keep_seconds=10, timer=clock)
    t, _ = c.join(DIGEST, "app")
    assert await collect(c, t) == DATA
    clock.now = 9.9
    straggler, following = c.join(DIGEST, "app")
    assert following and straggler is t
    assert await collect(c, straggler) == DATA and calls == [DIGEST]  # from the spool
    clock.now = 10
    late, following = c.join(DIGEST, "app")
    assert not following and late is not t and not t.path.exists()  # expired: fetched again
    assert await collect(c, late) == DATA and calls == [DIGEST, DIGEST]
    await c.close()


def test_a_crashed_runs_spools_are_removed_at_start(tmp_path):
    (tmp_path / "blob-leftover").write_bytes(b"half a layer")
    (tmp_path / "unrelated.txt").write_text("not ours")
    BlobCoalescer(make_fetch(DATA), str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.txt"]


async def test_the_spool_is_written_without_truncating_it(tmp_path, monkeypatch):
    """ext4 flushes a file truncated to empty when it is closed (auto_da_alloc): a spool opened with "w" went
    to disk during every cold pull, just as the registry and its client fsync their copies."""
    modes = []

    def recording_open(file, mode="r", *args, **kwargs):
        modes.append(mode)
        return builtins.open(file, mode, *args, **kwargs)
    monkeypatch.setattr(spool_writer, "open", recording_open, raising=False)

    c = BlobCoalescer(make_fetch(DATA), str(tmp_path))
    t, _ = c.join(DIGEST, "app")
    assert await collect(c, t) == DATA
    await c.close()
    assert modes and not any("w" in mode for mode in modes)


async def test_a_finished_spool_is_deleted_on_time_without_further_requests(tmp_path):
    """Left until the next request, a spool outlived the kernel's dirty expiry and was written to disk in the
    middle of later (warm) pulls."""
    # keep_seconds is also the delay of the coalescer's own timer on the loop; the fake timer says when the
    # spool is due, so that it is kept for stragglers however long the test itself takes
    clock = Clock()
    c = BlobCoalescer(make_fetch(DATA), str(tmp_path), keep_seconds=0.05, timer=clock)
    t, _ = c.join(DIGEST, "app")
    assert await collect(c, t) == DATA
    assert t.path.exists()  # kept for stragglers...
    clock.now = 1.0
    await until(lambda: not c.transfers, "deleted without a further request")  # ...then by its own timer
    assert not t.path.exists()
    await c.close()


async def test_a_joined_request_keeps_a_finished_spool_until_it_leaves(tmp_path):
    """A small blob can arrive, be verified and pass its expiry before the request that started it has sent
    its headers; with no spool kept (or the spool over its bound) it was deleted under that request."""
    c = BlobCoalescer(make_fetch(DATA), str(tmp_path), keep_seconds=0, max_spool_bytes=0)
    t, _ = c.join(DIGEST, "app")
    await asyncio.gather(*c._tasks)  # the whole transfer, and the expiry at its end, run before the request goes on
    c._expire()  # and so does its timer's
    assert t.verified and t.path.exists() and c.transfers
    assert await collect(c, t) == DATA
    assert c.transfers == {} and not t.path.exists()  # gone as soon as it left
    await c.close()


async def test_closing_ends_readers_and_waiters_at_once(tmp_path):
    """Shutting down with a transfer stalled mid-way: a streaming reader and a request still waiting for the
    upstream's answer both fail now, not at their timeouts, and close() returns."""
    async def stalls(transfer):
        transfer.size = len(DATA)
        transfer.head.set_result(UpstreamHead(200, {}))
        yield DATA[:100_000]
        await asyncio.sleep(3600)
        yield DATA[100_000:]

    asked, received = [], bytearray()

    async def never_answers(transfer):
        asked.append(transfer.digest)
        await asyncio.sleep(3600)
        yield b""

    async def stream(transfer):
        try:
            await transfer.head
            async for chunk in sent_bytes(transfer, 0, len(DATA) - 1):
                received.extend(chunk)
        finally:
            c.leave(transfer)
    spool_dir = tmp_path / "spool"
    c = BlobCoalescer(lambda t: stalls(t) if t.digest == DIGEST else never_answers(t), str(spool_dir))
    streaming, _ = c.join(DIGEST, "app")
    waiting, _ = c.join("sha256:" + "0" * 64, "app")
    reader = asyncio.create_task(stream(streaming))
    head = asyncio.ensure_future(asyncio.shield(waiting.head))
    await until(lambda: len(received) == 100_000 and asked, "streaming, and waiting for the other answer")
    await asyncio.wait_for(c.close(), BOUND)
    for task in (reader, head):
        with pytest.raises(TransferFailed, match="shutting down"):
            await asyncio.wait_for(task, BOUND)
    with pytest.raises(TransferFailed, match="shutting down"):
        c.join(DIGEST, "app")
    assert not spool_dir.exists()  # every spool deleted, then the directory


@pytest.mark.parametrize("trickling", [True, False], ids=["trickling", "stalled-just-after-a-wake"])
async def test_bytes_reach_readers_within_notify_seconds_whatever_the_upstream_does(tmp_path, monkeypatch, trickling):
    """Fewer than NOTIFY_BYTES arrive, then nothing until the test releases the upstream: a caught-up reader
    gets every byte from the NOTIFY_SECONDS timer, whether the second chunk came after the first one's wake
    (trickling) or while that wake was pending, not when the upstream sends again (or its stall timeout ends it)."""
    more, release, woken = asyncio.Event(), asyncio.Event(), asyncio.Event()
    notify = Transfer.notify

    def recording_notify(transfer):
        notify(transfer)
        woken.set()
    monkeypatch.setattr(Transfer, "notify", recording_notify)

    async def fetch(transfer):
        transfer.size = len(DATA)
        transfer.head.set_result(UpstreamHead(200, {}))
        yield DATA[:1000]
        await more.wait()
        yield DATA[1000:2000]
        await release.wait()
        yield DATA[2000:]
    c = BlobCoalescer(fetch, str(tmp_path))
    t, _ = c.join(DIGEST, "app")
    await t.head
    spans = t.spans(0, len(DATA) - 1)
    assert await anext(spans) == (0, 1000)
    reader = asyncio.ensure_future(anext(spans))  # caught up: it waits for a wake
    if trickling:
        await asyncio.wait_for(woken.wait(), BOUND)  # the first chunk's timer fired; the next needs its own
    more.set()
    assert await asyncio.wait_for(reader, BOUND) == (1000, 1000)  # before the upstream sent again
    release.set()
    await spans.aclose()
    c.leave(t)
    await c.close()


async def test_a_finished_transfer_kept_for_stragglers_is_not_protected_from_the_expiry(tmp_path):
    """Protecting every spool kept for stragglers held the storage over max_bytes while a deploy ran: only a
    transfer under way, or one a request still reads, is in use."""
    c = BlobCoalescer(make_fetch(DATA), str(tmp_path), keep_seconds=3600)
    t, _ = c.join(DIGEST, "app")
    assert c.in_use() == {DIGEST}  # under way
    await asyncio.gather(*c._tasks)
    assert t.verified and c.in_use() == {DIGEST}  # verified, its request still reading
    assert await collect(c, t) == DATA
    assert DIGEST in c.transfers and c.in_use() == frozenset()  # kept for stragglers, stored: not in use
    await c.close()
