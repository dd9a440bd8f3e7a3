"""A transfer filled from the bucket holding the registry's storage: whole and checked, or failed before its last
chunk with the corrupt object moved aside."""
import hashlib

import pytest

from registry_mirror.blobs.bucket_fill import FROM_STORAGE, from_bucket
from registry_mirror.blobs.transfers import Transfer, TransferFailed
from registry_mirror.storage.verify import CHUNK
from tests.unit.support.buckets import FakeBucket

BLOB = bytes(range(256)) * (3 * CHUNK // 256 + 7)  # three chunks and a bit
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def transfer(tmp_path) -> Transfer:
    return Transfer(DIGEST, "team/app", tmp_path / "spool")


async def read_all(generator) -> list[bytes]:
    return [chunk async for chunk in generator]


async def test_a_stored_blob_comes_whole_from_the_bucket_as_a_hit_and_is_counted_good(tmp_path):
    bucket, checked, t = FakeBucket({DIGEST: BLOB}), [], transfer(tmp_path)
    chunks = await read_all(from_bucket(t, bucket, len(BLOB), checked.append))
    assert b"".join(chunks) == BLOB and len(chunks) == 4
    assert t.origin == FROM_STORAGE and t.size == len(BLOB) and (await t.head).status == 200
    assert (await t.head).headers["Docker-Content-Digest"] == DIGEST
    assert [(c.digest, c.size, c.ok, c.moved_to) for c in checked] == [(DIGEST, len(BLOB), True, None)]


async def test_a_flipped_bit_fails_before_the_last_chunk_and_moves_the_object_aside(tmp_path):
    corrupt = bytearray(BLOB)
    corrupt[CHUNK + 5] ^= 0x10
    bucket, checked, chunks = FakeBucket({DIGEST: bytes(corrupt)}), [], []
    with pytest.raises(TransferFailed, match=f"{DIGEST} in bucket 'registry' is corrupt"):
        async for chunk in from_bucket(transfer(tmp_path), bucket, len(BLOB), checked.append):
            chunks.append(chunk)
    assert len(b"".join(chunks)) < len(BLOB)  # the registry never gets the whole, so it stores nothing
    assert bucket.quarantined == [DIGEST] and bucket.blob_size(DIGEST) is None  # the next pull fetches anew
    assert not checked[0].ok and checked[0].moved_to == f"docker/registry/v2/quarantine/{DIGEST}"


async def test_an_object_shorter_than_its_size_is_not_passed_on_whole(tmp_path):
    bucket, checked = FakeBucket({DIGEST: BLOB[:-1]}), []
    with pytest.raises(TransferFailed, match="corrupt"):
        await read_all(from_bucket(transfer(tmp_path), bucket, len(BLOB), checked.append))
    assert bucket.quarantined == [DIGEST]


async def test_an_object_that_cannot_be_read_fails_the_transfer_before_its_head(tmp_path):
    t = transfer(tmp_path)
    with pytest.raises(TransferFailed, match="cannot read"):
        await read_all(from_bucket(t, FakeBucket(), len(BLOB), lambda checked: None))
    assert not t.head.done() and t.origin == ""
