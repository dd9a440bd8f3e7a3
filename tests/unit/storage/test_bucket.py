"""Reaching the bucket of `mirror.s3` (what `check` does): a stand-in store on 127.0.0.1 answers HeadBucket; each
failure says what to check, and never shows the secret key."""
import asyncio

import pytest
from aiohttp import web

from devtools.ports import free_port
from registry_mirror.config.load import S3Config, Secret
from registry_mirror.storage.bucket import BucketError, reach
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
