"""The blob endpoint's key never lands in a flow: redirects and routed requests carry single-use tickets.

Before, the 307 to the endpoint carried `mirror_key=<the endpoint's key>` in its Location, so a `-w` flow dump
held a key that let anyone on loopback fetch any blob with the mirror's credentials."""
import asyncio
import hashlib
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from mitmproxy.test import taddons, tflow, tutils

from registry_mirror.blobs.access import KEY_HEADER, KEY_PARAM, TICKET_HEADER, TICKET_PARAM, Tickets
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.proxy.addon import RegistryMirror
from tests.unit.support.blob_endpoint import started_server
from tests.unit.support.clocks import Clock
from tests.unit.support.routes import BlobUpstream
from tests.unit.support.waits import BOUND

BLOB = bytes(range(256)) * 64
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
OTHER = "sha256:" + "0" * 64
REQ = RegistryRequest(Kind.BLOB, "team/app", DIGEST, ns="docker.io")


def test_a_ticket_is_good_once():
    tickets = Tickets()
    token = tickets.issue(REQ)
    assert tickets.redeem(token, REQ)
    assert not tickets.redeem(token, REQ)
    assert len(tickets) == 0


@pytest.mark.parametrize("other", [
    RegistryRequest(Kind.BLOB, "team/app", OTHER, ns="docker.io"),
    RegistryRequest(Kind.BLOB, "team/other", DIGEST, ns="docker.io"),
    RegistryRequest(Kind.BLOB, "team/app", DIGEST, ns="quay.io"),
    RegistryRequest(Kind.BLOB, "team/app", DIGEST),
], ids=["digest", "repository", "ns", "no-ns"])
def test_a_ticket_is_good_only_for_its_blob_and_is_used_up_by_a_wrong_one(other):
    tickets = Tickets()
    token = tickets.issue(REQ)
    assert not tickets.redeem(token, other)
    assert not tickets.redeem(token, REQ)  # no second guess with the same ticket


def test_a_ticket_expires_on_the_injected_clock():
    clock = Clock()
    tickets = Tickets(seconds=60, timer=clock)
    early, late = tickets.issue(REQ), tickets.issue(REQ)
    clock.now = 59.9
    assert tickets.redeem(early, REQ)
    clock.now = 60
    assert not tickets.redeem(late, REQ)
    assert not tickets.redeem("a guess", REQ)


def test_tickets_are_bounded_oldest_dropped_and_expired_ones_pruned():
    clock = Clock()
    tickets = Tickets(seconds=60, limit=3, timer=clock)
    issued = [tickets.issue(REQ) for _ in range(5)]
    assert len(tickets) == 3
    assert [tickets.redeem(t, REQ) for t in issued[:2]] == [False, False]  # the oldest, dropped
    clock.now = 61
    tickets.issue(REQ)
    assert len(tickets) == 1  # the expired ones went when the next was issued
    assert len({*issued}) == 5  # random tokens, never repeated


@asynccontextmanager
async def with_server(tmp_path):
    """A started blob endpoint and a client session; both closed on leaving, all within the bound."""
    async with asyncio.timeout(BOUND):
        server = await started_server(tmp_path, BlobUpstream(BLOB, chunk=len(BLOB)))
        try:
            async with aiohttp.ClientSession() as client:
                yield server, client
        finally:
            await server.close()


async def status_of(client, url, **kwargs):
    async with client.get(url, **kwargs) as resp:
        await resp.read()
        return resp.status


async def test_a_redirect_carries_a_ticket_good_for_one_fetch_of_its_blob_never_the_key(tmp_path):
    async with with_server(tmp_path) as (server, client):
        location = server.redirect_url("127.0.0.1", REQ)
        query = parse_qs(urlsplit(location).query)
        assert server.key not in location and KEY_PARAM not in query
        assert query["ns"] == ["docker.io"] and len(query[TICKET_PARAM]) == 1
        first = await status_of(client, location)
        again = await status_of(client, location)
        path = urlsplit(location).path
        other = server.redirect_url("127.0.0.1", REQ).replace(path, path.replace(DIGEST, OTHER))
        elsewhere = await status_of(client, other)
    assert (first, again, elsewhere) == (200, 403, 403)


async def test_the_addons_header_key_and_the_replicas_query_key_still_open_the_endpoint(tmp_path):
    async with with_server(tmp_path) as (server, client):
        url = f"http://127.0.0.1:{server.port}/v2/team/app/blobs/{DIGEST}"
        statuses = (await status_of(client, url, headers={KEY_HEADER: server.key}),
                    await status_of(client, url, params={KEY_PARAM: server.key}),  # as peer_fill.from_peer asks
                    await status_of(client, url, headers={TICKET_HEADER: server.tickets.issue(
                        RegistryRequest(Kind.BLOB, "team/app", DIGEST))}),
                    await status_of(client, url),
                    await status_of(client, url, params={KEY_PARAM: "wrong"}),
                    await status_of(client, url, params={TICKET_PARAM: "forged"}))
    assert statuses == (200, 200, 200, 403, 403, 403)


@pytest.fixture
def config_file(tmp_path):
    def write(blob_redirect: bool):
        f = tmp_path / "mirror.yaml"
        f.write_text("upstream:\n  url: http://127.0.0.1:9\n  repository: docker-local\n  anonymous: true\n"
                     f"rewriter:\n  blob_redirect: {str(blob_redirect).lower()}\n"
                     f"cache:\n  spool_dir: {tmp_path / 'spool'}\n")
        return f
    return write


async def addon_blob_get(config_file, *then):
    """The flow of a blob GET through a started addon, and its blob endpoint's key; `then` are more hooks."""
    addon = RegistryMirror()

    with taddons.context(addon) as tctx:
        tctx.configure(addon, mirror_config=str(config_file))
        await addon.running()
        try:
            path = f"/v2/team/app/blobs/{DIGEST}?ns=docker.io".encode()
            f = tflow.tflow(req=tutils.treq(method=b"GET", path=path, host="127.0.0.1", port=8081))
            await addon.request(f)
            for hook in then:
                hook(addon, f)
            return f, addon.services.blobs.key, len(addon.services.blobs.tickets)
        finally:
            await addon.done()


async def test_the_addons_redirect_holds_no_key(config_file):
    f, key, tickets = await addon_blob_get(config_file(True))
    location = f.response.headers["Location"]
    assert f.response.status_code == 307 and key not in location and f"{KEY_PARAM}=" not in location
    assert f"{TICKET_PARAM}=" in location and tickets == 1


def streamed_answer(addon, f):
    f.response = tutils.tresp(headers=[(b"X-Mirror-Upstream-Auth", b"Basic")])
    addon.responseheaders(f)


async def test_a_routed_blob_get_carries_a_ticket_and_no_key_and_the_flow_keeps_neither(config_file):
    seen = []
    f, key, tickets = await addon_blob_get(config_file(False),
                                           lambda addon, f: seen.append(dict(f.request.headers)), streamed_answer)
    assert key not in str(seen) and KEY_HEADER not in seen[0] and seen[0][TICKET_HEADER] and tickets == 1
    assert TICKET_HEADER not in f.request.headers and key not in str(f.get_state())


async def test_a_routed_blob_get_that_fails_keeps_no_ticket_in_its_flow(config_file):
    # mitmproxy's Save writes a failed flow at its `error` hook, after the script addons' own
    f, key, _ = await addon_blob_get(config_file(False), lambda addon, f: addon.error(f))
    assert TICKET_HEADER not in f.request.headers and key not in str(f.get_state())
