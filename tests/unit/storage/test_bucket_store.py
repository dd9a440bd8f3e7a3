"""What is a bucket's own under the storage seam (the contract both backends keep: test_store.py): a prefix keeps
stores apart, requests are counted by kind, and a delete asks first (S3 deletes a missing key
without a word). On a real S3-compatible store (SeaweedFS)."""
import uuid

import pytest

from registry_mirror.storage import bucket_store
from registry_mirror.storage.bucket_store import BucketStore

pytestmark = pytest.mark.bucket


@pytest.fixture
def prefix() -> str:
    return f"tests/{uuid.uuid4().hex}"


def test_a_prefix_is_a_folder_of_its_own(s3, prefix):
    mine = BucketStore(s3.client, s3.bucket, f"{prefix}/x")
    neighbour = BucketStore(s3.client, s3.bucket, f"{prefix}/xy")
    mine.write("a", b"1")
    neighbour.write("a", b"2")
    assert [entry.path for entry in mine.files("")] == ["a"] and mine.read("a", 10) == b"1"
    assert mine.delete_folder("") == 1 and neighbour.read("a", 10) == b"2"
    assert mine.name == f"bucket {s3.bucket}/{prefix}/x/"


def test_slashes_around_a_prefix_make_no_other_keys(s3, prefix):
    BucketStore(s3.client, s3.bucket, f"/{prefix}/").write("a/b", b"1")
    assert BucketStore(s3.client, s3.bucket, prefix).read("a/b", 10) == b"1"
    assert BucketStore(s3.client, s3.bucket, "").read(f"{prefix}/a/b", 10) == b"1"  # "": the bucket's top


def test_requests_are_counted_by_kind(s3, prefix):
    store = BucketStore(s3.client, s3.bucket, prefix)
    for n in range(3):
        store.write(f"f{n}", b"x")
    store.read_many([f"f{n}" for n in range(3)], 10)  # at once, each counted
    assert store.delete("missing") is False  # asked first: no DELETE sent
    assert store.copy("f0", "g0") is True
    assert store.requests == {"put": 3, "get": 3, "head": 1, "copy": 1}


def test_a_folder_is_deleted_in_batches(s3, prefix, monkeypatch):
    monkeypatch.setattr(bucket_store, "DELETE_BATCH", 2)
    store = BucketStore(s3.client, s3.bucket, prefix)
    for n in range(5):
        store.write(f"folder/{n}", b"x")
    assert store.delete_folder("folder") == 5 and list(store.files("")) == []
    assert store.requests["delete"] == 3 and store.requests["list"] == 2  # the listing, and the one just now
