"""The blob endpoint shuts down at once while blobs are in flight (a real aiohttp client streams from it).

Before, the cancelled transfer never told its readers: the endpoint's shutdown waited for their handlers,
about two minutes, and the supervisor's SIGKILL came first, so nothing after it (tag state, redis claims)
was saved or released."""
import asyncio
import hashlib
from contextlib import asynccontextmanager
from types import SimpleNamespace

import aiohttp
import pytest

from registry_mirror.blobs.access import KEY_HEADER
from tests.unit.support.blob_endpoint import started_server
from tests.unit.support.waits import BOUND, until

BLOB = bytes(range(256)) * 8192  # 2 MiB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class StallingUpstream:
    """Sends the first 512 KiB of the blob, then nothing."""
    @asynccontextmanager
    async def open(self, method, req, headers):
        async def body():
            yield BLOB[:512 * 1024]
            await asyncio.sleep(3600)
        yield SimpleNamespace(status=200, headers={"Content-Length": str(len(BLOB))},
                              content=SimpleNamespace(iter_any=body)), "Basic"


async def test_shutdown_with_a_blob_in_flight_is_prompt(tmp_path):
    server = await started_server(tmp_path, StallingUpstream())
    received = bytearray()
    async with aiohttp.ClientSession() as client:
        async def pull():
            async with client.get(f"http://127.0.0.1:{server.port}/v2/team/app/blobs/{DIGEST}",
                                  headers={KEY_HEADER: server.key}) as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_any():
                    received.extend(chunk)
        puller = asyncio.create_task(pull())
        await until(lambda: len(received) >= 256 * 1024, "streaming the blob")
        # unfixed, the shutdown waits for the handler, which waits for its stall timeout: far past the bound
        await asyncio.wait_for(server.close(), BOUND)
        with pytest.raises(aiohttp.ClientPayloadError):  # told the body is short, not left hanging
            await asyncio.wait_for(puller, BOUND)
    assert len(received) < len(BLOB)
    assert not (tmp_path / "spool").exists()


async def test_a_transfer_that_fails_mid_blob_ends_the_body_short_with_one_warning(tmp_path, caplog):
    class FailingUpstream:
        @asynccontextmanager
        async def open(self, method, req, headers):
            async def body():
                yield BLOB[:512 * 1024]
                raise aiohttp.ClientPayloadError("connection reset by peer")
            yield SimpleNamespace(status=200, headers={"Content-Length": str(len(BLOB))},
                                  content=SimpleNamespace(iter_any=body)), "Basic"

    server = await started_server(tmp_path, FailingUpstream())
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{server.port}/v2/team/app/blobs/{DIGEST}",
                                  headers={KEY_HEADER: server.key}) as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
    finally:
        await server.close()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [], [r.getMessage() for r in errors]
    assert any("ended after" in r.getMessage() and "reset by peer" in r.getMessage() for r in caplog.records)


async def test_a_blob_in_the_mirrors_storage_is_served_from_it_with_ranges(tmp_path):
    storage = tmp_path / "registry"
    data = storage / "docker/registry/v2/blobs/sha256" / DIGEST[7:9] / DIGEST[7:] / "data"
    data.parent.mkdir(parents=True)
    data.write_bytes(BLOB)

    class NoUpstream:
        @asynccontextmanager
        async def open(self, method, req, headers):
            raise AssertionError("the upstream was asked for a blob the mirror stores")
            yield

    server = await started_server(tmp_path, NoUpstream(), storage=str(storage))
    url = f"http://127.0.0.1:{server.port}/v2/other/repo/blobs/{DIGEST}"
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(url, headers={KEY_HEADER: server.key}) as resp:
                whole = (resp.status, resp.headers["Docker-Content-Digest"], resp.headers["X-Mirror-Cache"],
                         await resp.read())
            async with client.get(url, headers={KEY_HEADER: server.key, "Range": "bytes=100-199"}) as resp:
                part = (resp.status, resp.headers["Content-Range"], await resp.read())
    finally:
        await server.close()
    served = server.stats.snapshot([], [])["served"]["blob"]
    assert whole == (200, DIGEST, "HIT", BLOB)
    assert part == (206, f"bytes 100-199/{len(BLOB)}", BLOB[100:200])
    assert served["hit"]["requests"] == 2
