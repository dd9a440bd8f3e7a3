"""The mirror owns expiry: the stock registry never deletes, images not pulled for `mirror.max_age` go with
their links first and shared blob data only when no repository needs it, and `mirror.max_bytes` holds; on a
folder and on a bucket of a real object store (SeaweedFS) alike.

No test waits a week: the state is brought forward while the mirror is stopped (the registry's
scheduler-state.json, the mirror's last pulls), and the real processes act on it when they start."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from devtools import seed
from devtools.skopeo import pull

from .conftest import Stored, assert_pulled_identical, blob_gets, credentials_of, stored_digests, wait_for


def sharing_images(layer_cache) -> tuple[seed.Image, seed.Image]:
    base = seed.random_layer(layer_cache, 2 * seed.MIB, 80)
    a = seed.build_image("team/a", "1.0", [base, seed.random_layer(layer_cache, seed.MIB, 81)])
    b = seed.build_image("team/b", "1.0", [base, seed.random_layer(layer_cache, seed.MIB, 82)])
    return a, b


def pull_all(mirror, tmp_path, *images, label="") -> None:
    for image in images:
        dest = tmp_path / f"{label}{image.name.replace('/', '-')}"
        pull(f"{mirror.address}/{image.name}:{image.tag}", dest, cert_dir=mirror.trust)
        assert_pulled_identical(dest, image)


def blobs_of(image: seed.Image) -> set[str]:
    return {blob.digest for blob in (*image.layers, image.config)}


def storage_state(mirror) -> dict:
    return mirror.stats()["storage"]


def read_schedule(path) -> dict | None:
    """The registry's expiry schedule, or None while it is missing or half-written (it rewrites it every 5 s)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_the_registrys_own_expiry_deletes_nothing_another_repository_needs(upstream, mirror_factory, layer_cache,
                                                                           tmp_path):
    """The reproduction: A's scheduler entries moved into the past while the mirror is stopped."""
    a, b = sharing_images(layer_cache)
    for image in (a, b):
        seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False)
    pull_all(mirror, tmp_path, a, b)
    mirror.settle(upstream, a, b)
    schedule = mirror.storage / "scheduler-state.json"
    wait_for(lambda: any(k.startswith("team/a@") for k in read_schedule(schedule) or {}),
             "the registry to write its expiry schedule (every 5 s)")
    mirror.mirror.stop()
    entries = json.loads(schedule.read_text())
    past = (datetime.now(timezone.utc) - timedelta(days=8)).isoformat()
    moved = [key for key in entries if key.startswith("team/a@")]
    for key in moved:
        entries[key]["ExpiryData"] = past
    schedule.write_text(json.dumps(entries))
    mirror.mirror.start()
    # the registry drops an entry once its expiry has run, whatever it did (the file is written every 5 s)
    wait_for(lambda: (now := read_schedule(schedule)) is not None and not set(moved) & set(now),
             "the registry to run the expiries due")
    assert blobs_of(a) | blobs_of(b) <= stored_digests(mirror.storage)  # nothing deleted
    upstream.control("reset")
    pull_all(mirror, tmp_path, b, label="after-")
    assert blob_gets(upstream.settled_stats()) == []


def test_an_image_not_pulled_for_max_age_goes_and_what_others_share_stays(upstream, mirror_factory, layer_cache,
                                                                         tmp_path, bucket):
    a, b = sharing_images(layer_cache)
    for image in (a, b):
        seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False, mirror_keys={"max_age": "7d"}, bucket=bucket)
    stored = Stored(mirror, bucket)
    pull_all(mirror, tmp_path, a, b)
    mirror.settle(upstream, a, b)
    wait_for(lambda: storage_state(mirror)["pulls_notified"] >= 2, "the registry's pull notifications")
    mirror.mirror.stop()
    files = stored.pull_files()
    assert files, "no last pulls written"
    for name, data in files.items():  # A last pulled eight days ago; B stays as pulled now
        rows = json.loads(data)["pulls"]
        for row in rows:
            if row[0] == a.name:
                row[2] -= 8 * 86400
        stored.write_pull_file(name, json.dumps({"pulls": rows}).encode())
    mirror.mirror.start()  # a pass runs at start
    wait_for(lambda: storage_state(mirror)["images_evicted"] >= 1, "the expiry pass at start")
    digests = stored.digests()
    assert blobs_of(b) <= digests  # B keeps every layer, the shared base included
    assert not (blobs_of(a) - blobs_of(b)) & digests  # A's own blobs are gone
    assert a.manifest_digest not in digests and b.manifest_digest in digests
    assert not stored.links("team/a")  # on a folder, its folders go later
    state = storage_state(mirror)
    assert state["images_evicted"] == 1 and state["bytes_evicted"] >= a.layers[1].size
    assert state["images"] == 1 and state["last_pass_requests"] > 0
    upstream.control("reset")
    pull_all(mirror, tmp_path, b, label="b-again-")  # byte-identical, all from storage
    assert blob_gets(upstream.settled_stats()) == []
    pull_all(mirror, tmp_path, a, label="a-again-")  # A comes back from the upstream
    assert {r["path"].rsplit("/", 1)[1] for r in blob_gets(upstream.settled_stats())} == blobs_of(a) - blobs_of(b)


def test_a_size_cap_exceeded_while_ten_pulls_run(upstream, mirror_factory, layer_cache, tmp_path, bucket):
    images = [seed.build_image(f"team/s{n}", "1.0", [seed.random_layer(layer_cache, 3 * seed.MIB, 90 + n)])
              for n in range(5)]
    for image in images:
        seed.push(upstream.registry_url, image)
    cap = 8 * seed.MIB  # two of the five images
    mirror = mirror_factory(credentials_of(upstream), dump=False, mirror_keys={"max_bytes": cap}, bucket=bucket)

    def pull_one(n: int) -> None:
        image = images[n % len(images)]
        pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / f"p{n}", cert_dir=mirror.trust)
        assert_pulled_identical(tmp_path / f"p{n}", image)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(pull_one, range(10)))
    mirror.settle(upstream)
    wait_for(lambda: (storage_state(mirror)["used_bytes"] or cap + 1) <= cap, "storage back under the cap", 120)
    assert storage_state(mirror)["images_evicted"] >= 3
    assert sum(Stored(mirror, bucket).blob_sizes().values()) <= cap
