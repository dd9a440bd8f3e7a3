"""No blob answer is complete before the digest's verdict.

Before, an upstream answering `Content-Length: 0` for a non-empty digest got the registry a complete 200 with no
bytes: the spans loop ran zero times (first 0, last -1) and the answer was finished before the verdict. A range
ending before the blob's last byte was likewise complete before the bytes were checked."""
import asyncio
import hashlib
import json
from contextlib import asynccontextmanager
from types import SimpleNamespace

import aiohttp
import pytest

from registry_mirror.blobs.access import KEY_HEADER
from tests.unit.support.blob_endpoint import started_server
from tests.unit.support.waits import BOUND

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
BLOB = bytes(range(256)) * 1024
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class FakeUpstream:
    """Answers every blob GET 200 with `body` and a Content-Length of `length` (the body's own by default)."""
    def __init__(self, body: bytes, length: int | None = None):
        self.body, self.length = body, len(body) if length is None else length
        self.gets = 0

    @asynccontextmanager
    async def open(self, method, req, headers):
        self.gets += 1

        async def content():
            for i in range(0, len(self.body), 65536):
                yield self.body[i:i + 65536]
        yield SimpleNamespace(status=200, headers={"Content-Length": str(self.length)},
                              content=SimpleNamespace(iter_any=content)), "Basic"


async def fetch_blob(tmp_path, upstream, digest, headers=()):
    """(status, body or the client's error, the endpoint's served blob stats) for one GET of `digest`."""
    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, upstream)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{server.port}/v2/team/app/blobs/{digest}",
                                      headers={KEY_HEADER: server.key, **dict(headers)}) as resp:
                    try:
                        body = await resp.read()
                    except aiohttp.ClientPayloadError as e:
                        body = e
        finally:
            await server.close()  # after the endpoint's handler has ended, and counted its answer
        return resp.status, body, server.stats.snapshot([], [])["served"]["blob"]


async def test_an_empty_body_for_a_non_empty_digest_is_refused_not_a_complete_200(tmp_path):
    upstream = FakeUpstream(b"")
    status, body, served = await fetch_blob(tmp_path, upstream, DIGEST)
    assert status == 503
    assert "do not match" in json.loads(body)["errors"][0]["message"]
    assert served["error"]["requests"] == 1 and "miss" not in served
    assert upstream.gets == 1


async def test_the_genuine_empty_blob_is_served_complete(tmp_path):
    status, body, served = await fetch_blob(tmp_path, FakeUpstream(b""), EMPTY)
    assert (status, body) == (200, b"")
    assert served["miss"]["requests"] == 1 and "error" not in served


@pytest.mark.parametrize("length", [len(BLOB) // 2, 1], ids=["half", "one-byte"])
async def test_a_content_length_shorter_than_the_blob_ends_the_answer_short(tmp_path, length):
    status, body, served = await fetch_blob(tmp_path, FakeUpstream(BLOB[:length], length), DIGEST)
    assert status == 200 and isinstance(body, aiohttp.ClientPayloadError)
    assert served["error"]["requests"] == 1


class GatedUpstream(FakeUpstream):
    """Sends the first 64 KiB, then the rest once `release` is set."""
    def __init__(self, body: bytes):
        super().__init__(body)
        self.release = asyncio.Event()

    @asynccontextmanager
    async def open(self, method, req, headers):
        async def content():
            yield self.body[:65536]
            await self.release.wait()
            yield self.body[65536:]
        yield SimpleNamespace(status=200, headers={"Content-Length": str(len(self.body))},
                              content=SimpleNamespace(iter_any=content)), "Basic"


async def test_a_range_of_a_corrupt_blob_is_never_complete(tmp_path):
    """Its bytes are in the spool long before the rest of the blob, and the verdict, come."""
    upstream = GatedUpstream(bytes([BLOB[0] ^ 1]) + BLOB[1:])

    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, upstream)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{server.port}/v2/team/app/blobs/{DIGEST}",
                                      headers={KEY_HEADER: server.key, "Range": "bytes=0-99"}) as resp:
                    early = await resp.content.readexactly(99)  # all but the range's last byte, before the verdict
                    upstream.release.set()
                    with pytest.raises(aiohttp.ClientPayloadError):
                        await resp.read()
                    status = resp.status
        finally:
            await server.close()
    assert status == 206 and len(early) == 99


async def test_a_range_of_a_good_blob_is_served_after_its_verdict(tmp_path):
    status, body, served = await fetch_blob(tmp_path, FakeUpstream(BLOB), DIGEST, {"Range": "bytes=100-199"})
    assert (status, body) == (206, BLOB[100:200])
    assert served["miss"]["requests"] == 1
