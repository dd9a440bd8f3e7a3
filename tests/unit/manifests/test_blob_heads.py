"""Cached blob HEADs expire after `cache.blob_head_ttl`, and a verified transfer drops any that contradict it."""
import asyncio

from registry_mirror.config.load import CacheConfig
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.manifests.service import ManifestService
from registry_mirror.oci.registry_requests import classify
from registry_mirror.stats.counters import Stats
from tests.unit.manifests.test_service import Clock, FakeUpstream, headers, manifest_service

BLOB = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64  # FakeUpstream says every blob is 42 bytes


def service(ttl: float = 3600.0):
    up, clock, stats = FakeUpstream(), Clock(), Stats()
    return manifest_service(up, CacheConfig(blob_head_ttl=ttl), clock, stats=stats), up, clock, stats


def head(svc: ManifestService, name: str, digest: str = BLOB) -> str:
    return asyncio.run(svc.answer(classify("HEAD", f"/v2/{name}/blobs/{digest}"), headers(), "HEAD")).outcome


def test_a_cached_head_expires_after_the_ttl():
    svc, up, clock, _ = service(ttl=3600)
    assert [head(svc, "app"), head(svc, "app")] == ["MISS", "HIT"]
    clock.now = 3599.0
    assert head(svc, "app") == "HIT"
    clock.now = 3600.0
    assert head(svc, "app") == "MISS" and len(up.calls) == 2


def test_a_zero_ttl_never_caches_heads():
    svc, up, _, _ = service(ttl=0)
    assert [head(svc, "app"), head(svc, "app")] == ["MISS", "MISS"] and len(up.calls) == 2
    svc.blob_verified(BLOB, 41)  # nothing cached: nothing to drop
    assert svc.stats.cache_dropped_inconsistent == 0


def test_the_default_ttl_is_an_hour():
    assert CacheConfig().blob_head_ttl == 3600.0


def test_a_verified_size_that_matches_keeps_the_cached_heads():
    svc, up, _, stats = service()
    head(svc, "app"), head(svc, "team/app")
    svc.blob_verified(BLOB, 42)
    assert [head(svc, "app"), head(svc, "team/app")] == ["HIT", "HIT"]
    assert stats.cache_dropped_inconsistent == 0 and len(up.calls) == 2


def test_a_verified_size_that_differs_drops_every_cached_head_of_that_digest():
    svc, up, _, stats = service()
    head(svc, "app"), head(svc, "team/app"), head(svc, "app", OTHER)
    assert len(svc.blob_heads) == 3
    svc.blob_verified(BLOB, 43)
    assert stats.cache_dropped_inconsistent == 2 and len(svc.blob_heads) == 1
    assert stats.snapshot()["integrity"]["cache_dropped_inconsistent"] == 2
    assert head(svc, "app", OTHER) == "HIT"  # another digest is untouched
    assert [head(svc, "app"), head(svc, "team/app")] == ["MISS", "MISS"] and len(up.calls) == 5
    svc.blob_verified(BLOB, 43)  # the new HEADs say 42 again: dropped again, counted again
    assert stats.cache_dropped_inconsistent == 4


def test_an_expired_head_is_not_counted_as_dropped():
    svc, _, clock, stats = service(ttl=10)
    head(svc, "app")
    clock.now = 11.0
    svc.blob_verified(BLOB, 43)
    assert stats.cache_dropped_inconsistent == 0


def test_the_digest_index_finds_heads_without_a_scan_and_stays_bounded():
    clock = Clock()
    heads = BlobHeads(ttl=10, timer=clock, maxsize=4)
    for n in range(40):  # ten times the cache's size, most expired or evicted by now
        clock.now = float(n)
        heads.put(f"repo{n}", f"sha256:{n % 7}", {"Content-Length": "42"})
    assert len(heads) == 4
    assert sum(map(len, heads._names.values())) <= 2 * 4  # what the index holds, stale names included
    assert heads.drop_other_sizes("sha256:3", 41) == 1  # repo38 is the one live HEAD of sha256:3 (n % 7 == 3)
    assert heads.get("repo38", "sha256:3") is None and heads.get("repo39", "sha256:4") is not None
    assert "sha256:3" not in heads._names  # nothing left of it to find
