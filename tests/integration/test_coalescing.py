"""Each layer crosses the upstream link once, however many pulls overlap; corrupt bytes are never kept."""
from __future__ import annotations

import hashlib
import http.client
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull

from .conftest import assert_pulled_identical, blob_gets, credentials_of, small_image, wait_for


def stored_blobs(storage: Path) -> dict[str, Path]:
    root = storage / "docker/registry/v2/blobs"
    return {f"{p.parent.parent.parent.name}:{p.parent.name}": p for p in root.glob("*/*/*/data")}


@pytest.mark.mtu1500
def test_concurrent_cold_pulls_make_one_upstream_get_per_blob(upstream, mirror_factory, layer_cache, tmp_path):
    layers = [seed.random_layer(layer_cache, 32 * seed.MIB, 40), seed.random_layer(layer_cache, 8 * seed.MIB, 41)]
    image = seed.build_image("team/big", "1.0", layers)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False)
    ref = f"{mirror.address}/{image.name}:{image.tag}"
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: pull(ref, tmp_path / f"out{i}", cert_dir=mirror.trust), range(6)))
    for i in range(6):
        assert_pulled_identical(tmp_path / f"out{i}", image)
    mirror.settle(upstream, image)
    gets = [r["path"].rsplit("/", 1)[1] for r in blob_gets(upstream.stats())]
    assert sorted(gets) == sorted(b.digest for b in (*layers, image.config))  # once each, not 2x or 7x
    assert upstream.stats()["body_bytes"] <= image.size * 1.001
    assert "COALESCED" in mirror.logs()


def test_bytes_not_matching_their_digest_are_never_stored_or_served(upstream, mirror_factory, layer_cache,
                                                                    tmp_path):
    image = small_image(layer_cache, name="team/corrupt")
    seed.push(upstream.registry_url, image)
    victim = image.layers[1]
    data = upstream.workdir / "upstream-storage/docker/registry/v2/blobs/sha256" / victim.digest[7:9] / \
        victim.digest[7:] / "data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # the upstream now serves wrong bytes under this digest
    data.write_bytes(bytes(raw))
    mirror = mirror_factory(credentials_of(upstream), dump=False)
    for attempt in range(2):
        with pytest.raises(PullError):
            pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / f"out{attempt}", cert_dir=mirror.trust)
    mirror.settle(upstream)
    stored = stored_blobs(Path(mirror.cfg.mirror.storage))
    assert victim.digest not in stored
    for digest, path in stored.items():
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert "do not match" in mirror.logs()
    # two attempts, two upstream fetches: a failed transfer is never served again
    assert [r for r in blob_gets(upstream.stats()) if r["path"].endswith(victim.digest)]


def test_warm_pull_by_tag_within_the_ttl_makes_no_upstream_request(upstream, mirror_factory, layer_cache,
                                                                  tmp_path):
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False)
    ref = f"{mirror.address}/{image.name}:{image.tag}"
    pull(ref, tmp_path / "cold", cert_dir=mirror.trust)
    mirror.settle(upstream, image)
    upstream.control("reset")
    pull(ref, tmp_path / "warm", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "warm", image)
    assert upstream.stats()["requests"] == []
    assert "HIT HEAD manifest-by-tag" in mirror.logs()


def moved_tag(upstream, mirror_factory, layer_cache, tmp_path, tag_ttl: float):
    """A mirror with `tag_ttl` that pulled `old` by tag, after which the tag moved upstream to `new`."""
    old, new = small_image(layer_cache, tag="stable"), small_image(layer_cache, tag="stable", seed_base=30)
    seed.push(upstream.registry_url, old)
    mirror = mirror_factory(credentials_of(upstream), dump=False, cache={"tag_ttl": tag_ttl})
    ref = f"{mirror.address}/{old.name}:stable"
    pull(ref, tmp_path / "a", cert_dir=mirror.trust)
    seed.push(upstream.registry_url, new)  # the tag moves upstream
    return mirror, ref, old, new


def test_a_tag_moved_upstream_is_the_known_digest_within_the_ttl(upstream, mirror_factory, layer_cache, tmp_path):
    mirror, ref, old, _ = moved_tag(upstream, mirror_factory, layer_cache, tmp_path, tag_ttl=3600)
    pull(ref, tmp_path / "b", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "b", old)
    assert mirror.counters()["manifest-by-tag:hit"] >= 1


def test_a_tag_moved_upstream_is_seen_after_the_ttl(upstream, mirror_factory, layer_cache, tmp_path):
    mirror, ref, _, new = moved_tag(upstream, mirror_factory, layer_cache, tmp_path, tag_ttl=1)

    def pulls_new() -> bool:
        pull(ref, tmp_path / "b", cert_dir=mirror.trust)
        return (tmp_path / "b/manifest.json").read_bytes() == new.manifest
    wait_for(pulls_new, "a pull by tag to see the moved tag once the TTL has run out", timeout=120)
    assert_pulled_identical(tmp_path / "b", new)


def test_a_follower_gets_bytes_before_the_leaders_transfer_ends(upstream, wire_factory, mirror_factory, layer_cache):
    wire = wire_factory(upstream)
    layer = seed.random_layer(layer_cache, 16 * seed.MIB, 50)
    image = seed.build_image("team/slow", "1.0", [layer])
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False, rewriter={"blob_redirect": False})
    wire.behave(target="blobs", hold_after=seed.MIB)  # the upstream's one GET stops part-way until released
    host, port = mirror.cfg.rewriter.listen.host, mirror.cfg.rewriter.listen.port
    path = f"/v2/{image.name}/blobs/{layer.digest}"

    def open_stream():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return conn, resp
    leader_conn, leader = open_stream()
    leader_body = bytearray(leader.read(256 * 1024))
    follower_conn, follower = open_stream()
    follower_body = bytearray(follower.read(64 * 1024))
    assert follower.getheader("X-Mirror-Cache") == "COALESCED"
    assert wire.stats()["holding"] == 1  # the follower's bytes came while the upstream's GET was unfinished
    (transfer,) = mirror.stats()["transfers"]
    assert transfer["readers"] == 2 and transfer["received"] < layer.size
    wire.release()
    leader_body += leader.read()
    follower_body += follower.read()
    for conn in (leader_conn, follower_conn):
        conn.close()
    expected = layer.path.read_bytes()
    assert leader_body == expected and follower_body == expected
    mirror.settle(upstream)
    assert len([r for r in blob_gets(upstream.stats()) if r["status"] == 200]) == 1


def test_a_pulls_first_blob_request_brings_the_images_layers_before_it_asks_for_them(
        upstream, mirror_factory, layer_cache, tmp_path):
    image = small_image(layer_cache, name="team/ahead")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False, cache={"prefetch": True})
    ref = f"{mirror.address}/{image.name}:{image.tag}"
    # the manifest and the config, as a pull begins: the client asks for no layer
    subprocess.run(["skopeo", "inspect", "--cert-dir", str(mirror.trust), f"docker://{ref}"], check=True,
                   capture_output=True)
    wanted = sorted(b.digest for b in (image.config, *image.layers))

    def fetched() -> list[str]:
        return sorted(r["path"].rsplit("/", 1)[1] for r in blob_gets(upstream.stats()))
    wait_for(lambda: fetched() == wanted, "the layers fetched ahead of any request for them")
    pull(ref, tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    mirror.settle(upstream, image)
    assert fetched() == wanted  # the pull's requests (and the registry's second fetch) joined them: once each
