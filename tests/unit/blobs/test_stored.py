"""A blob the endpoint sends from the registry's storage is hashed as it is sent, its last byte held until the
verdict: a corrupt one ends the answer short, is moved aside, and the next request fetches it from the upstream.

Before, a stored file was sent as verified, unhashed: a flipped bit went to every repository sharing the layer,
as a HIT, for ever."""
import asyncio
import hashlib
import json

import aiohttp
import pytest

from registry_mirror.blobs.access import KEY_HEADER
from registry_mirror.blobs.stored import hash_as_sent, open_stored, stored_transfer
from registry_mirror.blobs.transfers import TransferFailed
from registry_mirror.oci.registry_requests import classify
from registry_mirror.storage.quarantine import folder
from tests.unit.storage.test_verify import flip_bit
from tests.unit.support.blob_endpoint import started_server
from tests.unit.support.routes import BlobUpstream
from tests.unit.support.waits import BOUND, until

BLOB = bytes(range(256)) * 12288  # 3 MiB: several chunks
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def store(tmp_path, data: bytes = BLOB):
    storage = tmp_path / "registry"
    path = storage / "docker/registry/v2/blobs/sha256" / DIGEST[7:9] / DIGEST[7:] / "data"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return storage, path


async def get_twice(tmp_path, storage, upstream, headers=()):
    """Two GETs of the blob, one after the other: [(status, cache header, body or the client's error)], the
    served blob stats, the verifier's snapshot, and what a pull notification queued after them."""
    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, upstream, storage=str(storage))
        answers = []
        try:
            async with aiohttp.ClientSession() as client:
                for _ in range(2):
                    async with client.get(f"http://127.0.0.1:{server.port}/v2/other/repo/blobs/{DIGEST}",
                                          headers={KEY_HEADER: server.key, **dict(headers)}) as resp:
                        try:
                            body = await resp.read()
                        except aiohttp.ClientPayloadError as e:
                            body = e
                        answers.append((resp.status, resp.headers.get("X-Mirror-Cache"), body))
        finally:
            await server.close()
        queued = server.verifier.pulled([DIGEST])
        await server.verifier.close()
        return answers, server.stats.snapshot([], [])["served"]["blob"], server.verifier.snapshot(), queued


async def test_a_good_stored_blob_is_served_and_counted_verified(tmp_path):
    storage, path = store(tmp_path)
    upstream = BlobUpstream(BLOB)
    answers, served, checks, queued = await get_twice(tmp_path, storage, upstream)
    assert answers == [(200, "HIT", BLOB)] * 2 and upstream.gets == 0
    assert served["hit"]["requests"] == 2 and "error" not in served
    assert (checks["verified"], checks["verified_bytes"], checks["mismatches"]) == (2, 2 * len(BLOB), 0)
    assert queued == 0  # the registry's pull notification: verified moments ago, not read again
    assert path.exists()


@pytest.mark.parametrize("damage", ["flipped bit", "emptied"])
async def test_a_corrupt_stored_blob_ends_short_moves_aside_and_the_next_request_fetches_it(tmp_path, damage):
    storage, path = store(tmp_path)
    if damage == "flipped bit":
        flip_bit(path, len(BLOB) // 2)
    else:
        path.write_bytes(b"")  # a torn file: no last byte to hold back, so the headers wait for the verdict
    upstream = BlobUpstream(BLOB)
    answers, served, checks, _ = await get_twice(tmp_path, storage, upstream)
    (status, cache, body), good = answers
    if damage == "flipped bit":
        assert (status, cache) == (200, "HIT") and isinstance(body, aiohttp.ClientPayloadError)
    else:
        assert status == 503 and "is corrupt" in json.loads(body)["errors"][0]["message"]
    assert good == (200, "MISS", BLOB) and upstream.gets == 1
    assert served["error"]["requests"] == 1 and served["miss"]["requests"] == 1 and "hit" not in served
    assert (checks["mismatches"], checks["quarantined"], checks["verified"]) == (1, 1, 0)
    assert checks["last_mismatch"]["by"] == "served" and checks["last_mismatch"]["digest"] == DIGEST
    assert not path.exists() and len(list(folder(storage).iterdir())) == 1


async def test_a_range_of_a_corrupt_stored_blob_is_never_complete(tmp_path):
    storage, path = store(tmp_path)
    flip_bit(path, len(BLOB) - 1)  # outside the range asked for: the verdict is the whole file's
    answers, _, checks, _ = await get_twice(tmp_path, storage, BlobUpstream(BLOB), {"Range": "bytes=0-99"})
    (status, _, body), (again, _, part) = answers
    assert status == 206 and isinstance(body, aiohttp.ClientPayloadError)
    assert (again, part) == (206, BLOB[:100]) and checks["quarantined"] == 1


async def test_the_last_byte_is_held_until_the_verdict(tmp_path):
    """The whole file is hashed, its bytes readable but the last, until the verdict is given."""
    storage, _ = store(tmp_path)
    req = classify("GET", f"/v2/other/repo/blobs/{DIGEST}")

    async with asyncio.timeout(BOUND):
        with open_stored(storage, DIGEST) as stored:
            transfer = stored_transfer(req, stored)
            spans = []

            async def read():
                async for span in transfer.spans(0, len(BLOB) - 1):
                    spans.append(span)
            reader = asyncio.create_task(read())
            found = await hash_as_sent(transfer, stored)
            await until(lambda: sum(count for _, count in spans) == len(BLOB) - 1, "every byte but the last read")
            before, done = sum(count for _, count in spans), reader.done()
            transfer.verified = True
            transfer.notify()
            await reader
            after, written = sum(count for _, count in spans), transfer.written
    assert found == DIGEST and written == len(BLOB)
    assert (before, done) == (len(BLOB) - 1, False) and after == len(BLOB)


async def test_a_stored_transfer_failing_its_check_fails_its_readers_and_keeps_no_file_of_theirs(tmp_path):
    storage, path = store(tmp_path)
    flip_bit(path, 0)
    req = classify("GET", f"/v2/other/repo/blobs/{DIGEST}")

    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, BlobUpstream(BLOB), storage=str(storage))
        try:
            with open_stored(storage, DIGEST) as stored:
                transfer = stored_transfer(req, stored)
                await server.verifier.check_served(transfer, stored)
                with pytest.raises(TransferFailed, match="moved aside"):
                    await transfer.verdict()
        finally:
            await server.close()
    assert not path.exists() and len(list(folder(storage).iterdir())) == 1
