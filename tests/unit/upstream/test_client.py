"""The HTTP client toward the upstream, against real servers on 127.0.0.1: what each request carries, one retry
on a 401, redirects (credentials stay with the upstream's own origin), and small bodies read whole under a cap."""
import asyncio
import json
import socket

import pytest
from aiohttp import web

from registry_mirror.config.load import parse
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.auth import basic_header
from registry_mirror.upstream.client import MAX_REDIRECTS, MAX_SMALL_BODY, Upstream, UpstreamError
from tests.unit.support.local_http import serve

IMAGE = "application/vnd.oci.image.manifest.v1+json"
PREFIX = "/artifactory/api/docker/docker-local"
BASIC = basic_header("mirror", "s3cret")
TAG = RegistryRequest(Kind.MANIFEST_BY_TAG, "app", "1.0")


class Server:
    """A real upstream on 127.0.0.1: `answer(request)` gives each response; every request is recorded."""

    def __init__(self, answer):
        self.answer, self.seen = answer, []

    async def __aenter__(self):
        async def handler(request: web.Request) -> web.StreamResponse:
            self.seen.append(request)
            return await self.answer(request)
        self.runner, self.port = await serve(handler)
        self.origin = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


async def started(origin: str, stats: Stats | None = None, **upstream) -> Upstream:
    cfg = parse({"upstream": {"url": origin, "repository": "docker-local", "username": "mirror",
                              "password": "s3cret", "retries": 0, **upstream}}).upstream
    client = Upstream(cfg, stats)
    await client.start()
    return client


async def test_a_request_carries_the_credential_and_only_the_headers_worth_passing_on():
    async def manifest(request):
        return web.Response(body=b'{"schemaVersion": 2}', content_type=IMAGE)
    async with Server(manifest) as up:
        client = await started(up.origin, library="add")
        try:
            resp = await client.fetch_small("GET", TAG, {"Accept": IMAGE, "Authorization": "Bearer the-registrys",
                                                         "Cookie": "c=1", "X-Forwarded-For": "10.0.0.1"})
        finally:
            await client.close()
    (seen,) = up.seen
    assert seen.path_qs == f"{PREFIX}/v2/library/app/manifests/1.0"  # under the name the upstream knows
    assert client.url_for(TAG) == up.origin + seen.path_qs
    assert seen.headers["Authorization"] == BASIC and seen.headers["Accept"] == IMAGE
    assert seen.headers["User-Agent"] == "artifactory-mirror"
    assert not {"Cookie", "X-Forwarded-For", "Accept-Encoding"} & set(seen.headers)
    assert (resp.status, resp.body, resp.headers["Content-Type"], resp.authorized) == (
        200, b'{"schemaVersion": 2}', IMAGE, "Basic")


async def test_a_head_reads_no_body():
    async def head(request):
        return web.Response(headers={"Content-Length": "524", "Docker-Content-Digest": "sha256:" + "a" * 64})
    async with Server(head) as up:
        client = await started(up.origin)
        try:
            resp = await client.fetch_small("HEAD", RegistryRequest(Kind.BLOB, "app", "sha256:" + "a" * 64), {})
        finally:
            await client.close()
    assert up.seen[0].method == "HEAD"
    assert (resp.status, resp.body, resp.headers["Content-Length"]) == (200, b"", "524")


async def test_a_bearer_challenge_is_answered_with_a_token_and_the_request_sent_once_more():
    async def registry(request):
        if request.path == "/token":
            return web.json_response({"token": "tok1", "expires_in": 300})
        if request.headers.get("Authorization") == "Bearer tok1":
            return web.Response(body=b"{}", content_type=IMAGE)
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="http://127.0.0.1:{request.url.port}/token",service="art"'})
    stats = Stats()
    async with Server(registry) as up:
        client = await started(up.origin, stats)
        try:
            resp = await client.fetch_small("GET", TAG, {})
        finally:
            await client.close()
    assert (resp.status, resp.authorized) == (200, "Bearer")
    assert [(r.path, r.headers.get("Authorization")) for r in up.seen] == [
        (f"{PREFIX}/v2/app/manifests/1.0", BASIC), ("/token", BASIC), (f"{PREFIX}/v2/app/manifests/1.0", "Bearer tok1")]
    assert dict(up.seen[1].query) == {"scope": "repository:app:pull", "service": "art"}
    assert stats.upstream_requests[("token", "200")] == 1


async def test_a_401_after_the_one_retry_is_the_answer():
    async def refusing(request):
        if request.path == "/token":
            return web.json_response({"token": "revoked-at-once"})
        return web.Response(status=401, body=b'{"errors":[{"code":"UNAUTHORIZED"}]}', headers={
            "WWW-Authenticate": f'Bearer realm="http://127.0.0.1:{request.url.port}/token"'})
    async with Server(refusing) as up:
        client = await started(up.origin)
        try:
            resp = await client.fetch_small("GET", TAG, {})
        finally:
            await client.close()
    assert resp.status == 401 and b"UNAUTHORIZED" in resp.body
    assert [r.path for r in up.seen].count(f"{PREFIX}/v2/app/manifests/1.0") == 2


async def test_a_redirect_elsewhere_is_followed_without_the_upstreams_credential():
    async def storage(request):
        return web.Response(body=b"signed bytes")
    async with Server(storage) as cloud:
        async def redirecting(request):
            if request.path == "/moved":  # same origin: the credential goes along
                return web.Response(status=302, headers={"Location": f"{cloud.origin}/bucket/blob?X-Sig=abc"})
            return web.Response(status=307, headers={"Location": "/moved"})
        async with Server(redirecting) as up:
            client = await started(up.origin)
            try:
                resp = await client.fetch_small("GET", TAG, {"Accept": IMAGE})
            finally:
                await client.close()
    assert resp.status == 200 and resp.body == b"signed bytes"
    assert [(r.path, r.headers.get("Authorization")) for r in up.seen] == [
        (f"{PREFIX}/v2/app/manifests/1.0", BASIC), ("/moved", BASIC)]
    (signed,) = cloud.seen
    assert signed.path_qs == "/bucket/blob?X-Sig=abc" and "Authorization" not in signed.headers
    assert signed.headers["Accept"] == IMAGE


async def test_redirects_past_the_limit_are_an_error():
    async def loop(request):
        return web.Response(status=302, headers={"Location": f"/again/{len(up.seen)}"})
    async with Server(loop) as up:
        client = await started(up.origin)
        try:
            with pytest.raises(UpstreamError, match=f"more than {MAX_REDIRECTS} times"):
                await client.fetch_small("GET", TAG, {})
        finally:
            await client.close()
    assert len(up.seen) == MAX_REDIRECTS + 1


@pytest.mark.parametrize("location,error", [
    ("ftp://127.0.0.1/blob", "non-http URL"),
    ("http://127.0.0.1:99999/blob", "invalid URL"),
    ("file:///etc/passwd", "non-http URL"),
])
async def test_a_redirect_that_cannot_be_followed_is_an_upstream_error(location, error):
    async def redirecting(request):
        return web.Response(status=301, headers={"Location": location})
    async with Server(redirecting) as up:
        client = await started(up.origin)
        try:
            with pytest.raises(UpstreamError, match=error):
                await client.fetch_small("GET", TAG, {})
        finally:
            await client.close()


async def test_a_body_over_the_cap_is_an_error_and_counted():
    async def endless(request):
        out = web.StreamResponse(headers={"Content-Type": IMAGE})  # chunked: no length to refuse it by
        out.enable_chunked_encoding()
        await out.prepare(request)
        chunk = b"x" * (1024 * 1024)
        try:
            for _ in range(MAX_SMALL_BODY // len(chunk) + 1):
                await out.write(chunk)
        except (ConnectionError, OSError):
            pass  # the client stopped reading at the cap
        return out
    stats = Stats()
    async with Server(endless) as up:
        client = await started(up.origin, stats)
        try:
            with pytest.raises(UpstreamError, match="cap"):
                await client.fetch_small("GET", TAG, {})
        finally:
            await client.close()
    assert stats.bodies_cut_short == 1


async def test_a_body_cut_short_of_its_length_is_an_error_never_a_short_manifest():
    async def cut(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + json.dumps({"a": 1}).encode())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    stats = Stats()
    client = await started(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", stats)
    try:
        with pytest.raises(UpstreamError, match="manifest-by-tag app:1.0"):
            await client.fetch_small("GET", TAG, {})
        assert stats.bodies_cut_short == 1  # the stats' integrity counts it as it counts a body over the cap
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_the_probe_asks_v2_without_a_credential():
    async def ping(request):
        return web.Response(status=401)
    async with Server(ping) as up:
        client = await started(up.origin)
        try:
            assert await client.probe() == 401
        finally:
            await client.close()
    (seen,) = up.seen
    assert seen.path == f"{PREFIX}/v2/" and "Authorization" not in seen.headers


async def test_the_probe_of_an_upstream_not_listening_is_none():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        client = await started(f"http://127.0.0.1:{port}")
        try:
            assert await client.probe() is None
        finally:
            await client.close()
