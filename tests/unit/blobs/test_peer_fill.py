"""A replica that fails a blob mid-way (or before its first byte) leaves the rest to the upstream.

The peer is a real aiohttp server on 127.0.0.1 that misbehaves; the upstream is a stand-in that serves the
whole blob, or the rest of it for a Range request."""
import hashlib
import logging
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
from aiohttp import web

from registry_mirror.blobs.coalesce import BlobCoalescer
from registry_mirror.blobs.fill import BlobFill
from registry_mirror.blobs.peers import Peer
from registry_mirror.stats.counters import Stats
from tests.unit.support.routes import FakeRoute, FakeRouter, upstream_config
from tests.unit.support.spool_reads import sent_bytes

BLOB = bytes(range(256)) * 12_000  # ~3 MB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
PEER_KEY = "peer-key-never-logged"


class Upstream:
    def __init__(self):
        self.asked: list[dict] = []

    @asynccontextmanager
    async def open(self, method, req, headers):
        self.asked.append(dict(headers))
        first = int(headers["Range"][len("bytes="):].rstrip("-")) if "Range" in headers else 0

        async def body():
            yield BLOB[first:]
        status = 206 if first else 200
        resp_headers = {"Content-Length": str(len(BLOB) - first)}
        if first:
            resp_headers["Content-Range"] = f"bytes {first}-{len(BLOB) - 1}/{len(BLOB)}"
        yield SimpleNamespace(status=status, headers=resp_headers, content=SimpleNamespace(iter_any=body)), "Basic"


def peer_app(behaviour: str) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        if behaviour == "refuses":
            return web.Response(status=403)
        resp = web.StreamResponse(status=200, headers={"Content-Length": str(len(BLOB))})
        await resp.prepare(request)
        if behaviour == "half":
            await resp.write(BLOB[:len(BLOB) // 2])
        request.transport.close()  # the replica dies
        return resp
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def fill_from_failing_peer(behaviour: str, tmp_path):
    runner = web.AppRunner(peer_app(behaviour))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    upstream = Upstream()
    route = FakeRoute(upstream, upstream_config(request_timeout=5, blob_stall_timeout=5, blob_resumes=3))
    stats = Stats()
    fill = BlobFill(FakeRouter(routes={}), stats)
    fill.share_with_peers(SimpleNamespace(claim=lambda digest: _peer(port), close=_nothing))
    coalescer = BlobCoalescer(fill.fill, str(tmp_path), on_verified=fill.verified)
    try:
        transfer, _ = coalescer.join(DIGEST, "team/app", route)
        collected = bytearray()
        await transfer.head
        async for chunk in sent_bytes(transfer, 0, len(BLOB) - 1):
            collected += chunk
        coalescer.leave(transfer)
        return transfer, bytes(collected), upstream.asked, stats.snapshot()["bytes"]
    finally:
        await coalescer.close()
        await fill.close()
        await runner.cleanup()


async def _nothing() -> None:
    pass


async def _peer(port: int) -> Peer:
    return Peer(f"http://127.0.0.1:{port}", PEER_KEY)


@pytest.mark.parametrize("behaviour,upstream_range", [
    ("headers-only", None),  # the head came from the replica, no byte: the upstream sends it all
    ("half", f"bytes={len(BLOB) // 2}-"),  # the upstream sends the rest
    ("refuses", None),
])
async def test_the_upstream_finishes_what_a_replica_failed(tmp_path, caplog, behaviour, upstream_range):
    caplog.set_level(logging.INFO)
    transfer, data, asked, counted = await fill_from_failing_peer(behaviour, tmp_path)
    assert transfer.verified and data == BLOB
    assert asked == [{"Range": upstream_range} if upstream_range else {}]
    from_peer = len(BLOB) // 2 if behaviour == "half" else 0
    # each byte counted once, where it came from
    assert (counted["from_other_replicas"], counted["fetched_from_upstream"]) == (from_peer, len(BLOB) - from_peer)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("registry_mirror"))
    assert "the upstream sends the rest" in ours and PEER_KEY not in ours  # (the fake peer's access log has it)
