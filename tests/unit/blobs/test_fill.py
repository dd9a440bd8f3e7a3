"""The fill policy: a transfer's bytes from the upstream (one replica), or from the replica that claimed the digest
first (scale-out); and what a verified transfer tells every route's cached HEADs and the expiry's cap."""
import hashlib
import logging
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from registry_mirror.blobs.access import KEY_PARAM
from registry_mirror.blobs.coalesce import BlobCoalescer
from registry_mirror.blobs.fill import BlobFill
from registry_mirror.blobs.peers import Peer
from registry_mirror.blobs.spool_writer import write_verified
from registry_mirror.blobs.transfers import Transfer, TransferFailed
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.stats.counters import Stats
from tests.unit.support.buckets import FakeBucket
from tests.unit.support.local_http import serve
from tests.unit.support.routes import BlobUpstream, FakeRoute, FakeRouter
from tests.unit.support.waits import until

BLOB = bytes(range(256)) * 4096  # 1 MiB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def route(upstream=None) -> FakeRoute:
    return FakeRoute(upstream or BlobUpstream(BLOB, chunk=len(BLOB)), blob_heads=BlobHeads(3600, lambda: 0.0))


def new_transfer(tmp_path, blob_route) -> Transfer:
    path = tmp_path / "blob-spool"
    path.write_bytes(b"")
    return Transfer(DIGEST, "team/app", path, blob_route)


class Peers:
    """The replicas' coordination: `holder` already fetches every digest (None: this replica leads)."""

    def __init__(self, holder: Peer | None):
        self.holder, self.led, self.closed = holder, [], False

    async def claim(self, digest):
        return self.holder

    @asynccontextmanager
    async def leading(self, digest):
        self.led.append((digest, "started"))
        yield
        self.led.append((digest, "succeeded"))

    async def close(self):
        self.closed = True


async def test_a_single_replica_fills_from_the_upstream(tmp_path):
    stats, upstream = Stats(), BlobUpstream(BLOB, chunk=len(BLOB))
    fill = BlobFill(FakeRouter(routes={}), stats)
    transfer = new_transfer(tmp_path, route(upstream))
    await write_verified(transfer, fill.fill(transfer))
    assert transfer.verified and transfer.path.read_bytes() == BLOB and upstream.gets == 1
    assert (await transfer.head).status == 200 and transfer.origin == ""
    assert stats.snapshot()["bytes"]["fetched_from_upstream"] == len(BLOB)
    await fill.close()


async def test_a_transfer_without_a_route_is_refused_naming_its_digest(tmp_path):
    fill = BlobFill(FakeRouter(routes={}), Stats())
    with pytest.raises(ValueError, match=DIGEST):
        fill.fill(new_transfer(tmp_path, None))


async def test_the_replica_that_claims_a_digest_fetches_it_while_holding_the_claim(tmp_path):
    stats, upstream, peers = Stats(), BlobUpstream(BLOB, chunk=len(BLOB)), Peers(holder=None)
    fill = BlobFill(FakeRouter(routes={}), stats)
    fill.share_with_peers(peers)
    try:
        transfer = new_transfer(tmp_path, route(upstream))
        await write_verified(transfer, fill.fill(transfer))
    finally:
        await fill.close()
    assert transfer.verified and transfer.path.read_bytes() == BLOB and upstream.gets == 1
    assert peers.led == [(DIGEST, "started"), (DIGEST, "succeeded")]
    assert peers.closed


async def test_a_digest_another_replica_claimed_is_read_from_it_not_the_upstream(tmp_path):
    asked = []

    async def replica(request: web.Request) -> web.Response:
        asked.append((request.path, request.query.get(KEY_PARAM)))
        return web.Response(body=BLOB, content_type="application/octet-stream")
    runner, port = await serve(replica)
    stats, upstream = Stats(), BlobUpstream(BLOB, chunk=len(BLOB))
    fill = BlobFill(FakeRouter(routes={}), stats)
    fill.share_with_peers(Peers(holder=Peer(f"http://127.0.0.1:{port}", "peer-key")))
    try:
        transfer = new_transfer(tmp_path, route(upstream))
        await write_verified(transfer, fill.fill(transfer))
    finally:
        await fill.close()
        await runner.cleanup()
    assert transfer.verified and transfer.path.read_bytes() == BLOB
    assert upstream.gets == 0 and transfer.origin == f"http://127.0.0.1:{port}"
    assert asked == [(f"/v2/team/app/blobs/{DIGEST}", "peer-key")]
    counted = stats.snapshot()["bytes"]
    assert (counted["from_other_replicas"], counted["fetched_from_upstream"]) == (len(BLOB), 0)


async def test_a_verified_transfer_drops_every_routes_cached_heads_of_another_size(tmp_path, caplog):
    """Sizes are per digest: a HEAD cached under any repository, in any route, that disagrees goes."""
    stats, told = Stats(), []
    first, second = route(), route()
    first.blob_heads.put("team/app", DIGEST, {"Content-Length": str(len(BLOB))})
    first.blob_heads.put("team/other", DIGEST, {"Content-Length": "17"})
    second.blob_heads.put("mirror/app", DIGEST, {"Content-Length": str(len(BLOB) + 1)})
    fill = BlobFill(FakeRouter(routes={"upstream": first, "routes[0]": second}), stats)
    fill.on_stored = told.append
    transfer = new_transfer(tmp_path, first)
    transfer.written, transfer.verified = len(BLOB), True
    with caplog.at_level(logging.WARNING, "registry_mirror"):
        fill.verified(transfer)
    assert first.blob_heads.size("team/app", DIGEST) == len(BLOB)  # it said the truth: kept
    assert first.blob_heads.get("team/other", DIGEST) is None and second.blob_heads.get("mirror/app", DIGEST) is None
    assert stats.snapshot()["integrity"]["cache_dropped_inconsistent"] == 2
    assert "dropped 2 cached HEAD(s)" in caplog.text
    assert told == [len(BLOB)]  # the expiry's cap counts the bytes about to be stored


async def test_a_verified_transfer_that_contradicts_nothing_only_counts_its_bytes(tmp_path, caplog):
    stats, told = Stats(), []
    fill = BlobFill(FakeRouter(routes={"upstream": route()}), stats)
    fill.on_stored = told.append
    transfer = new_transfer(tmp_path, None)
    transfer.written, transfer.verified = 1234, True
    with caplog.at_level(logging.WARNING, "registry_mirror"):
        fill.verified(transfer)
    assert told == [1234] and stats.snapshot()["integrity"]["cache_dropped_inconsistent"] == 0
    assert caplog.text == ""


async def test_a_blob_the_bucket_holds_is_read_from_it_never_the_upstream(tmp_path):
    stats, upstream, checked = Stats(), BlobUpstream(BLOB, chunk=len(BLOB)), []
    fill = BlobFill(FakeRouter(routes={}), stats, FakeBucket({DIGEST: BLOB}), checked.append)
    transfer = new_transfer(tmp_path, route(upstream))
    await write_verified(transfer, fill.fill(transfer))
    fill.verified(transfer)  # as the coalescer tells it
    assert transfer.verified and transfer.path.read_bytes() == BLOB and transfer.origin == "storage"
    assert upstream.gets == 0 and [c.ok for c in checked] == [True]


async def test_a_blob_the_bucket_lacks_is_fetched_from_the_upstream(tmp_path):
    stats, upstream = Stats(), BlobUpstream(BLOB, chunk=len(BLOB))
    bucket = FakeBucket()
    fill = BlobFill(FakeRouter(routes={}), stats, bucket)
    transfer = new_transfer(tmp_path, route(upstream))
    await write_verified(transfer, fill.fill(transfer))
    assert transfer.verified and upstream.gets == 1 and transfer.origin == "" and bucket.opened == []


async def test_a_blob_the_bucket_cannot_serve_after_its_head_comes_from_the_upstream(tmp_path):
    upstream = BlobUpstream(BLOB, chunk=len(BLOB))
    fill = BlobFill(FakeRouter(routes={}), Stats(), FakeBucket({DIGEST: BLOB}, unreadable=True))
    transfer = new_transfer(tmp_path, route(upstream))
    await write_verified(transfer, fill.fill(transfer))
    assert transfer.verified and transfer.path.read_bytes() == BLOB and upstream.gets == 1


async def test_a_bucket_read_cut_midway_is_finished_by_the_upstream_from_where_it_stopped(tmp_path, caplog):
    upstream = BlobUpstream(BLOB, chunk=len(BLOB))
    bucket = FakeBucket({DIGEST: BLOB}, fails_after=len(BLOB) // 2)
    fill = BlobFill(FakeRouter(routes={}), Stats(), bucket)
    transfer = new_transfer(tmp_path, route(upstream))
    await write_verified(transfer, fill.fill(transfer))
    assert transfer.verified and transfer.path.read_bytes() == BLOB and upstream.gets == 1
    assert bucket.quarantined == [] and "the upstream sends it from byte" in caplog.text



async def test_a_corrupt_blob_in_the_bucket_fails_its_transfer_and_goes_aside(tmp_path):
    """The check every fill gets finds it; the object is moved so that the next pull fetches a good copy."""
    corrupt = bytearray(BLOB)
    corrupt[len(BLOB) // 2] ^= 0x10
    bucket, checked, upstream = FakeBucket({DIGEST: bytes(corrupt)}), [], BlobUpstream(BLOB, chunk=len(BLOB))
    fill = BlobFill(FakeRouter(routes={}), Stats(), bucket, checked.append)
    coalescer = BlobCoalescer(fill.fill, str(tmp_path), on_verified=fill.verified, on_mismatch=fill.mismatched)
    try:
        transfer, _ = coalescer.join(DIGEST, "team/app", route(upstream))
        with pytest.raises(TransferFailed, match="do not match"):
            await transfer.verdict()
        await until(lambda: bool(bucket.quarantined), "the corrupt object moved aside")
        coalescer.leave(transfer)
    finally:
        await coalescer.close()
    assert bucket.quarantined == [DIGEST] and bucket.blob_size(DIGEST) is None and upstream.gets == 0
    assert [(c.digest, c.ok, c.moved_to) for c in checked] == [
        (DIGEST, False, f"docker/registry/v2/quarantine/{DIGEST}")]
