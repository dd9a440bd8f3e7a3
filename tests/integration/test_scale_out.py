"""Scale-out inside a data center: two replicas (stock registry + addon each) sharing one storage folder and
a real redis-server, for one lock per digest in flight."""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull
from registry_mirror.storage.inventory import Image, inventory
from registry_mirror.storage.store import FolderStore

from .conftest import MIRROR_COMMAND, assert_pulled_identical, blob_gets, credentials_of, small_image, wait_for


def shared_keys(shared_storage: str, tmp_path, request, redis_server) -> dict:
    """mirror_factory's keys for a replica sharing a storage folder, or the object store's bucket, and redis."""
    storage = {"storage": tmp_path / "shared-storage"} if shared_storage == "folder" else \
        {"bucket": request.getfixturevalue("store")}
    return {**storage, "scale": {"redis": redis_server.address, "listen": "127.0.0.1"}}


@pytest.mark.parametrize("shared_storage", ["folder", "bucket"])
def test_two_replicas_pulling_at_once_fetch_each_layer_once(upstream, wire_factory, mirror_factory, redis_server,
                                                             layer_cache, tmp_path, request, shared_storage):
    """The replicas share a storage folder, or an object store's bucket (mirror.s3)."""
    wire = wire_factory(upstream)
    image = small_image(layer_cache, name="scale/app", seed_base=50)
    seed.push(upstream.registry_url, image)
    # spools kept long: a replica that comes late reads the finished spool, whatever this machine's speed
    shared = {**shared_keys(shared_storage, tmp_path, request, redis_server), "cache": {"spool_keep": 600}}
    replicas = [mirror_factory(credentials_of(upstream, via=wire), **shared) for _ in range(2)]
    wire.behave(target="blobs", hold_after=512 * 1024)  # the larger layers stop part-way: both replicas ask

    def pull_through(i: int) -> float:
        return pull(f"{replicas[i].address}/{image.name}:{image.tag}", tmp_path / f"machine{i}",
                    cert_dir=replicas[i].trust)
    with ThreadPoolExecutor(2) as pool:
        pulls = [pool.submit(pull_through, i) for i in range(2)]
        wait_for(lambda: any(t["from"] != "upstream" for r in replicas for t in r.stats()["transfers"]),
                 "one replica reading a layer from the other's spool while it is fetched")
        wire.release()
        for done in pulls:
            done.result(timeout=300)
    for i in range(2):
        assert_pulled_identical(tmp_path / f"machine{i}", image)
    for replica in replicas:
        replica.settle(upstream, image)

    # four stock-registry fetches per blob (two replicas x the double fetch), one upstream GET
    digests = sorted(r["path"].rsplit("/", 1)[1] for r in blob_gets(upstream.stats()))
    assert digests == sorted(b.digest for b in (*image.layers, image.config))
    logs = replicas[0].logs() + replicas[1].logs()
    assert "from replica http://127.0.0.1:" in logs and "blob PEER" in logs

    # a third machine on either replica: the shared storage answers, nothing crosses to the upstream
    upstream.control("reset")
    pull(f"{replicas[1].address}/{image.name}@{image.manifest_digest}", tmp_path / "machine2",
         cert_dir=replicas[1].trust)
    assert_pulled_identical(tmp_path / "machine2", image)
    assert blob_gets(upstream.stats()) == []


def test_replicas_keep_serving_when_redis_is_gone(upstream_factory, mirror_factory, redis_server, layer_cache,
                                                   tmp_path):
    """Without redis each replica coalesces on its own: pulls work, the WAN may see a layer once per replica."""
    upstream = upstream_factory()
    image = small_image(layer_cache, name="scale/lonely", seed_base=60)
    seed.push(upstream.registry_url, image)
    replica = mirror_factory(credentials_of(upstream), scale={"redis": redis_server.address, "listen": "127.0.0.1"})
    redis_server.stop()
    pull(f"{replica.address}/{image.name}:{image.tag}", tmp_path / "pulled", cert_dir=replica.trust)
    assert_pulled_identical(tmp_path / "pulled", image)
    assert "this replica fetches on its own" in replica.logs()


@pytest.mark.parametrize("shared_storage", ["folder", "bucket"])
def test_a_replica_dying_mid_transfer_leaves_the_others_to_the_upstream(upstream, wire_factory, mirror_factory,
                                                                        redis_server, layer_cache, tmp_path, request,
                                                                        shared_storage):
    """B reads a layer from A's spool; A's addon is killed half-way; B's pull still completes, the rest of the
    layer fetched from the upstream with a Range request."""
    wire = wire_factory(upstream)
    image = small_image(layer_cache, name="scale/fragile", seed_base=70)
    seed.push(upstream.registry_url, image)
    shared = shared_keys(shared_storage, tmp_path, request, redis_server)
    a, b = (mirror_factory(credentials_of(upstream, via=wire), **shared) for _ in range(2))
    ref = f"{image.name}:{image.tag}"
    wire.behave(target="blobs", hold_after=seed.MIB, hold_times=1)  # A's 3 MiB layer stops at 1 MiB
    with ThreadPoolExecutor(2) as pool:
        pull_a = pool.submit(pull, f"{a.address}/{ref}", tmp_path / "via-a", cert_dir=a.trust)
        wait_for(lambda: wire.stats()["holding"] == 1, "A's upstream GET of the first layer to stop part-way")
        pull_b = pool.submit(pull, f"{b.address}/{ref}", tmp_path / "via-b", cert_dir=b.trust)
        wait_for(lambda: any(t["from"] != "upstream" and t["received"] for t in b.stats()["transfers"]),
                 "B reading A's spool")
        a.mirror.mitm.kill()
        wire.release()  # A's held answer meets its closed connection and ends
        pull_b.result(timeout=300)
        with pytest.raises(PullError):
            pull_a.result(timeout=300)
    assert_pulled_identical(tmp_path / "via-b", image)
    assert "the upstream sends the rest" in b.logs()
    assert any(r["range"].startswith("bytes=") and r["range"] != "bytes=0-"
               for r in blob_gets(upstream.settled_stats()))


def test_a_tag_forgotten_through_one_replica_is_not_served_by_the_other(upstream, mirror_factory, redis_server,
                                                                       layer_cache, tmp_path):
    """A forgets a tag (the shared storage and its caches) and tells B through redis: B drops it from its caches,
    so with the upstream failing B answers not found, instead of its cached manifest (which its registry would
    store again). With redis gone a forget still acts, and says the others were not told."""
    image = small_image(layer_cache, name="scale/leaked", seed_base=80)
    seed.push(upstream.registry_url, image)
    shared = {"storage": tmp_path / "shared-storage", "scale": {"redis": redis_server.address, "listen": "127.0.0.1"}}
    a, b = (mirror_factory(credentials_of(upstream), **shared) for _ in range(2))
    ref = f"{image.name}:{image.tag}"
    for name, replica in (("via-a", a), ("via-b", b)):
        pull(f"{replica.address}/{ref}", tmp_path / name, cert_dir=replica.trust)
        replica.settle(upstream, image)
    assert sum(n for k, n in b.counters().items() if k.startswith("manifest-by-tag:")) > 0  # B's caches hold it
    wait_for(lambda: b.stats()["scale"]["invalidations"]["subscribed"], "B subscribed to the others' forgets")

    forget = [MIRROR_COMMAND, "--config", a.cfg.source, "forget", ref]
    done = subprocess.run(forget, capture_output=True, text=True)
    assert done.returncode == 0 and f"forgot {image.name}@{image.manifest_digest}" in done.stdout
    assert "told 1 other replica to drop it from their caches" in done.stdout
    wait_for(lambda: b.stats()["scale"]["invalidations"]["received"] == 1, "B dropping A's forget from its caches")
    assert f"forgot {ref}" in b.logs()

    upstream.fault(mode="status", code=503)  # B's cached manifest would be answered now, stale if need be
    with pytest.raises(PullError, match="manifest unknown"):
        pull(f"{b.address}/{ref}", tmp_path / "gone", cert_dir=b.trust)
    with pytest.raises(PullError):
        pull(f"{b.address}/{image.name}@{image.manifest_digest}", tmp_path / "gone", cert_dir=b.trust)
    assert Image(image.name, image.manifest_digest) not in inventory(FolderStore(b.storage)).images  # not stored again

    redis_server.stop()
    again = subprocess.run(forget, capture_output=True, text=True)
    assert again.returncode == 0 and "the other replicas could not be told" in again.stdout
