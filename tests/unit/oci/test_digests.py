"""Digests: only sha256, sha384 and sha512 in lower-case hex pass, refused with a reason before any work.

Before, `foo:<hex>` or `sha256+b64u:<hex>` passed the grammar and reached the coalescer, whose `hashlib.new` raised
outside its try: the request waited for its timeout (then 504), and a spool file and a transfer stayed behind."""
import asyncio
import hashlib
import json

import aiohttp
import pytest

from registry_mirror.blobs.access import KEY_HEADER
from registry_mirror.blobs.coalesce import BlobCoalescer
from registry_mirror.blobs.transfers import TransferFailed, UpstreamHead
from registry_mirror.oci.registry_requests import Kind, Refusal, RegistryRequest, classify, digest_problem
from tests.unit.support.blob_endpoint import started_server
from tests.unit.support.spool_reads import sent_bytes
from tests.unit.support.waits import BOUND

HEX = {n: ("0123456789abcdef" * 8)[:n] for n in (32, 40, 64, 96, 128)}


@pytest.mark.parametrize("digest", [f"sha256:{HEX[64]}", f"sha384:{HEX[96]}", f"sha512:{HEX[128]}"])
@pytest.mark.parametrize("segment,kind", [("blobs", Kind.BLOB), ("manifests", Kind.MANIFEST_BY_DIGEST)])
def test_the_three_checked_algorithms_pass(digest, segment, kind):
    assert classify("GET", f"/v2/team/app/{segment}/{digest}") == RegistryRequest(kind, "team/app", digest)


@pytest.mark.parametrize("digest,wrong,right", [
    (f"foo:{HEX[64]}", "'foo' is not supported", "sha256:<64 lower-case hex>"),
    (f"sha256+b64u:{HEX[64]}", "'sha256+b64u' is not supported", "sha512:<128 lower-case hex>"),
    (f"md5:{HEX[32]}", "'md5' is not supported", "sha384:<96 lower-case hex>"),
    (f"sha1:{HEX[40]}", "'sha1' is not supported", "sha256:<64 lower-case hex>"),
    (f"SHA256:{HEX[64]}", "'SHA256' is not supported", "sha256:<64 lower-case hex>"),
    (f"sha384:{HEX[64]}", "takes 96 hex characters, not 64", "96"),
    (f"sha512:{HEX[96]}", "takes 128 hex characters, not 96", "128"),
    (f"sha256:{HEX[64]}0", "takes 64 hex characters, not 65", "64"),
    ("sha256:" + HEX[64].upper(), "lower-case hex", "0-9, a-f"),
    ("sha256:" + "g" * 64, "lower-case hex", "0-9, a-f"),
    ("latest", "no algorithm", "sha256:<64 lower-case hex>"),
    (":" + HEX[64], "'' is not supported", "sha256:<64 lower-case hex>"),
])
def test_digest_problems_name_what_is_wrong_and_what_would_be_right(digest, wrong, right):
    problem = digest_problem(digest)
    assert wrong in problem and right in problem


@pytest.mark.parametrize("digest", [f"foo:{HEX[64]}", f"sha256+b64u:{HEX[64]}", f"sha384:{HEX[64]}",
                                    "sha512:" + HEX[128].upper()])
@pytest.mark.parametrize("segment,what", [("blobs", "blob"), ("manifests", "manifest")])
def test_other_digests_are_refused_400_digest_invalid(digest, segment, what):
    refusal = classify("GET", f"/v2/team/app/{segment}/{digest}")
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.code) == (400, "DIGEST_INVALID")
    assert refusal.message == f"invalid {what} digest {digest[:100]!r}: {digest_problem(digest)}"


async def test_a_transfer_for_a_digest_it_cannot_check_fails_cleanly(tmp_path):
    """Whatever path brings such a digest to the coalescer: its waiters fail at once, nothing stays behind."""
    fetched = []

    async def fetch(transfer):
        fetched.append(transfer.digest)
        transfer.head.set_result(UpstreamHead(200, {}))
        yield b"bytes"

    c = BlobCoalescer(fetch, str(tmp_path / "spool"))
    transfer, _ = c.join(f"foo:{HEX[64]}", "app")
    with pytest.raises(TransferFailed, match="'foo' is not one of sha256, sha384, sha512"):
        await asyncio.wait_for(asyncio.shield(transfer.head), BOUND)
    c.leave(transfer)
    transfers, spools, error = dict(c.transfers), list(c._dir.glob("blob-*")), transfer.error
    await c.close()
    assert transfers == {} and spools == [] and fetched == []
    assert "foo:" in error


async def test_the_blob_endpoint_refuses_such_a_digest_before_any_transfer(tmp_path):
    class NoUpstream:
        def open(self, *args):
            raise AssertionError("the upstream was asked for a digest the mirror cannot check")

    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, NoUpstream())
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{server.port}/v2/team/app/blobs/sha256+b64u:{HEX[64]}",
                                      headers={KEY_HEADER: server.key}) as resp:
                    status, body = resp.status, await resp.read()
            transfers, spools = dict(server.coalescer.transfers), list(server.coalescer._dir.glob("blob-*"))
        finally:
            await server.close()
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert transfers == {} and spools == []


async def test_a_sha512_blob_is_fetched_and_checked(tmp_path):
    """Not looked up in the registry's storage (its layout is read for sha256 only): from the upstream, verified."""
    data = b"layer bytes" * 1000
    digest = "sha512:" + hashlib.sha512(data).hexdigest()

    async def fetch(transfer):
        transfer.size = len(data)
        transfer.head.set_result(UpstreamHead(200, {}))
        yield data

    c = BlobCoalescer(fetch, str(tmp_path / "spool"))
    transfer, _ = c.join(digest, "app")
    await transfer.head
    got = b"".join([chunk async for chunk in sent_bytes(transfer, 0, len(data) - 1)])
    c.leave(transfer)
    await c.close()
    assert (got, transfer.verified) == (data, True)
