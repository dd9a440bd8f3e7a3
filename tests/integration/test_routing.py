"""One mirror, several upstreams: routes by image-name prefix and by containerd's ns, each with its own
credentials and token cache, through the real stock registry, the addon and three Artifactory-like fronts."""
from __future__ import annotations

import hashlib
import json
import urllib.request

from devtools import seed
from devtools.skopeo import pull

from .conftest import assert_pulled_identical, blob_gets, credentials_of, raw_request, small_image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def credentials_seen(harness) -> set[str]:
    return {r["credential"] for r in harness.stats()["requests"]}


def test_routes_by_prefix_and_ns_with_their_own_credentials(upstream_factory, mirror_factory, layer_cache, tmp_path):
    team_a = upstream_factory(auth="token", username="team-a-bot", password="team-a-Pa55word",
                              repository="docker-team-a")
    default = upstream_factory(auth="basic")
    hub = upstream_factory(auth="none", repository="docker-hub")  # a registry serving /v2 at its root
    app = small_image(layer_cache, name="app", seed_base=20)
    web = small_image(layer_cache, name="team/web", seed_base=30)
    nginx = small_image(layer_cache, name="library/nginx", seed_base=40)
    seed.push(team_a.registry_url, app)
    seed.push(default.registry_url, web)
    seed.push(hub.registry_url, nginx)
    hub_keys = {"url": hub.url, "path_prefix": "", "anonymous": True, "library": "add"}
    mirror = mirror_factory(credentials_of(default), routes=[
        {"prefix": "team-a", "strip_prefix": True, "repository": "docker-team-a", **credentials_of(team_a)},
        {"prefix": "hub", "strip_prefix": True, **hub_keys},
        {"ns": ["docker.io"], **hub_keys},
    ])

    pull(f"{mirror.address}/team-a/app:1.0", tmp_path / "app", cert_dir=mirror.trust)
    pull(f"{mirror.address}/team/web:1.0", tmp_path / "web", cert_dir=mirror.trust)
    pull(f"{mirror.address}/hub/nginx:1.0", tmp_path / "nginx", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "app", app)
    assert_pulled_identical(tmp_path / "web", web)
    assert_pulled_identical(tmp_path / "nginx", nginx)
    for harness, image in ((team_a, app), (default, web), (hub, nginx)):
        mirror.settle(harness, image)

    # each upstream saw only its own names, under its own path, with its own credential (or none)
    assert {r["path"].split("/v2/")[1].split("/")[0] for r in blob_gets(team_a.stats())} == {"app"}
    assert all(r["path"].startswith("/artifactory/api/docker/docker-team-a/v2/") for r in team_a.stats()["requests"])
    assert credentials_seen(team_a) <= {"basic:team-a-bot", "bearer", ""}
    assert credentials_seen(default) <= {"basic:deployer", ""}
    assert credentials_seen(hub) == {""}  # anonymous: no route's credential reaches it
    assert all(r["path"].startswith("/v2/library/nginx/") for r in hub.stats()["requests"])
    assert {r["path"].rsplit("/", 1)[1] for r in blob_gets(hub.stats())} == {
        b.digest for b in (*nginx.layers, nginx.config)}

    # containerd's ns picks the route; the upstream never sees it
    hub.control("reset")
    req = urllib.request.Request(f"{mirror.rewriter}/v2/nginx/manifests/1.0?ns=docker.io", method="HEAD",
                                 headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Docker-Content-Digest"] == nginx.manifest_digest
    # a blob by ns: the 307 to the blob endpoint carries the ns, and the hub route fetches it
    extra = small_image(layer_cache, name="library/redis", seed_base=45)
    seed.push(hub.registry_url, extra)
    layer = extra.layers[0]
    with urllib.request.urlopen(f"{mirror.rewriter}/v2/redis/blobs/{layer.digest}?ns=docker.io", timeout=30) as resp:
        assert hashlib.sha256(resp.read()).hexdigest() == layer.digest.split(":")[1]
    assert [r["path"] for r in blob_gets(hub.settled_stats())] == [f"/v2/library/redis/blobs/{layer.digest}"]
    # an ns no route lists is only a key that matched nothing: the default route answers, no host is dialled
    status, body = raw_request(f"{mirror.rewriter}/v2/nginx/manifests/1.0?ns=evil.example.com", "GET",
                               {"Accept": OCI_MANIFEST})
    assert status == 404 and body["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert any(r["path"] == "/artifactory/api/docker/docker-local/v2/nginx/manifests/1.0"
               for r in default.stats()["requests"])
    assert "ns=" not in json.dumps(hub.stats()["requests"] + default.stats()["requests"])

    assert [(r["route"], r["prefix"], r["ns"], r["state"]) for r in mirror.stats()["routes"]] == [
        ("routes[0]", "team-a", [], "up"), ("routes[1]", "hub", [], "up"), ("routes[2]", "", ["docker.io"], "up"),
        ("upstream", "", [], "up")]
    logs = mirror.logs()
    for secret in (team_a.password, default.password, *team_a.stats()["issued_tokens"]):
        assert secret not in logs
