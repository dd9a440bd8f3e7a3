"""Reaching the bucket of `mirror.s3` (what `check` does): a stand-in store on 127.0.0.1 answers HeadBucket; each
failure says what to check, and never shows the secret key."""
import asyncio

import pytest
from aiohttp import web

from devtools.ports import free_port
from registry_mirror.config.load import S3Config, Secret
from registry_mirror.storage.bucket import Bucket, BucketError, reach, wrong_region
from tests.unit.support.local_http import serve


def config(port: int, **changes) -> S3Config:
    return S3Config(bucket="registry", endpoint=f"http://127.0.0.1:{port}", access_key=Secret("AKTEST"),
                    secret_key=Secret("sk-never-shown"), **changes)


async def reached_with(status: int) -> tuple[list[tuple[str, str]], BucketError | None]:
    """HeadBucket against a store answering `status`: the requests it saw, and the error reach raised."""
    seen = []

    async def store(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        return web.Response(status=status)
    runner, port = await serve(store)
    try:
        await asyncio.to_thread(reach, config(port))
        return seen, None
    except BucketError as e:
        return seen, e
    finally:
        await runner.cleanup()


async def test_a_bucket_that_answers_is_reached_with_one_path_style_request():
    seen, error = await reached_with(200)
    assert error is None and seen == [("HEAD", "/registry")]


@pytest.mark.parametrize(("status", "says"), [(404, "does not exist: create it"), (403, "access denied")])
async def test_a_missing_or_forbidden_bucket_says_so(status, says):
    _, error = await reached_with(status)
    assert error is not None and says in str(error) and "'registry'" in str(error)
    assert "sk-never-shown" not in str(error)


def test_a_store_not_listening_names_the_endpoint_and_what_to_check():
    port = free_port()
    with pytest.raises(BucketError, match=rf"cannot reach the bucket 'registry' at http://127.0.0.1:{port}: .*"
                                          "check endpoint, ca_file and the network") as caught:
        reach(config(port))
    assert "sk-never-shown" not in str(caught.value)


DIGEST = "sha256:" + "ab" * 32


def test_blob_keys_follow_the_registrys_layout_under_the_prefix():
    def no_client(s3, cas, **settings):
        return None
    assert Bucket(S3Config(bucket="b", prefix="dc1"), client_factory=no_client).blob_key(DIGEST) == \
        f"dc1/docker/registry/v2/blobs/sha256/ab/{DIGEST[7:]}/data"
    assert Bucket(S3Config(bucket="b"), client_factory=no_client).blob_key(DIGEST).startswith("docker/")


async def test_a_blobs_size_is_its_objects_and_a_missing_object_is_none():
    seen = []

    async def store(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        if request.path.endswith("/data") and "ab/" in request.path:
            return web.Response(headers={"Content-Length": "1234"})
        return web.Response(status=404)
    runner, port = await serve(store)
    try:
        bucket = Bucket(config(port, prefix="dc1"))
        present = await asyncio.to_thread(bucket.blob_size, DIGEST)
        missing = await asyncio.to_thread(bucket.blob_size, "sha256:" + "cd" * 32)
    finally:
        await runner.cleanup()
    assert (present, missing) == (1234, None)
    assert seen[0] == ("HEAD", f"/registry/dc1/docker/registry/v2/blobs/sha256/ab/{DIGEST[7:]}/data")


async def test_a_corrupt_blob_is_copied_to_quarantine_then_deleted():
    seen = []

    async def store(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, request.headers.get("x-amz-copy-source", "")))
        if request.method == "PUT":
            return web.Response(body=b"<CopyObjectResult><ETag>\"e\"</ETag></CopyObjectResult>",
                                content_type="application/xml")
        return web.Response(status=204)
    runner, port = await serve(store)
    try:
        moved = await asyncio.to_thread(Bucket(config(port)).quarantine, DIGEST)
    finally:
        await runner.cleanup()
    key = f"docker/registry/v2/blobs/sha256/ab/{DIGEST[7:]}/data"
    assert moved is not None and moved.startswith("docker/registry/v2/quarantine/") and moved.endswith(DIGEST[7:])
    assert [(m, p) for m, p, _ in seen] == [("PUT", f"/registry/{moved}"), ("DELETE", f"/registry/{key}")]
    assert seen[0][2] == f"registry/{key}"


def test_on_aws_a_region_other_than_the_buckets_is_named():
    aws = S3Config(bucket="registry", region="us-east-1")
    assert wrong_region(aws, {"x-amz-bucket-region": "eu-central-1"}) == \
        "mirror.s3.region: 'us-east-1', but the bucket 'registry' is in 'eu-central-1': set region: eu-central-1"
    assert wrong_region(aws, {"x-amz-bucket-region": "us-east-1"}) is None
    assert wrong_region(S3Config(bucket="registry", endpoint="http://127.0.0.1:1"),
                        {"x-amz-bucket-region": "eu-central-1"}) is None  # another store: the registry asks it


async def test_a_store_that_only_redirects_is_a_failed_check_not_a_crash():
    async def store(request: web.Request) -> web.Response:
        return web.Response(status=301)
    runner, port = await serve(store)
    try:
        with pytest.raises(BucketError, match="bucket 'registry' at http://127.0.0.1:"):
            await asyncio.to_thread(reach, config(port))
    finally:
        await runner.cleanup()
