"""Cached blob HEADs expire after `cache.blob_head_ttl`, and a verified size drops any that contradict it (what
blobs/fill.py does after every verified transfer; its test checks the count and the log)."""
from registry_mirror.config.load import CacheConfig
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.manifests.service import ManifestService
from registry_mirror.oci.registry_requests import classify
from registry_mirror.stats.counters import Stats
from tests.unit.manifests.test_service import FakeUpstream, headers, manifest_service
from tests.unit.support.clocks import Clock

BLOB = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64  # FakeUpstream says every blob is 42 bytes


def service(ttl: float = 3600.0):
    up, clock, stats = FakeUpstream(), Clock(), Stats()
    return manifest_service(up, CacheConfig(blob_head_ttl=ttl), clock, stats=stats), up, clock, stats


async def head(svc: ManifestService, name: str, digest: str = BLOB) -> str:
    return (await svc.answer(classify("HEAD", f"/v2/{name}/blobs/{digest}"), headers(), "HEAD")).outcome


async def test_a_cached_head_expires_after_the_ttl():
    svc, up, clock, _ = service(ttl=3600)
    assert [await head(svc, "app"), await head(svc, "app")] == ["MISS", "HIT"]
    clock.now = 3599.0
    assert await head(svc, "app") == "HIT"
    clock.now = 3600.0
    assert await head(svc, "app") == "MISS" and len(up.calls) == 2


async def test_a_zero_ttl_never_caches_heads():
    svc, up, _, _ = service(ttl=0)
    assert [await head(svc, "app"), await head(svc, "app")] == ["MISS", "MISS"] and len(up.calls) == 2
    assert svc.blob_heads.drop_other_sizes(BLOB, 41) == 0  # nothing cached: nothing to drop


def test_the_default_ttl_is_an_hour():
    assert CacheConfig().blob_head_ttl == 3600.0


async def test_a_verified_size_that_matches_keeps_the_cached_heads():
    svc, up, _, stats = service()
    await head(svc, "app"), await head(svc, "team/app")
    assert svc.blob_heads.drop_other_sizes(BLOB, 42) == 0
    assert [await head(svc, "app"), await head(svc, "team/app")] == ["HIT", "HIT"] and len(up.calls) == 2


async def test_a_verified_size_that_differs_drops_every_cached_head_of_that_digest():
    svc, up, _, stats = service()
    await head(svc, "app"), await head(svc, "team/app"), await head(svc, "app", OTHER)
    assert len(svc.blob_heads) == 3
    assert svc.blob_heads.drop_other_sizes(BLOB, 43) == 2 and len(svc.blob_heads) == 1
    assert await head(svc, "app", OTHER) == "HIT"  # another digest is untouched
    assert [await head(svc, "app"), await head(svc, "team/app")] == ["MISS", "MISS"] and len(up.calls) == 5
    assert svc.blob_heads.drop_other_sizes(BLOB, 43) == 2  # the new HEADs say 42 again: dropped again


async def test_an_expired_head_is_not_counted_as_dropped():
    svc, _, clock, stats = service(ttl=10)
    await head(svc, "app")
    clock.now = 11.0
    assert svc.blob_heads.drop_other_sizes(BLOB, 43) == 0


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
