"""A big deploy's blob transfers: past `upstream.max_blob_transfers` they wait in line, never for long enough to
be taken for an upstream that is down, and one that waits too long is refused before any byte.

Before, every route's client pool had 64 connections and aiohttp's connect timeout included the wait for one:
the 65th concurrent cold blob "timed out", the route was marked down, and the registry's clients got 200s cut
short. A manifest asked meanwhile waited in the same pool."""
import asyncio
import hashlib
import json
from contextlib import asynccontextmanager
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from registry_mirror.blobs.access import KEY_HEADER
from registry_mirror.config.load import parse
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.upstream.client import Upstream
from registry_mirror.upstream.slots import SlotTimeout, TransferSlots
from tests.unit.support.blob_endpoint import started_server
from tests.unit.support.local_http import serve
from tests.unit.support.waits import BOUND, until

BLOBS = [bytes([i]) * 100_000 for i in range(5)]
DIGESTS = ["sha256:" + hashlib.sha256(b).hexdigest() for b in BLOBS]


async def test_slots_let_limit_transfers_run_and_the_rest_wait_in_line():
    async with asyncio.timeout(BOUND):
        slots, release, order = TransferSlots(2, 3600), asyncio.Event(), []

        async def transfer(i):
            async with slots.slot():
                order.append(i)
                await release.wait()
        tasks = [asyncio.create_task(transfer(i)) for i in range(3)]
        await until(lambda: (slots.active, slots.waiting) == (2, 1), "two running and one waiting")
        assert order == [0, 1]
        release.set()
        await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and (slots.active, slots.waiting, slots.timed_out) == (0, 0, 0)


async def test_a_wait_that_runs_out_is_refused_naming_the_settings():
    async with asyncio.timeout(BOUND):
        slots, release = TransferSlots(1, 0.01), asyncio.Event()

        async def holder():
            async with slots.slot():
                await release.wait()
        task = asyncio.create_task(holder())
        await until(lambda: slots.active == 1, "the first transfer running")
        with pytest.raises(SlotTimeout) as refused:
            async with slots.slot():
                pass
        release.set()
        await task
        message = str(refused.value)
    assert slots.timed_out == 1 and slots.waiting == 0
    assert "upstream.max_blob_transfers" in message and "upstream.blob_queue_timeout" in message


class HeldUpstream:
    """Answers each blob GET with its headers at once, then its body once `release` is set."""
    def __init__(self):
        self.release = asyncio.Event()
        self.gets = 0

    @asynccontextmanager
    async def open(self, method, req, headers):
        self.gets += 1
        body = BLOBS[DIGESTS.index(req.reference)]

        async def content():
            await self.release.wait()
            yield body
        yield SimpleNamespace(status=200, headers={"Content-Length": str(len(body))},
                              content=SimpleNamespace(iter_any=content)), "Basic"


async def get_blob(client, server, digest):
    async with client.get(f"http://127.0.0.1:{server.port}/v2/team/app/blobs/{digest}",
                          headers={KEY_HEADER: server.key}) as resp:
        return resp.status, await resp.read()


async def test_transfers_past_the_limit_wait_longer_than_request_timeout_and_are_served_whole(tmp_path):
    """The head's deadline (request_timeout) starts once a transfer has its slot: a wait in line is no hung
    upstream, and no answer to the registry is cut short by it."""
    upstream, slots = HeldUpstream(), TransferSlots(2, 3600)

    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, upstream, request_timeout=0.05, slots=slots)
        try:
            async with aiohttp.ClientSession() as client:
                gets = [asyncio.create_task(get_blob(client, server, d)) for d in DIGESTS]
                await until(lambda: (slots.active, slots.waiting) == (2, 3), "two transfers running, three waiting")
                await asyncio.sleep(0.2)  # the waiting ones are now well past request_timeout
                assert slots.waiting == 3
                upstream.release.set()
                answers, health = await asyncio.gather(*gets), server.router.for_request(None).health
        finally:
            await server.close()
    assert answers == [(200, b) for b in BLOBS]
    assert upstream.gets == 5 and health.consecutive_failures == 0 and not health.down


async def test_a_transfer_that_waits_too_long_is_a_503_before_any_byte_and_no_upstream_failure(tmp_path):
    upstream, slots = HeldUpstream(), TransferSlots(1, 0.05)

    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, upstream, slots=slots)
        try:
            async with aiohttp.ClientSession() as client:
                first_get = asyncio.create_task(get_blob(client, server, DIGESTS[0]))
                await until(lambda: slots.active == 1, "the first transfer running")
                status, body = await get_blob(client, server, DIGESTS[1])
                upstream.release.set()
                first, health = await first_get, server.router.for_request(None).health
        finally:
            await server.close()
    assert first == (200, BLOBS[0])
    assert status == 503 and "upstream.max_blob_transfers" in json.loads(body)["errors"][0]["message"]
    assert upstream.gets == 1 and slots.timed_out == 1
    assert health.consecutive_failures == 0 and not health.down


async def test_a_manifest_is_answered_while_more_blob_gets_than_any_pool_are_held_open(tmp_path):
    """The real client against a real server: 100 blob GETs held mid-body, a manifest and the health probe still
    answered while the blobs wait for ever: a pool wait would run out their connect timeout."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if "/blobs/" in request.path:
            out = web.StreamResponse(headers={"Content-Length": "2"})
            await out.prepare(request)
            await out.write(b"x")
            await release.wait()
            await out.write(b"y")
            return out
        return web.json_response({"schemaVersion": 2}, headers={"Docker-Content-Digest": "sha256:" + "0" * 64})

    async with asyncio.timeout(BOUND):
        runner, port = await serve(handler)
        cfg = parse({"upstream": {"url": f"http://127.0.0.1:{port}", "repository": "r", "anonymous": True,
                                  "connect_timeout": 5}}).upstream
        upstream = Upstream(cfg)
        await upstream.start()
        held = []
        try:
            async def blob(i):
                req = RegistryRequest(Kind.BLOB, "team/app", "sha256:" + f"{i:064x}")
                async with upstream.open("GET", req, {}) as (resp, _):
                    held.append(await resp.content.readexactly(1))
                    return await resp.content.read()
            blobs = [asyncio.create_task(blob(i)) for i in range(100)]
            await until(lambda: len(held) == 100, "100 blob GETs held open")
            manifest = await upstream.fetch_small("GET", RegistryRequest(Kind.MANIFEST_BY_TAG, "team/app", "1.0"), {})
            probe = await upstream.probe()
            release.set()
            status, rests = manifest.status, await asyncio.gather(*blobs)
        finally:
            release.set()
            await upstream.close()
            await runner.cleanup()
    assert (status, probe) == (200, 200) and rests == [b"y"] * 100


class SlowHeadUpstream(HeldUpstream):
    """Its headers come `delay` seconds after each GET: a slow upstream, but well within request_timeout."""
    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay
        self.release.set()

    @asynccontextmanager
    async def open(self, method, req, headers):
        await asyncio.sleep(self.delay)
        async with super().open(method, req, headers) as answer:
            yield answer


async def test_a_transfer_admitted_late_in_a_readers_wait_has_the_whole_request_timeout_for_its_head(tmp_path):
    """Waited 1.2 s in line and answered 1.2 s after its slot: 2.4 s after the reader came, more than the 2 s
    request_timeout, yet its upstream took only 1.2 of them. (Before, the reader's window was not restarted.)"""
    upstream, slots, holder = SlowHeadUpstream(1.2), TransferSlots(1, 3600), asyncio.Event()

    async def hold_the_slot():
        async with slots.slot():
            await holder.wait()

    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, upstream, request_timeout=2, slots=slots)
        held = asyncio.create_task(hold_the_slot())
        try:
            async with aiohttp.ClientSession() as client:
                await until(lambda: slots.active == 1, "the slot taken")
                get = asyncio.create_task(get_blob(client, server, DIGESTS[0]))
                await until(lambda: slots.waiting == 1, "the transfer in line")
                await asyncio.sleep(1.2)  # in line for a good part of the reader's window
                holder.set()
                answer = await get
        finally:
            await held
            await server.close()
    assert answer == (200, BLOBS[0])
