"""Secrets a URL can carry (a signed storage URL's query, userinfo, a replica's key) never reach a log line,
the stats page or an error answer, whatever the HTTP client's exception puts in its text."""
import asyncio

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from registry_mirror.config.load import parse
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.redact import error_text, url_for_logs
from registry_mirror.upstream.client import Upstream, UpstreamError
from tests.unit.support.local_http import serve

SIGNATURE = "X-Amz-Signature=5ecret5ignature"


@pytest.mark.parametrize("url,shown", [
    ("https://s3.example.com/bucket/blob?X-Amz-Signature=abc&X-Amz-Credential=k", "https://s3.example.com/bucket/blob"),
    ("https://user:pass@art.example.com/v2/", "https://art.example.com/v2/"),
    ("http://[::1/x?sig=1", "http://[::1/x"),
    ("http://10.0.0.2:5001/v2/a/blobs/sha256:1?mirror_key=k#f", "http://10.0.0.2:5001/v2/a/blobs/sha256:1"),
    ("not a url?x=1", "not a url"),
])
def test_url_for_logs(url, shown):
    assert url_for_logs(url) == shown


PLAIN = st.text(alphabet="abcxyz0129.-_:[]/%", max_size=30)  # what may stand in an authority or a path
QUERY = st.text(alphabet="abcxyz0129=&%-_./:", min_size=1, max_size=30)


@settings(max_examples=1000, deadline=None)
@given(PLAIN, PLAIN, QUERY)
def test_no_query_or_userinfo_survives_whatever_the_url(authority, path, query):
    url = f"https://user:pa55word@{authority}/{path}?SECRET{query}"
    text = error_text(RuntimeError(f"400, message='Bad Request', url='{url}'"))
    assert "SECRET" not in text and "pa55word" not in text
    assert text.startswith("RuntimeError: 400, message='Bad Request', url='https://")


async def garbage_server() -> tuple[asyncio.Server, int]:
    """Answers every connection with a response aiohttp cannot parse."""
    async def answer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: not-a-number\r\n\r\n")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def fetch_manifest_redirected_to(location_for) -> str:
    """The UpstreamError text of a manifest GET that the upstream redirects to `location_for(storage_port)`."""
    storage, storage_port = await garbage_server()

    async def redirect(request):
        return web.Response(status=307, headers={"Location": location_for(storage_port)})
    runner, port = await serve(redirect)
    cfg = parse({"upstream": {"url": f"http://127.0.0.1:{port}", "repository": "r", "anonymous": True,
                              "retries": 0}}).upstream
    upstream = Upstream(cfg)
    await upstream.start()
    try:
        with pytest.raises(UpstreamError) as e:
            await upstream.fetch_small("GET", RegistryRequest(Kind.MANIFEST_BY_TAG, "team/app", "1.0"), {})
        return str(e.value)
    finally:
        await upstream.close()
        await runner.cleanup()
        storage.close()


async def test_a_signed_storage_url_that_answers_garbage_is_reported_without_its_signature():
    text = await fetch_manifest_redirected_to(lambda port: f"http://127.0.0.1:{port}/blob?{SIGNATURE}")
    assert "5ecret5ignature" not in text and "Signature" not in text
    assert "/blob" in text  # still says where it went


@pytest.mark.parametrize("location", ["http://[::1/x?" + SIGNATURE, "http://127.0.0.1:99999/x?" + SIGNATURE,
                                      "ftp://127.0.0.1/x?" + SIGNATURE, "//[::1/x?" + SIGNATURE])
async def test_a_redirect_that_cannot_be_followed_is_an_upstream_error(location):
    text = await fetch_manifest_redirected_to(lambda port: location)
    assert "redirected to" in text and "5ecret5ignature" not in text
