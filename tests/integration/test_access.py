"""Who may pull: the registry asks clients for a token, the mirror's token endpoint issues one only for what
Artifactory lets the client's own user read (an upstream with two users: `dev` reads `tools/`, `ops` reads
`team/`), and mutual TLS keeps out clients without a certificate."""
from __future__ import annotations

import base64
import json
import shutil
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pytest

from devtools import seed
from devtools.ports import free_port
from devtools.skopeo import PullError, pull
from registry_mirror.tls import certs
from registry_mirror.warming.pull import LocalRegistryClient

from .conftest import assert_pulled_identical, credentials_of, small_image

USERS = {"dev": ("dev-Pa55word", ("tools",)), "ops": ("ops-Pa55word", ("team",))}


@pytest.fixture
def two_users(upstream_factory):
    return upstream_factory(users=USERS)


@pytest.fixture
def images(two_users, layer_cache) -> dict[str, seed.Image]:
    found = {}
    for name, base in (("tools/lint", 20), ("team/app", 30)):
        found[name] = small_image(layer_cache, name=name, seed_base=base)
        seed.push(two_users.registry_url, found[name])
    return found


def access_keys(**more) -> dict:
    port = free_port()
    return {"users": "artifactory", "listen": f"127.0.0.1:{port}", "url": f"https://127.0.0.1:{port}", **more}


def creds(user: str, password: str | None = None) -> str:
    return f"{user}:{USERS[user][0] if password is None else password}"


def pull_as(mirror, image: seed.Image, dest, user: str | None, password: str | None = None) -> None:
    pull(f"{mirror.address}/{image.name}:{image.tag}", dest, cert_dir=mirror.trust,
         creds=creds(user, password) if user else None)


def refusal(mirror, image, dest, user, password=None) -> str:
    """What the token endpoint said to a refused pull: skopeo shows the message of a 401 and only the status of
    others; the same request sent here shows both."""
    with pytest.raises(PullError) as refused:
        pull_as(mirror, image, dest, user, password)
    status, message = ask_token(mirror, f"repository:{image.name}:pull", user, password)
    shown = message if status == 401 else f"invalid status code from registry {status}"
    assert shown in str(refused.value)
    return f"{status} {message}"


def ask_token(mirror, scope: str, user: str | None, password: str | None = None) -> tuple[int, str]:
    """The token endpoint's status and message for `scope`, asked as `user`."""
    access = mirror.cfg.access
    query = urllib.parse.urlencode({"service": "artifactory-mirror", "scope": scope})
    request = urllib.request.Request(f"{access.url}/token?{query}")
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(creds(user, password).encode()).decode())
    context = ssl.create_default_context(cafile=str(mirror.trust / "ca.crt"))
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["errors"][0]["message"]


def test_each_user_pulls_only_what_artifactory_lets_it_read(two_users, images, mirror_factory, tmp_path):
    mirror = mirror_factory(credentials_of(two_users), access=access_keys())
    tools, team = images["tools/lint"], images["team/app"]

    pull_as(mirror, tools, tmp_path / "dev-tools", "dev")
    assert_pulled_identical(tmp_path / "dev-tools", tools)
    pull_as(mirror, team, tmp_path / "ops-team", "ops")
    assert_pulled_identical(tmp_path / "ops-team", team)

    assert refusal(mirror, team, tmp_path / "x", "dev").startswith("403 user dev may not pull team/app: ")
    assert refusal(mirror, tools, tmp_path / "x", "ops").startswith("403 user ops may not pull tools/lint: ")
    assert refusal(mirror, tools, tmp_path / "x", None).startswith("401 pulling tools/lint needs a login")
    # a wrong password right after the right one was allowed and cached
    assert refusal(mirror, tools, tmp_path / "x", "dev", "wrong-password").startswith(
        "401 Artifactory did not accept the credential for user dev")

    access = mirror.stats()["access"]
    # each refusal twice (skopeo's, then ours), the second one from the cache
    assert access["decisions"]["allowed"] == 2 and access["decisions"]["refused"] == 3
    assert access["decisions"]["cached-refused"] == 3
    pull_as(mirror, tools, tmp_path / "dev-again", "dev")  # the cached decision: Artifactory not asked again
    assert mirror.stats()["access"]["questions"] == access["questions"]
    assert mirror.stats()["access"]["decisions"]["cached-allowed"] >= 1
    with urllib.request.urlopen(f"{mirror.rewriter}/metrics", timeout=10) as resp:
        assert 'mirror_access_decisions_total{outcome="refused"} 3.0' in resp.read().decode()

    logs = mirror.logs()
    assert "access: user=dev repository=team/app outcome=refused" in logs
    for user, (password, _) in USERS.items():
        for secret in (password, base64.b64encode(f"{user}:{password}".encode()).decode(), "wrong-password"):
            assert secret not in logs
    mirror.mirror.stop()
    dump = open(mirror.mirror.dump, "rb").read()
    for password, _ in USERS.values():
        assert password.encode() not in dump


def test_a_revoked_permission_is_refused_once_the_decision_expires(two_users, images, mirror_factory, tmp_path):
    mirror = mirror_factory(credentials_of(two_users), dump=False, access=access_keys(decision_ttl=0))
    tools = images["tools/lint"]
    pull_as(mirror, tools, tmp_path / "before", "dev")
    two_users.control("permissions?user=dev&read=")
    assert refusal(mirror, tools, tmp_path / "after", "dev").startswith("403 user dev may not pull tools/lint")


def test_cached_decisions_hold_through_an_outage_and_new_ones_are_refused(two_users, images, mirror_factory,
                                                                         tmp_path):
    mirror = mirror_factory(credentials_of(two_users), dump=False,
                            access=access_keys(decision_ttl=0, stale_decisions="1h"))
    tools, team = images["tools/lint"], images["team/app"]
    pull_as(mirror, tools, tmp_path / "before", "dev")
    mirror.settle(two_users, tools)
    two_users.fault("status", code=503)
    pull_as(mirror, tools, tmp_path / "during", "dev")  # the stale "allowed", and the image from storage
    assert_pulled_identical(tmp_path / "during", tools)
    assert refusal(mirror, team, tmp_path / "x", "ops").startswith("503 cannot check whether ops may pull team/app")
    decisions = mirror.stats()["access"]["decisions"]
    assert decisions["stale-allowed"] >= 1 and decisions["unreachable"] >= 1


def test_anonymous_prefixes_need_no_login(two_users, images, mirror_factory, tmp_path):
    mirror = mirror_factory(credentials_of(two_users), dump=False, access=access_keys(anonymous=["tools"]))
    pull_as(mirror, images["tools/lint"], tmp_path / "anon", None)
    assert_pulled_identical(tmp_path / "anon", images["tools/lint"])
    assert refusal(mirror, images["team/app"], tmp_path / "x", None).startswith("401 pulling team/app needs a login")
    # the mirror's own warms sign their token themselves
    _, manifest = LocalRegistryClient(mirror.cfg).manifest("team/app", "1.0")
    assert manifest["config"]["digest"] == images["team/app"].config.digest


def client_folder(mirror, tmp_path, with_cert: bool):
    """A skopeo cert dir: the mirror's CA, and a client pair when `with_cert`."""
    folder = tmp_path / ("with-cert" if with_cert else "without-cert")
    folder.mkdir()
    shutil.copy(mirror.trust / "ca.crt", folder / "ca.crt")
    if with_cert:
        shutil.copy(tmp_path / "client.crt", folder / "client.cert")
        shutil.copy(tmp_path / "client.key", folder / "client.key")
    return folder


def test_mutual_tls_keeps_out_clients_without_a_certificate(upstream, layer_cache, mirror_factory, tmp_path):
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    certs.ensure_own_pair(str(tmp_path / "client.crt"), str(tmp_path / "client.key"), "node-1", "the test's pair")
    mirror = mirror_factory(credentials_of(upstream), dump=False,
                            mirror_keys={"client_ca": str(tmp_path / "client.crt")})
    ref = f"{mirror.address}/{image.name}:{image.tag}"
    with pytest.raises(PullError, match="bad certificate|certificate required"):  # refused at the handshake
        pull(ref, tmp_path / "x", cert_dir=client_folder(mirror, tmp_path, with_cert=False))
    pull(ref, tmp_path / "out", cert_dir=client_folder(mirror, tmp_path, with_cert=True))
    assert_pulled_identical(tmp_path / "out", image)
    # the mirror's own warms present its own certificate
    media_type, manifest = LocalRegistryClient(mirror.cfg).manifest(image.name, image.tag)
    assert manifest["config"]["digest"] == image.config.digest


def test_with_machine_certificates_the_token_endpoint_wants_one_too(two_users, images, mirror_factory, tmp_path):
    certs.ensure_own_pair(str(tmp_path / "client.crt"), str(tmp_path / "client.key"), "node-1", "the test's pair")
    mirror = mirror_factory(credentials_of(two_users), dump=False, access=access_keys(),
                            mirror_keys={"client_ca": str(tmp_path / "client.crt")})
    tools = images["tools/lint"]
    pull(f"{mirror.address}/{tools.name}:{tools.tag}", tmp_path / "out", creds=creds("dev"),
         cert_dir=client_folder(mirror, tmp_path, with_cert=True))
    assert_pulled_identical(tmp_path / "out", tools)
    context = ssl.create_default_context(cafile=str(mirror.trust / "ca.crt"))  # no certificate of its own
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        with urllib.request.urlopen(f"{mirror.cfg.access.url}/token?scope=repository:tools/lint:pull",
                                    timeout=30, context=context) as resp:
            resp.read()
    assert mirror.stats()["access"]["questions"] == 1  # the machine without one tried no password
