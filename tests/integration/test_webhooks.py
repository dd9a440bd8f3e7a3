"""Artifactory's webhooks against a real mirror: a signed "tag pushed" event warms the image through the stock
registry, which then serves it with the upstream gone; duplicates coalesce; the registry's notifications
count every pull, the warm's apart from the clients'."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools import seed
from devtools.ports import free_port
from devtools.skopeo import pull
from registry_mirror.warming.events import EVENT_AUTH_HEADER, signature
from registry_mirror.warming.pull import pinned_context
from registry_mirror.warming.webhooks import WEBHOOK_PATH

from .conftest import assert_pulled_identical, blob_gets, credentials_of, small_image, stored_digests, wait_for

SECRET = "webhook-secret-never-logged-0123"


def hooked_mirror(mirror_factory, upstream, **webhook_keys):
    return mirror_factory(credentials_of(upstream), dump=False,
                          webhooks={"listen": f"127.0.0.1:{free_port()}", "secret": SECRET, **webhook_keys})


def tag_pushed(name: str, tag: str, digest: str, repo_key: str = "docker-local") -> bytes:
    """The body of Artifactory's predefined "Docker tag pushed" webhook (JFrog's "Domain: Docker")."""
    return json.dumps({"domain": "docker", "event_type": "pushed", "subscription_key": "mirror-warm",
                       "jpd_origin": "https://artifactory.example.com", "source": "jfrog/ci",
                       "data": {"repo_key": repo_key, "event_type": "pushed", "path": f"{name}/{tag}/manifest.json",
                                "name": "manifest.json", "sha256": digest.removeprefix("sha256:"), "size": 0,
                                "image_name": name, "tag": tag, "platforms": []}}).encode()


def post(mirror, body: bytes, mode: str = "signed") -> tuple[int, dict]:
    """POST an event as Artifactory does: over TLS (trusting the mirror's certificate), with the secret or the
    body's signature in X-JFrog-Event-Auth (any other `mode` is sent as the header)."""
    auth = {"signed": signature(SECRET, body), "plain": SECRET}.get(mode, mode)
    hooks = mirror.cfg.webhooks.listen
    req = urllib.request.Request(f"https://{hooks.host}:{hooks.port}{WEBHOOK_PATH}", data=body, method="POST",
                                 headers={"Content-Type": "application/json", EVENT_AUTH_HEADER: auth})
    try:
        with urllib.request.urlopen(req, timeout=30, context=pinned_context(mirror.cfg.mirror.tls_cert)) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def warms(mirror) -> dict:
    return mirror.stats()["webhooks"]["warms"]


def pulls_by(mirror, who: str) -> dict:
    return mirror.stats().get("registry_pulls", {}).get(who, {})


@pytest.mark.parametrize("mode", ["signed", "plain"])
def test_a_webhook_warms_the_image_which_then_pulls_with_the_upstream_gone(upstream, mirror_factory, layer_cache,
                                                                           tmp_path, mode):
    image = small_image(layer_cache, name="team/hooked", seed_base=110)
    seed.push(upstream.registry_url, image)
    mirror = hooked_mirror(mirror_factory, upstream)

    started = time.monotonic()
    status, answer = post(mirror, tag_pushed("team/hooked", "1.0", image.manifest_digest), mode)
    assert status == 202 and answer["names"] == ["team/hooked"], answer
    wait_for(lambda: warms(mirror)["done"] == 1, "the warm")
    warmed_in = time.monotonic() - started
    mirror.settle(upstream, image)
    stored_in = time.monotonic() - started
    print(f"\nwebhook ({mode}) to warm: {warmed_in:.2f} s (the warm itself {warms(mirror)['last_seconds']:.2f} s);"
          f" to every blob stored: {stored_in:.2f} s")
    assert {b.digest for b in (*image.layers, image.config)} <= stored_digests(mirror.storage)
    fetched = {r["path"].rsplit("/", 1)[1] for r in blob_gets(upstream.stats())}
    assert fetched == {b.digest for b in (*image.layers, image.config)}  # each once, by the warm

    upstream.stop()  # the deploy pulls while Artifactory is away
    pull(f"{mirror.address}/team/hooked:1.0", tmp_path / "pulled", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "pulled", image)
    assert SECRET not in mirror.logs() and signature(SECRET, b"") not in mirror.logs()
    assert SECRET not in json.dumps(mirror.stats())


def test_a_burst_of_duplicate_events_makes_one_warm_and_bad_ones_fetch_nothing(upstream, mirror_factory,
                                                                              wire_factory, layer_cache):
    image = small_image(layer_cache, name="team/burst", seed_base=120)
    seed.push(upstream.registry_url, image)
    wire = wire_factory(upstream)  # the warm's first blob is held until the whole burst is answered
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False,
                            webhooks={"listen": f"127.0.0.1:{free_port()}", "secret": SECRET})
    body = tag_pushed("team/burst", "1.0", image.manifest_digest)
    assert post(mirror, body, signature("not-the-secret", body))[0] == 401
    assert post(mirror, tag_pushed("team/burst", "1.0", image.manifest_digest, repo_key="docker-other"))[0] == 422
    assert upstream.stats()["requests"] == [] and warms(mirror)["queued"] == 0  # nothing dialled
    wire.behave(target="blobs", hold_after=0, hold_times=1)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: post(mirror, body), range(10)))
    wire.release()
    assert [status for status, _ in answers] == [202] * 10
    assert sorted(a["warm"] for _, a in answers) == ["coalesced"] * 9 + ["queued"]
    wait_for(lambda: warms(mirror)["done"] == 1, "the warm")
    mirror.settle(upstream, image)
    w = warms(mirror)
    assert (w["done"], w["coalesced"], w["failed"], w["queued"], w["running"]) == (1, 9, 0, 0, 0)
    assert len(blob_gets(upstream.stats())) == len(image.layers) + 1  # one warm: every blob fetched once
    assert mirror.stats()["webhooks"]["answers"] == {"202": 10, "401": 1, "422": 1}


def test_notifications_count_every_pull_and_warms_apart(upstream, mirror_factory, layer_cache, tmp_path):
    amd64 = small_image(layer_cache, name="team/multi", tag="amd64", seed_base=130)
    arm64 = small_image(layer_cache, name="team/multi", tag="arm64", seed_base=140)
    _, index_digest = seed.push_index(upstream.registry_url, "team/multi", "1.0",
                                      {"linux/amd64": amd64, "linux/arm64": arm64})
    mirror = hooked_mirror(mirror_factory, upstream, platforms=["linux/arm64"])
    assert post(mirror, tag_pushed("team/multi", "1.0", index_digest))[0] == 202
    wait_for(lambda: warms(mirror)["done"] == 1, "the warm")
    mirror.settle(upstream, arm64)
    w = warms(mirror)
    arm_blobs = (*arm64.layers, arm64.config)
    assert (w["blobs"], w["bytes"]) == (len(arm_blobs), sum(b.size for b in arm_blobs))
    assert not {b.digest for b in amd64.layers} & stored_digests(mirror.storage)  # webhooks.platforms
    # the registry reported exactly what the warm read: its blobs, and three manifests (tag, index, arm64)
    wait_for(lambda: pulls_by(mirror, "warming").get("blob", {}).get("bytes") == w["bytes"], "the warm's pulls")
    warming = pulls_by(mirror, "warming")
    assert warming["blob"]["requests"] == w["blobs"] and warming["manifest"]["requests"] == 3
    assert pulls_by(mirror, "clients") == {}

    client_bytes = sum(b.size for b in arm_blobs) + len(arm64.manifest)
    for n in (1, 2):  # a pull by a client (skopeo) is counted cold and warm alike, with its bytes
        pull(f"{mirror.address}/team/multi@{arm64.manifest_digest}", tmp_path / f"pull{n}", cert_dir=mirror.trust)
        wait_for(lambda n=n: pulls_by(mirror, "clients").get("blob", {}).get("bytes") == n * sum(
            b.size for b in arm_blobs), f"pull {n}'s notifications")
    snap = mirror.stats()
    clients = snap["registry_pulls"]["clients"]
    print(f"\nnotification counters after a warm and two client pulls: {json.dumps(snap['registry_pulls'])}; "
          f"bytes {json.dumps(snap['bytes'])}")
    assert clients["blob"]["requests"] - clients["blob"]["heads"] == 2 * len(arm_blobs)
    assert clients["manifest"]["bytes"] == 2 * len(arm64.manifest)
    assert snap["bytes"]["served_to_clients"] == 2 * client_bytes
    assert snap["bytes"]["saved"] == max(0, 2 * client_bytes - snap["bytes"]["fetched_from_upstream"])
