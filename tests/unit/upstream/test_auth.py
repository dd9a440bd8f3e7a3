import asyncio
import json

import pytest

from registry_mirror.config.load import parse
from registry_mirror.upstream.auth import AuthError, UpstreamAuth, basic_header, parse_token_response, usable_lifetime
from tests.unit.support.clocks import Clock

ORIGIN = "https://art.example.com"
CHALLENGE = f'Bearer realm="{ORIGIN}/artifactory/api/docker/docker-local/v2/token",service="art"'


@pytest.mark.parametrize("body,value,lifetime", [
    (b'{"token": "abc", "expires_in": 3600}', "abc", 3570),
    (b'{"access_token": "xyz", "expires_in": 300}', "xyz", 270),
    (b'{"token": "abc"}', "abc", 54),  # the spec's default of 60 s
    (b'{"token": "abc", "expires_in": "soon"}', "abc", 54),
    (b'{"token": "abc", "expires_in": 5}', "abc", 4.5),
])
def test_parse_token_response(body, value, lifetime):
    token = parse_token_response(body)
    assert token.value == value and token.lifetime == pytest.approx(lifetime)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"token": ""}', b'{"token": 5}', b'{"token": "a\\nb"}',
                                  b'{"token": "' + b"x" * 70000 + b'"}'])
def test_parse_token_response_rejects(body):
    with pytest.raises(AuthError):
        parse_token_response(body)


def test_usable_lifetime_bounds():
    assert usable_lifetime(3600) == 3570
    assert usable_lifetime(10) == 9


def make_auth(expires_in=300, **upstream):
    cfg = parse({"upstream": {"url": ORIGIN, "repository": "docker-local", "username": "u", "password": "p",
                              **upstream}}).upstream
    calls = []

    async def fetch(realm, params, authorization):
        calls.append((realm, params, authorization))
        await asyncio.sleep(0)  # a suspension point, as a real request has; no time passes
        return 200, json.dumps({"token": f"tok{len(calls)}", "expires_in": expires_in}).encode()
    clock = Clock(1000.0)
    return UpstreamAuth(cfg, fetch, timer=clock), calls, clock


async def test_basic_first_then_token_flow_cached_per_scope():
    auth, calls, clock = make_auth()
    assert await auth.authorization("app") == basic_header("u", "p")
    assert await auth.on_unauthorized("app", [CHALLENGE + ',scope="repository:app:pull"'], basic_header("u", "p"))
    assert await auth.authorization("app") == "Bearer tok1"
    assert await auth.authorization("app") == "Bearer tok1"  # cached
    assert calls[0][1] == {"scope": "repository:app:pull", "service": "art"}
    assert calls[0][2] == basic_header("u", "p")
    assert await auth.authorization("other") == "Bearer tok2"  # another scope, another token
    clock.now += 271  # past expires_in minus the margin
    assert await auth.authorization("app") == "Bearer tok3"
    assert auth.token_refreshes == 3


async def test_rejected_cached_token_is_dropped_and_refreshed_once():
    auth, calls, _ = make_auth()
    await auth.on_unauthorized("app", [CHALLENGE], None)
    sent = await auth.authorization("app")
    assert await auth.on_unauthorized("app", [CHALLENGE], sent)  # revoked upstream
    assert await auth.authorization("app") == "Bearer tok2"


async def test_scope_from_challenge_is_remembered():
    auth, calls, _ = make_auth()
    # Artifactory may name a scope without the repository key (oras-go#650)
    await auth.on_unauthorized("team/app", [CHALLENGE + ',scope="repository:docker-local/team/app:pull"'], None)
    await auth.authorization("team/app")
    assert calls[-1][1]["scope"] == "repository:docker-local/team/app:pull"


async def test_concurrent_requests_share_one_token_fetch():
    auth, calls, _ = make_auth()
    await auth.on_unauthorized("app", [CHALLENGE], None)
    results = await asyncio.gather(*(auth.authorization("app") for _ in range(20)))
    assert set(results) == {"Bearer tok1"} and len(calls) == 1


@pytest.mark.parametrize("realm", ["https://evil.example/token", "http://art.example.com/token",
                                   "https://art.example.com.evil.example/token"])
async def test_foreign_realm_refused_without_sending_credentials(realm):
    auth, calls, _ = make_auth()
    with pytest.raises(AuthError, match="realm"):
        await auth.on_unauthorized("app", [f'Bearer realm="{realm}",service="x"'], None)
    assert calls == []
    assert await auth.authorization("app") == basic_header("u", "p")  # not switched to the foreign realm


async def test_allowed_realm_host():
    auth, calls, _ = make_auth(allowed_realm_hosts=["auth.example.com"])
    await auth.on_unauthorized("app", ['Bearer realm="https://auth.example.com/token"'], None)
    assert await auth.authorization("app") == "Bearer tok1"


async def test_static_token_never_fetches():
    cfg = parse({"upstream": {"url": ORIGIN, "repository": "r", "token": "static"}}).upstream
    auth = UpstreamAuth(cfg, None)
    assert await auth.authorization("app") == "Bearer static"
    assert not await auth.on_unauthorized("app", [CHALLENGE], "Bearer static")


async def test_token_endpoint_rejection_is_a_clear_error():
    cfg = parse({"upstream": {"url": ORIGIN, "repository": "r", "username": "u", "password": "hunter2"}}).upstream

    async def fetch(realm, params, authorization):
        return 401, b'{"errors": []}'
    auth = UpstreamAuth(cfg, fetch)
    await auth.on_unauthorized("app", [CHALLENGE], None)
    with pytest.raises(AuthError, match="answered 401.*check upstream.username") as e:
        await auth.authorization("app")
    assert "hunter2" not in str(e.value)
