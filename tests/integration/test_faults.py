"""Deploys keep working when the upstream is down, slow or flaky; storage never holds a corrupt blob.

Each test: an image is pulled (cached), then a fault is injected into the upstream; pulls of the cached
image must succeed (counted as stale answers where the tag could not be refreshed), pulls of an uncached
image must fail with a clear error, never hang (or, for a reset, resume and succeed), and every blob in the
mirror's storage must match its digest.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull

from .conftest import (
    assert_pulled_identical,
    assert_storage_intact,
    blob_gets,
    credentials_of,
    small_image,
    stored_digests,
)

# no tag TTL: every pull by tag asks the upstream, so a faulted one takes the stale path, never a cache HIT
MIRROR_CACHE = {"tag_ttl": 0, "stale_budget": 1.0}
# timeouts only an upstream that never answers can reach; the stall timeout is tripped by a held blob
MIRROR_UPSTREAM = {"request_timeout": 10, "connect_timeout": 5, "blob_stall_timeout": 2, "down_period": 30}
PULL_DEADLINE = 120  # a pull that has not failed by then has hung: that fails the test too


@pytest.fixture
def cached_setup(upstream, mirror_factory, layer_cache, tmp_path):
    cached = small_image(layer_cache, name="team/cached")
    uncached = small_image(layer_cache, name="team/uncached", seed_base=60)
    for image in (cached, uncached):
        seed.push(upstream.registry_url, image)
    mirror = mirror_factory({**credentials_of(upstream), **MIRROR_UPSTREAM}, dump=False, cache=MIRROR_CACHE)
    pull(f"{mirror.address}/{cached.name}:{cached.tag}", tmp_path / "warmup", cert_dir=mirror.trust)
    mirror.settle(upstream, cached)
    upstream.control("reset")
    return upstream, mirror, cached, uncached


def pull_by_tag(mirror, image, dest: Path) -> None:
    pull(f"{mirror.address}/{image.name}:{image.tag}", dest, cert_dir=mirror.trust, timeout=PULL_DEADLINE)
    assert_pulled_identical(dest, image)


def expect_uncached_failure(mirror, image, tmp_path) -> str:
    with pytest.raises(PullError) as e:
        pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "uncached", cert_dir=mirror.trust,
             timeout=PULL_DEADLINE)
    assert "did not finish within" not in str(e.value), "the pull hung instead of failing"
    return str(e.value)


@pytest.mark.mtu1500
@pytest.mark.parametrize("fault", [
    {"mode": "status", "code": 500}, {"mode": "status", "code": 502}, {"mode": "status", "code": 503},
    {"mode": "hang"}, "refused",
], ids=["500", "502", "503", "hung", "refused"])
def test_upstream_down_cached_pulls_are_served_stale_uncached_fail_clearly(cached_setup, tmp_path, fault):
    upstream, mirror, cached, uncached = cached_setup
    if fault == "refused":
        upstream.stop()
    else:
        upstream.fault(target="manifests", **fault)  # the token endpoint's outage has its own test
    before = mirror.counters()
    for n in range(3):
        pull_by_tag(mirror, cached, tmp_path / f"cached{n}")
    after = mirror.counters()
    # each pull by tag was answered from the tag's last known digest, none from a cache within a TTL
    assert after.get("manifest-by-tag:stale", 0) - before.get("manifest-by-tag:stale", 0) >= 3, after
    assert after.get("manifest-by-tag:hit", 0) == before.get("manifest-by-tag:hit", 0)
    expect_uncached_failure(mirror, uncached, tmp_path)
    assert mirror.counters().get("manifest-by-tag:error", 0) >= 1
    upstream_state = mirror.stats()["upstream"]
    assert upstream_state["last_error"], "the stats page names what went wrong"
    if fault != "refused":
        assert fault["mode"] == "hang" or any(
            r["status"] == fault["code"] for r in upstream.stats()["requests"] if "/manifests/" in r["path"])
        assert blob_gets(upstream.stats()) == []  # every blob came from the mirror's storage
    assert not {b.digest for b in uncached.layers} & stored_digests(mirror.storage)
    assert_storage_intact(mirror.storage)


def test_a_reset_in_the_middle_of_a_blob_resumes_with_a_range(cached_setup, tmp_path):
    upstream, mirror, cached, uncached = cached_setup
    upstream.fault(mode="reset", target="blobs", after=seed.MIB, times=1)
    pull_by_tag(mirror, uncached, tmp_path / "resumed")
    mirror.settle(upstream, uncached)
    ranges = [r["range"] for r in blob_gets(upstream.stats()) if r["range"]]
    assert ranges == [f"bytes={seed.MIB}-"]
    assert "resuming (1 of 3)" in mirror.logs()
    assert_storage_intact(mirror.storage)


def test_resets_on_every_attempt_fail_clearly_and_store_nothing(cached_setup, tmp_path):
    upstream, mirror, cached, uncached = cached_setup
    upstream.fault(mode="reset", target="blobs", after=256 * 1024)
    assert expect_uncached_failure(mirror, uncached, tmp_path)
    assert "failed after" in mirror.logs() and "3 resumes" in mirror.logs()
    pull_by_tag(mirror, cached, tmp_path / "cached")
    assert_storage_intact(mirror.storage)


def test_a_stalled_blob_trips_the_stall_timeout(upstream, wire_factory, mirror_factory, layer_cache, tmp_path):
    """An upstream that stops sending a blob part-way, for good: the stall timeout ends it, nothing is stored."""
    wire = wire_factory(upstream)
    cached = small_image(layer_cache, name="team/cached")
    uncached = small_image(layer_cache, name="team/uncached", seed_base=60)
    for image in (cached, uncached):
        seed.push(upstream.registry_url, image)
    mirror = mirror_factory({**credentials_of(upstream, via=wire), **MIRROR_UPSTREAM}, dump=False, cache=MIRROR_CACHE)
    pull_by_tag(mirror, cached, tmp_path / "warmup")
    wire.behave(target="blobs", hold_after=64 * 1024)  # never released: the resumes stall too
    expect_uncached_failure(mirror, uncached, tmp_path)
    assert "3 resumes" in mirror.logs()
    assert wire.stats()["held"] >= 4  # the first GET and its three resumes
    wire.behave()
    pull_by_tag(mirror, cached, tmp_path / "cached")
    assert not {b.digest for b in uncached.layers if b.size > 64 * 1024} & stored_digests(mirror.storage)
    assert_storage_intact(mirror.storage)


def test_wrong_bytes_for_a_digest_are_never_stored(cached_setup, tmp_path):
    upstream, mirror, cached, uncached = cached_setup
    upstream.fault(mode="corrupt", target="blobs")
    expect_uncached_failure(mirror, uncached, tmp_path)
    assert "do not match" in mirror.logs()
    pull_by_tag(mirror, cached, tmp_path / "cached")
    assert_storage_intact(mirror.storage)
    assert not {layer.digest for layer in uncached.layers} & stored_digests(mirror.storage)


def test_token_endpoint_down_uses_the_cached_token_then_fails_clearly(cached_setup, tmp_path):
    upstream, mirror, cached, uncached = cached_setup
    upstream.fault(mode="status", code=503, target="token")
    # the cached token still works: the tag is refreshed, not answered stale
    pull_by_tag(mirror, cached, tmp_path / "cached")
    assert mirror.counters().get("manifest-by-tag:stale", 0) == 0
    upstream.control("revoke")  # the token dies; a new one cannot be had
    assert expect_uncached_failure(mirror, uncached, tmp_path)
    assert "token endpoint answered 503" in mirror.logs()
    pull_by_tag(mirror, cached, tmp_path / "cached-after")
    assert mirror.counters().get("manifest-by-tag:stale", 0) >= 1
    assert_storage_intact(mirror.storage)


def test_the_mirror_restarts_while_the_upstream_is_down(cached_setup, tmp_path):
    upstream, mirror, cached, uncached = cached_setup
    upstream.stop()
    mirror.mirror.stop()
    mirror.mirror.start()  # same configuration, storage and tag state file
    pull_by_tag(mirror, cached, tmp_path / "restarted")
    # a fresh addon knew the tag only from its state file
    assert mirror.counters().get("manifest-by-tag:stale", 0) >= 1
    assert_storage_intact(mirror.storage)
