"""The token endpoint against a stand-in for Artifactory's answers: what each request gets, what is counted, and
what is never granted (push, delete, catalog)."""
import asyncio
import base64
import json
import logging
from dataclasses import replace

import aiohttp
import pytest

from registry_mirror.access.decisions import Verdict
from registry_mirror.access.server import (
    TOKEN_PATH,
    FailedLogins,
    TokenServer,
    address_key,
    basic_credential,
    printable,
    realm_url,
)
from registry_mirror.config.load import Address, parse
from registry_mirror.tls import certs
from tests.unit.support.clocks import Clock
from tests.unit.support.waits import until

READS = {"dev": ("pw", ("tools/lint",))}


class FakeArtifactory:
    """Artifactory's answer for (user, secret, name), or unreachable while `down`."""

    def __init__(self):
        self.down = False
        self.questions = 0
        self.gate = asyncio.Event()  # cleared: questions wait for it
        self.gate.set()

    async def close(self):
        pass

    async def can_pull(self, user, secret, name):
        await self.gate.wait()
        return self._answer(user, secret, name)

    async def login(self, user, secret):
        await self.gate.wait()
        return self._answer(user, secret, "")

    def _answer(self, user, secret, name):
        self.questions += 1
        if self.down:
            return Verdict(False, "down", reachable=False)
        if READS.get(user, ("",))[0] != secret:
            return Verdict(False, "Artifactory did not accept the credential", bad_credential=True)
        return Verdict(True, "") if not name or name in READS[user][1] else Verdict(False, "no read permission")


@pytest.fixture
async def endpoint_with(tmp_path):
    """start(**access keys) -> (server, ask, clock): a token endpoint on a free port, its monotonic clock a fake."""
    certs.ensure_self_signed(str(tmp_path / "mirror.crt"), str(tmp_path / "mirror.key"))
    started, sessions = [], []

    async def start(**access):
        cfg = parse({"upstream": {"url": "https://a.example", "repository": "r", "username": "mirror",
                                  "password": "mirror-pw"},
                     "mirror": {"tls_cert": str(tmp_path / "mirror.crt"), "tls_key": str(tmp_path / "mirror.key")},
                     "access": {"users": "artifactory", "anonymous": ["public"], "failed_logins": 3,
                                "decision_ttl": "0s", **access}}, base_dir=tmp_path)
        cfg = replace(cfg, access=replace(cfg.access, listen=Address("127.0.0.1", 0)))  # a free port
        certs.ensure_own_pair(cfg.access.signing_cert, cfg.access.signing_key, "signer", "pair")
        clock = Clock()
        server = TokenServer(cfg, router=None, check=FakeArtifactory(), monotonic=clock)
        await server.start()
        started.append(server)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
        sessions.append(session)

        async def ask(*scopes, user=None, secret="pw", method="GET", headers=None):
            headers = dict(headers or {})
            if user:
                headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
            async with session.request(method, f"https://127.0.0.1:{server.port}{TOKEN_PATH}",
                                       params=[("scope", s) for s in scopes], headers=headers) as resp:
                return resp.status, await resp.json(), resp.headers
        return server, ask, clock
    yield start
    for session in sessions:
        await session.close()
    for server in started:
        await server.close()


@pytest.fixture
async def endpoint(endpoint_with):
    server, ask, _ = await endpoint_with()
    return server, ask


def granted(body) -> list:
    claims = body["token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["access"]


async def test_only_pull_is_granted_and_only_where_artifactory_allows(endpoint):
    server, ask = endpoint
    status, body, _ = await ask("repository:tools/lint:pull,push,delete", user="dev")
    assert status == 200 and granted(body) == [{"type": "repository", "name": "tools/lint", "actions": ["pull"]}]
    status, body, _ = await ask("registry:catalog:*", user="dev")
    assert status == 200 and granted(body) == []  # a login's token: the catalog stays closed
    status, body, _ = await ask("repository:team/app:pull", user="dev")
    assert status == 403 and body["errors"][0]["message"] == "user dev may not pull team/app: no read permission"
    assert server.snapshot()["decisions"] == {"allowed": 2, "refused": 1}


async def test_no_credential_gets_a_basic_challenge_and_anonymous_prefixes_a_token(endpoint):
    _, ask = endpoint
    status, body, headers = await ask("repository:team/app:pull")
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="artifactory-mirror"'
    assert "pulling team/app needs a login" in body["errors"][0]["message"]
    status, body, _ = await ask("repository:public/busybox:pull")
    assert status == 200 and granted(body)[0]["name"] == "public/busybox"
    status, _, _ = await ask("repository:publicity/x:pull")  # a prefix is whole path components
    assert status == 401


async def test_a_revoked_permission_holds_until_the_decision_expires(endpoint_with):
    server, ask, clock = await endpoint_with(decision_ttl="5m")
    assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 200
    READS["dev"] = ("pw", ())  # revoked in Artifactory
    try:
        clock.now += 299
        assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 200  # the cached "allowed"
        clock.now += 1
        assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 403
        server.check.down = True  # a refusal also ends the stale "allowed" an outage would use
        assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 403  # the cached refusal
        clock.now += 300
        assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 503
    finally:
        READS["dev"] = ("pw", ("tools/lint",))


async def test_guesses_are_limited_per_address_and_a_stale_secret_retried_counts_once(endpoint, caplog):
    server, ask = endpoint
    caplog.set_level(logging.INFO, logger="registry_mirror.access.audit")
    assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 200  # known good from here on
    for _ in range(5):  # a pod retrying a stale pull secret
        assert (await ask("repository:tools/lint:pull", user="dev", secret="old"))[0] == 401
    for guess in ("guess-1", "guess-2"):
        assert (await ask("repository:tools/lint:pull", user="dev", secret=guess))[0] == 401
    status, body, _ = await ask("repository:tools/lint:pull", user="dev", secret="guess-3")
    assert status == 429 and "more than 3 refused logins from 127.0.0.1" in body["errors"][0]["message"]
    assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 200  # a known good credential still asks
    # decision_ttl 0: every request asks, but the limit counts the stale secret once; the blocked guess asks not
    assert server.check.questions == 1 + 5 + 2 + 1
    assert "guess" not in caplog.text and "user=dev repository=tools/lint outcome=refused" in caplog.text


async def test_guesses_sent_at_once_count_while_they_are_asked(endpoint):
    server, ask = endpoint
    server.check.gate.clear()
    looked_up, fresh = [], server.decisions.fresh
    server.decisions.fresh = lambda key: looked_up.append(key) or fresh(key)
    guesses = [asyncio.ensure_future(ask("repository:tools/lint:pull", user="dev", secret=f"g{n}"))
               for n in range(6)]
    await until(lambda: len(looked_up) >= 6, "every guess to arrive")
    server.check.gate.set()
    statuses = sorted(status for status, _, _ in await asyncio.gather(*guesses))
    assert statuses == [401, 401, 401, 429, 429, 429]


async def test_an_unreachable_artifactory_refuses_what_no_recent_decision_allows(endpoint):
    server, ask = endpoint
    assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 200
    server.check.down = True
    assert (await ask("repository:tools/lint:pull", user="dev"))[0] == 200  # the stale "allowed"
    status, body, _ = await ask("repository:tools/lint:pull", user="dev", secret="other")
    assert status == 503 and "no recent decision" in body["errors"][0]["message"]
    assert server.snapshot()["decisions"]["stale-allowed"] == 1


async def test_containerds_oauth_post_is_answered_404_and_bad_input_400(endpoint):
    _, ask = endpoint
    assert (await ask("repository:tools/lint:pull", method="POST"))[0] == 404
    status, body, _ = await ask("repository:tools/lint", user="dev")
    assert status == 400 and "type:name:actions" in body["errors"][0]["message"]
    status, body, _ = await ask("repository:tools/lint:pull", headers={"Authorization": "a-bare-secret"})
    assert status == 400 and "other than Basic" in body["errors"][0]["message"]
    assert "a-bare-secret" not in json.dumps(body)
    status, body, _ = await ask("repository:../../api/security:pull", user="dev")
    assert status == 400 and "not a repository name" in body["errors"][0]["message"]


async def test_concurrent_requests_with_one_credential_ask_artifactory_once(endpoint):
    server, ask = endpoint
    server.check.gate.clear()
    looked_up, fresh = [], server.decisions.fresh
    server.decisions.fresh = lambda key: looked_up.append(key) or fresh(key)  # each request looks first
    requests = [asyncio.ensure_future(ask("repository:tools/lint:pull", user="dev")) for _ in range(10)]
    await until(lambda: len(looked_up) >= 10, "every request to find no decision and wait for the question")
    server.check.gate.set()
    assert [status for status, _, _ in await asyncio.gather(*requests)] == [200] * 10
    assert server.check.questions == 1 and server._asking == {}


def test_basic_credentials_are_read_and_malformed_ones_named():
    assert basic_credential("") is None
    assert basic_credential("Basic " + base64.b64encode(b"dev:p:w").decode()) == ("dev", "p:w")
    for bad, why in (("Basic !!!", "not base64"), ("Basic " + base64.b64encode(b"nocolon").decode(), "no user")):
        with pytest.raises(ValueError, match=why):
            basic_credential(bad)


def test_failed_logins_age_out_of_the_minute_and_ipv6_counts_by_its_64():
    now = [0.0]
    failures = FailedLogins(2, clock=lambda: now[0])
    failures.failed("10.0.0.1", b"one")
    failures.failed("10.0.0.1", b"one")  # the same secret again
    assert not failures.blocked("10.0.0.1")
    failures.failed("10.0.0.1", b"two")
    assert failures.blocked("10.0.0.1") and not failures.blocked("10.0.0.2")
    now[0] = 61.0
    assert not failures.blocked("10.0.0.1")
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:2") == "2001:db8::/64"


def test_user_names_cannot_forge_log_lines():
    assert printable("dev\naccess: user=admin outcome=allowed") == "dev?access: user=admin outcome=allowed"
    assert printable("x" * 200).endswith("...") and len(printable("x" * 200)) == 131


def test_the_realm_is_access_url_or_a_name_other_machines_reach(tmp_path):
    certs.ensure_self_signed(str(tmp_path / "m.crt"), str(tmp_path / "m.key"), extra_names=("mirror.dc1.test",))
    pem = (tmp_path / "m.crt").read_bytes()
    assert realm_url("https://mirror.dc1.example.com:5001/", pem, 5001) == "https://mirror.dc1.example.com:5001/token"
    host = realm_url(None, pem, 5001).removeprefix("https://").rpartition(":")[0]
    assert "." in host and host not in ("localhost", "127.0.0.1")  # a dotted name, never a loopback one
    with pytest.raises(ValueError, match="set access.url"):
        realm_url(None, b"not a certificate", 5001)
