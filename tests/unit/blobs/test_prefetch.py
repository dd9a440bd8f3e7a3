import asyncio
import hashlib
import json
from types import SimpleNamespace

from registry_mirror.blobs.coalesce import BlobCoalescer
from registry_mirror.blobs.prefetch import Prefetcher, image_blobs
from registry_mirror.blobs.transfers import UpstreamHead
from registry_mirror.free_space import DiskWatch
from registry_mirror.storage.layout import V2, blob_data
from tests.unit.blobs.test_coalesce import DATA, DIGEST, collect, make_fetch
from tests.unit.support.buckets import FakeBucket
from tests.unit.support.clocks import Clock
from tests.unit.support.waits import until

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


CONFIG, BASE, APP = digest("config"), digest("base"), digest("app")


def manifest(*layers: dict, config: str = CONFIG, config_size: int = 10) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": DOCKER_V2, "config": {"digest": config, "size": config_size},
                       "layers": list(layers)}).encode()


def test_an_image_manifest_names_its_config_then_its_layers_in_order():
    body = manifest({"digest": BASE, "size": 5}, {"digest": APP, "size": 3}, {"digest": BASE, "size": 5})
    assert image_blobs(body, DOCKER_V2) == [(CONFIG, 10), (BASE, 5), (APP, 3)]
    assert image_blobs(body, DOCKER_V2 + "; charset=utf-8") == image_blobs(body, DOCKER_V2)


def test_foreign_layers_bad_digests_and_other_documents_name_nothing_to_fetch():
    foreign = {"digest": APP, "size": 3, "urls": ["https://example.invalid/layer"]}
    assert image_blobs(manifest({"digest": BASE}, foreign, {"digest": "sha256:../../etc"}), DOCKER_V2) == \
        [(CONFIG, 10), (BASE, 0)]
    assert image_blobs(json.dumps({"schemaVersion": 2, "manifests": [{"digest": BASE}]}).encode(), OCI_INDEX) == []
    assert image_blobs(b"not json", DOCKER_V2) == []
    assert image_blobs(b"[1, 2]", DOCKER_V2) == []
    assert image_blobs(json.dumps({"schemaVersion": 2, "layers": "no"}).encode(), DOCKER_V2) == []


async def test_a_held_transfer_waits_for_its_first_request_then_expires_like_any_other(tmp_path):
    clock, calls = Clock(), []
    c = BlobCoalescer(make_fetch(DATA, calls=calls), str(tmp_path), keep_seconds=10, timer=clock,
                      hold_seconds=600)
    held = c.hold(DIGEST, "app")
    await held.verdict()
    clock.now = 599  # long past keep_seconds: nobody has asked yet, so it stays
    c._expire()
    assert DIGEST in c.transfers and held.path.exists()
    peer, _ = c.join(DIGEST, "app", take_hold=False)  # another replica reading: the hold stays
    assert await collect(c, peer) == DATA and held.held
    transfer, following = c.join(DIGEST, "app")
    assert transfer is held and not following and transfer.served == 2  # the first request, served from it
    assert await collect(c, transfer) == DATA
    clock.now = 599 + 9  # the registry's second fetch of it still finds it
    c._expire()
    assert DIGEST in c.transfers and held.path.exists()
    clock.now = 599 + 10
    c._expire()
    assert DIGEST not in c.transfers and not held.path.exists()
    assert calls == [DIGEST]  # fetched once, by the hold


async def test_a_held_transfer_nobody_asks_for_goes_after_hold_seconds_or_when_the_spool_is_over_its_bound(tmp_path):
    clock = Clock()
    c = BlobCoalescer(make_fetch(DATA), str(tmp_path / "a"), keep_seconds=10, timer=clock, hold_seconds=600)
    held = c.hold(DIGEST, "app")
    await held.verdict()
    clock.now = 600
    c._expire()
    assert DIGEST not in c.transfers and not held.path.exists()

    bounded = BlobCoalescer(make_fetch(DATA), str(tmp_path / "b"), keep_seconds=10, timer=clock,
                            hold_seconds=600, max_spool_bytes=len(DATA) - 1)
    held = bounded.hold(DIGEST, "app")
    await held.verdict()
    bounded._expire()
    assert DIGEST not in bounded.transfers


class FakeFetch:
    """Blobs of 1 MiB each, their fetch held until the test lets it go; records the order of the fetches."""

    def __init__(self, blobs: dict[str, bytes]):
        self.blobs, self.calls, self.gates = blobs, [], {d: asyncio.Event() for d in blobs}

    async def __call__(self, transfer):
        self.calls.append(transfer.digest)
        data = self.blobs[transfer.digest]
        transfer.size = len(data)
        transfer.head.set_result(UpstreamHead(200, {}))
        await self.gates[transfer.digest].wait()
        yield data


async def test_once_one_blob_is_asked_for_the_others_are_fetched_one_after_another_skipping_those_stored(tmp_path):
    blobs = {d: d.encode() * 1000 for d in (CONFIG, BASE, APP, "stored")}
    blobs = {"sha256:" + hashlib.sha256(v).hexdigest(): v for v in blobs.values()}
    config, base, app, stored = blobs
    fetch = FakeFetch(blobs)
    storage = tmp_path / "storage"
    (storage / V2 / blob_data(stored)).parent.mkdir(parents=True)
    (storage / V2 / blob_data(stored)).write_bytes(blobs[stored])
    c = BlobCoalescer(fetch, str(tmp_path / "spool"))
    prefetch = Prefetcher(c, storage)
    route = SimpleNamespace(health=SimpleNamespace(down=False))
    body = manifest({"digest": stored}, {"digest": base}, {"digest": app}, config=config)
    prefetch.manifest_served("team/app", route, body, DOCKER_V2)
    prefetch.blob_requested(digest("unrelated"))  # a blob of no manifest the registry fetched: nothing
    assert not prefetch._tasks and not c.transfers
    prefetch.blob_requested(config)  # a pull has begun (with the config, or a layer: the others come next)
    assert not prefetch._image_of and not prefetch._pending  # once per manifest served
    await until(lambda: fetch.calls == [config], "the config fetched (no request has joined it here)")
    fetch.gates[config].set()
    await until(lambda: fetch.calls == [config, base], "the first layer fetched, the stored one skipped")
    assert app not in c.transfers  # the next waits until the one before it has crossed
    fetch.gates[base].set()
    await until(lambda: fetch.calls == [config, base, app], "the second layer fetched after the first")
    fetch.gates[app].set()
    await c.transfers[app].verdict()
    assert all(c.transfers[d].held and c.transfers[d].verified for d in (base, app))
    await prefetch.close()
    await c.close()


async def test_nothing_is_fetched_ahead_while_the_upstream_is_down_for_an_index_or_beyond_the_spools_bound(tmp_path):
    fetch = FakeFetch({})
    c = BlobCoalescer(fetch, str(tmp_path / "spool"), max_spool_bytes=100)
    prefetch = Prefetcher(c, None)
    down = SimpleNamespace(health=SimpleNamespace(down=True))
    up = SimpleNamespace(health=SimpleNamespace(down=False))
    prefetch.manifest_served("team/app", down, manifest({"digest": BASE}), DOCKER_V2)
    prefetch.blob_requested(CONFIG)
    prefetch.manifest_served("team/app", up, json.dumps({"schemaVersion": 2, "manifests": [
        {"digest": CONFIG}, {"digest": BASE}]}).encode(), OCI_INDEX)
    prefetch.blob_requested(CONFIG)
    assert not prefetch._tasks
    prefetch.manifest_served("team/app", up, manifest({"digest": BASE}, config_size=101), DOCKER_V2)
    prefetch.blob_requested(BASE)  # the config first, but 101 bytes do not fit a 100-byte spool
    await asyncio.gather(*prefetch._tasks)
    assert not c.transfers and fetch.calls == []
    await c.close()


async def test_nothing_is_fetched_ahead_under_the_free_space_reserve(tmp_path):
    """A full disk refuses what clients ask for; fetching ahead would spend the reserve that cached tags need."""
    fetch = FakeFetch({})
    c = BlobCoalescer(fetch, str(tmp_path / "spool"))
    full = SimpleNamespace(f_bavail=10, f_frsize=4096, f_blocks=1000)  # 40 KiB free
    disk = DiskWatch(1024 * 1024, {"storage": str(tmp_path), "spool": str(tmp_path)}, statvfs=lambda path: full)
    prefetch = Prefetcher(c, None, disk)
    up = SimpleNamespace(health=SimpleNamespace(down=False))
    prefetch.manifest_served("team/app", up, manifest({"digest": BASE}), DOCKER_V2)
    prefetch.blob_requested(BASE)
    await asyncio.gather(*prefetch._tasks)
    assert not c.transfers and fetch.calls == [] and disk.refused == 1
    await c.close()


async def test_on_a_bucket_the_blobs_it_holds_are_not_fetched_ahead(tmp_path):
    blobs = {d: d.encode() * 1000 for d in (CONFIG, BASE, "in the bucket")}
    blobs = {"sha256:" + hashlib.sha256(v).hexdigest(): v for v in blobs.values()}
    config, base, held = blobs
    fetch = FakeFetch(blobs)
    c = BlobCoalescer(fetch, str(tmp_path / "spool"))
    prefetch = Prefetcher(c, None, bucket=FakeBucket({held: blobs[held]}))
    route = SimpleNamespace(health=SimpleNamespace(down=False))
    prefetch.manifest_served("team/app", route, manifest({"digest": held}, {"digest": base}, config=config), DOCKER_V2)
    prefetch.blob_requested(config)
    await until(lambda: fetch.calls == [config], "the config fetched")
    fetch.gates[config].set()
    await until(lambda: fetch.calls == [config, base], "the layer the bucket lacks fetched, the one it holds skipped")
    fetch.gates[base].set()
    await c.transfers[base].verdict()
    assert held not in c.transfers
    await prefetch.close()
    await c.close()
