"""A blob body that ends before its Content-Length is an interruption: resumed with a Range, not failed.
And a transfer that fails before its first request has opened the spool (mitmproxy starts tasks eagerly,
so it can fail inside `join`) is a clean 503, never a 500 from a missing file."""
import asyncio
import hashlib
from contextlib import asynccontextmanager
from types import SimpleNamespace

import aiohttp

from registry_mirror.blobs.access import KEY_HEADER
from tests.unit.support.blob_endpoint import started_server
from tests.unit.support.waits import BOUND

BLOB = bytes(range(256)) * 1024
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class ShortThenRange:
    """The first GET says the whole length and sends half of it, cleanly; a Range GET sends the rest."""

    def __init__(self):
        self.ranges: list[str] = []

    @asynccontextmanager
    async def open(self, method, req, headers):
        self.ranges.append(headers.get("Range", ""))
        start = int(headers["Range"][len("bytes="):-1]) if "Range" in headers else 0
        body = BLOB[start:] if start else BLOB[:len(BLOB) // 2]
        status = 206 if start else 200
        extra = {"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"} if start else {}

        async def content():
            yield body
        yield SimpleNamespace(status=status, headers={"Content-Length": str(len(BLOB) - start), **extra},
                              content=SimpleNamespace(iter_any=content)), "Basic"


class FailsAtOnce:
    """Fails before its first await: under an eager task factory the whole transfer runs inside `join`."""

    @asynccontextmanager
    async def open(self, method, req, headers):
        raise aiohttp.ClientConnectionError("connection reset")
        yield  # pragma: no cover


async def get_blob(tmp_path, upstream, eager: bool = False, resumes: int = 3, head_size=None):
    async with asyncio.timeout(BOUND):
        if eager:
            asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        server = await started_server(tmp_path, upstream, resumes=resumes, head_size=head_size)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{server.port}/v2/team/app/blobs/{DIGEST}",
                                      headers={KEY_HEADER: server.key}) as resp:
                    return resp.status, await resp.read()
        finally:
            await server.close()


async def test_a_body_short_of_its_length_is_resumed_with_a_range(tmp_path):
    upstream = ShortThenRange()
    status, body = await get_blob(tmp_path, upstream)
    assert (status, body) == (200, BLOB)
    assert upstream.ranges == ["", f"bytes={len(BLOB) // 2}-"]


async def test_a_transfer_failing_inside_join_is_a_clean_503(tmp_path):
    status, body = await get_blob(tmp_path, FailsAtOnce(), eager=True, resumes=0)
    assert status == 503 and b"connection reset" in body


class Chunked:
    """A 200 without a Content-Length (chunked through a proxy or CDN)."""

    @asynccontextmanager
    async def open(self, method, req, headers):
        async def content():
            yield BLOB
        yield SimpleNamespace(status=200, headers={}, content=SimpleNamespace(iter_any=content)), "Basic"


async def test_a_chunked_blob_is_served_with_the_size_its_head_gave(tmp_path):
    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, Chunked(), head_size=len(BLOB))
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{server.port}/v2/team/app/blobs/{DIGEST}",
                                      headers={KEY_HEADER: server.key}) as resp:
                    answer = resp.headers.get("Content-Length"), await resp.read()
        finally:
            await server.close()
    assert answer == (str(len(BLOB)), BLOB)
