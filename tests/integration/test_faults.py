"""Deploys keep working when the upstream is down, slow or flaky; storage never holds a corrupt blob.

Each test: an image is pulled (cached), then a fault is injected into the upstream; pulls of the cached
image must succeed and stay fast, pulls of an uncached image must fail with a clear error within a bound
(or, for a reset, resume and succeed), and every blob in the mirror's storage must match its digest.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull

from .conftest import assert_pulled_identical, blob_gets, credentials_of, small_image, wait_until_quiet

STALE_BUDGET = 1.0
MIRROR_CACHE = {"tag_ttl": 0.5, "stale_budget": STALE_BUDGET}
MIRROR_UPSTREAM = {"request_timeout": 5, "connect_timeout": 2, "blob_stall_timeout": 2, "down_period": 30}


def assert_storage_intact(storage: Path) -> None:
    for data in (storage / "docker/registry/v2/blobs").glob("*/*/*/data"):
        digest = f"{data.parent.parent.parent.name}:{data.parent.name}"
        assert "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest() == digest, f"corrupt blob {digest}"


@pytest.fixture
def cached_setup(upstream, mirror_factory, layer_cache, tmp_path):
    cached = small_image(layer_cache, name="team/cached")
    uncached = small_image(layer_cache, name="team/uncached", seed_base=60)
    for image in (cached, uncached):
        seed.push(upstream.registry_url, image)
    mirror = mirror_factory({**credentials_of(upstream), **MIRROR_UPSTREAM}, dump=False, cache=MIRROR_CACHE)
    pull(f"{mirror.address}/{cached.name}:{cached.tag}", tmp_path / "warmup", cert_dir=mirror.trust)
    wait_until_quiet(upstream)
    time.sleep(0.6)  # past the tag TTL: every pull by tag now asks the upstream
    baseline = pull(f"{mirror.address}/{cached.name}:{cached.tag}", tmp_path / "baseline", cert_dir=mirror.trust)
    return upstream, mirror, cached, uncached, baseline


def pull_cached(mirror, image, tmp_path, label) -> float:
    by_tag = pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / f"{label}-tag", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / f"{label}-tag", image)
    by_digest = pull(f"{mirror.address}/{image.name}@{image.manifest_digest}", tmp_path / f"{label}-digest",
                     cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / f"{label}-digest", image)
    return max(by_tag, by_digest)


def expect_uncached_failure(mirror, image, tmp_path, within: float) -> str:
    started = time.monotonic()
    with pytest.raises(PullError) as e:
        pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "uncached", cert_dir=mirror.trust,
             timeout=within + 30)
    assert time.monotonic() - started < within
    return str(e.value)


@pytest.mark.parametrize("fault", [
    {"mode": "status", "code": 500}, {"mode": "status", "code": 502}, {"mode": "status", "code": 503},
    {"mode": "hang"}, "refused",
], ids=["500", "502", "503", "hung", "refused"])
def test_upstream_down_cached_pulls_stay_fast_uncached_fail_clearly(cached_setup, tmp_path, fault):
    upstream, mirror, cached, uncached, baseline = cached_setup
    if fault == "refused":
        upstream.stop()
    else:
        upstream.fault(**fault)
    first = pull_cached(mirror, cached, tmp_path, "first")
    assert first < baseline + STALE_BUDGET + 1.5  # the first pays at most the stale budget
    # then they stay fast: the median of three (one may still meet a refresh that started before)
    again = sorted(pull_cached(mirror, cached, tmp_path, f"again{n}") for n in range(3))
    assert again[1] < baseline + 1.0, again
    expect_uncached_failure(mirror, uncached, tmp_path, within=20)
    logs = mirror.logs()
    assert "STALE" in logs
    assert "failed" in logs or "assumed down" in logs  # the log names what went wrong
    assert_storage_intact(Path(mirror.cfg.mirror.storage))


def test_a_reset_in_the_middle_of_a_blob_resumes_with_a_range(cached_setup, tmp_path):
    upstream, mirror, cached, uncached, _ = cached_setup
    upstream.fault(mode="reset", target="blobs", after=seed.MIB, times=1)
    pull(f"{mirror.address}/{uncached.name}:{uncached.tag}", tmp_path / "resumed", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "resumed", uncached)
    wait_until_quiet(upstream)
    ranges = [r["range"] for r in blob_gets(upstream.stats()) if r["range"]]
    assert ranges == [f"bytes={seed.MIB}-"]
    assert "resuming (1 of 3)" in mirror.logs()
    assert_storage_intact(Path(mirror.cfg.mirror.storage))


def test_resets_on_every_attempt_fail_clearly_and_store_nothing(cached_setup, tmp_path):
    upstream, mirror, cached, uncached, baseline = cached_setup
    upstream.fault(mode="reset", target="blobs", after=256 * 1024)
    message = expect_uncached_failure(mirror, uncached, tmp_path, within=30)
    assert message
    assert "failed after" in mirror.logs() and "3 resumes" in mirror.logs()
    assert pull_cached(mirror, cached, tmp_path, "cached") < baseline + STALE_BUDGET + 1.5
    assert_storage_intact(Path(mirror.cfg.mirror.storage))


def test_a_slow_drip_trips_the_stall_timeout(cached_setup, tmp_path):
    upstream, mirror, cached, uncached, baseline = cached_setup
    upstream.fault(mode="drip", target="blobs", rate=16 * 1024)  # 64 KiB, then a 4 s pause, and so on
    expect_uncached_failure(mirror, uncached, tmp_path, within=45)
    upstream.fault()
    assert pull_cached(mirror, cached, tmp_path, "cached") < baseline + STALE_BUDGET + 1.5
    assert_storage_intact(Path(mirror.cfg.mirror.storage))


def test_wrong_bytes_for_a_digest_are_never_stored(cached_setup, tmp_path):
    upstream, mirror, cached, uncached, baseline = cached_setup
    upstream.fault(mode="corrupt", target="blobs")
    expect_uncached_failure(mirror, uncached, tmp_path, within=30)
    assert "do not match" in mirror.logs()
    assert pull_cached(mirror, cached, tmp_path, "cached") < baseline + 1.0
    assert_storage_intact(Path(mirror.cfg.mirror.storage))
    stored = {p.parent.name for p in Path(mirror.cfg.mirror.storage).glob("docker/registry/v2/blobs/*/*/*/data")}
    assert not any(layer.digest[7:] in stored for layer in uncached.layers)


def test_token_endpoint_down_uses_the_cached_token_then_fails_clearly(cached_setup, tmp_path):
    upstream, mirror, cached, uncached, baseline = cached_setup
    upstream.fault(mode="status", code=503, target="token")
    # the cached token still works: an uncached image of the same repository scope is not needed here
    assert pull_cached(mirror, cached, tmp_path, "cached") < baseline + 1.0
    upstream.control("revoke")  # the token dies; a new one cannot be had
    message = expect_uncached_failure(mirror, uncached, tmp_path, within=20)
    assert message
    assert "token endpoint answered 503" in mirror.logs()
    assert pull_cached(mirror, cached, tmp_path, "cached-after") < baseline + STALE_BUDGET + 1.5
    assert_storage_intact(Path(mirror.cfg.mirror.storage))


def test_the_mirror_restarts_while_the_upstream_is_down(cached_setup, mirror_factory, tmp_path):
    upstream, mirror, cached, uncached, baseline = cached_setup
    upstream.stop()
    mirror.mirror.stop()
    mirror.mirror.start()  # same configuration, storage and tag state file
    elapsed = pull_cached(mirror, cached, tmp_path, "restarted")
    assert elapsed < baseline + 1.0
    assert_storage_intact(Path(mirror.cfg.mirror.storage))
