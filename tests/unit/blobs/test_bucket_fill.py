"""A transfer filled from the bucket holding the registry's storage: its bytes as read, or a read failure the
upstream can finish (blobs/fill.py); a corrupt object is found by the check every fill gets (tests/unit/blobs/
test_fill.py)."""
import hashlib

import pytest

from registry_mirror.blobs.bucket_fill import FROM_STORAGE, BucketReadFailed, from_bucket
from registry_mirror.blobs.transfers import Transfer
from registry_mirror.storage.verify import CHUNK
from tests.unit.support.buckets import FakeBucket

BLOB = bytes(range(256)) * (3 * CHUNK // 256 + 7)  # three chunks and a bit
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def transfer(tmp_path) -> Transfer:
    return Transfer(DIGEST, "team/app", tmp_path / "spool")


async def read_all(generator) -> list[bytes]:
    return [chunk async for chunk in generator]


async def test_a_stored_blob_comes_whole_from_the_bucket_as_the_storages(tmp_path):
    t = transfer(tmp_path)
    chunks = await read_all(from_bucket(t, FakeBucket({DIGEST: BLOB}), len(BLOB)))
    assert b"".join(chunks) == BLOB and len(chunks) == 4
    assert t.origin == FROM_STORAGE and t.size == len(BLOB) and (await t.head).status == 200
    assert (await t.head).headers["Docker-Content-Digest"] == DIGEST


async def test_a_read_cut_midway_is_a_read_failure_after_the_bytes_that_came(tmp_path):
    chunks = []
    with pytest.raises(BucketReadFailed, match=f"reading {DIGEST} from bucket 'registry' failed after"):
        async for chunk in from_bucket(transfer(tmp_path), FakeBucket({DIGEST: BLOB}, fails_after=CHUNK), len(BLOB)):
            chunks.append(chunk)
    assert b"".join(chunks) == BLOB[:CHUNK]


async def test_an_object_that_cannot_be_read_fails_the_transfer_before_its_head(tmp_path):
    t = transfer(tmp_path)
    with pytest.raises(BucketReadFailed, match="cannot read"):
        await read_all(from_bucket(t, FakeBucket(), len(BLOB)))
    assert not t.head.done() and t.origin == ""
