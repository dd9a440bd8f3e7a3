"""The registry's storage in a bucket of a real S3-compatible object store, SeaweedFS (devtools/object_store.py):
first the stock registry alone (2.8.2, its `s3` driver), then the mirror on `mirror.s3`. Images are pushed and
pulled by skopeo, and kept in the bucket and nowhere else. Two replicas on one bucket: tests/integration/
test_scale_out.py."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devtools import seed
from devtools.object_store import BLOBS, REGISTRY_UNSET_ENV, blob_key, without_env
from devtools.ports import free_port, plain_registry_config
from devtools.skopeo import PullError, pull
from registry_mirror.cli import commands, processes
from registry_mirror.config.load import S3Config, Secret
from registry_mirror.storage.bucket import Bucket, BucketError, reach
from registry_mirror.storage.uploads import PURGE_AGE_SECONDS

from .conftest import assert_pulled_identical, blob_gets, credentials_of, small_image

# above the s3 driver's multipartcopythresholdsize (32 MiB): its commit copies the upload with UploadPartCopy
BIG_LAYER = 40 * seed.MIB


@dataclass
class Registry:
    address: str
    workdir: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        processes.stop(self.proc)


@pytest.fixture
def registry_factory(tmp_path, store):
    """Start a plain stock registry kept in `store`'s bucket, each in a workdir of its own; stop them all."""
    started: list[Registry] = []

    def make() -> Registry:
        workdir = tmp_path / f"registry{len(started)}"
        workdir.mkdir()
        port = free_port()
        cfg = plain_registry_config(f"127.0.0.1:{port}", str(workdir / "unused"))
        cfg["storage"] = {**store.registry_storage(), "delete": {"enabled": True}}
        cfg["log"]["level"] = "info"  # its S3 errors, in the failure report
        (workdir / "registry.yml").write_text(yaml.safe_dump(cfg))
        log = workdir / "registry.log"
        proc = processes.start(without_env([processes.registry_binary(), "serve", str(workdir / "registry.yml")],
                                           REGISTRY_UNSET_ENV), log)
        started.append(Registry(f"127.0.0.1:{port}", workdir, proc))
        processes.wait_for_port("127.0.0.1", port, proc, what="stock registry on S3", log_path=log)
        return started[-1]
    try:
        yield make
    finally:
        for registry in started:
            registry.stop()


def push(image: seed.Image, registry: str, workdir: Path) -> None:
    """Push with skopeo from a `dir:` layout of the image's own bytes; --preserve-digests keeps the layers
    uncompressed and the manifest as built, so a pull can be compared byte for byte."""
    src = workdir / f"push-{image.name.replace('/', '-')}-{image.tag}"
    src.mkdir(parents=True)
    (src / "version").write_text("Directory Transport Version: 1.1\n")
    (src / "manifest.json").write_bytes(image.manifest)
    for blob in (*image.layers, image.config):
        target = src / blob.digest.split(":")[1]
        if blob.path:
            try:
                os.link(blob.path, target)  # the layer cache is on the same filesystem, usually
            except OSError:
                shutil.copyfile(blob.path, target)
        else:
            target.write_bytes(blob.data)
    result = subprocess.run(["skopeo", "--insecure-policy", "copy", "--retry-times", "0", "--preserve-digests",
                             "--dest-tls-verify=false", "--dest-no-creds", f"dir:{src}",
                             f"docker://{registry}/{image.name}:{image.tag}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"skopeo push failed: {result.stderr.strip()[-800:]}"


def test_the_stock_registry_keeps_images_in_the_bucket_alone(store, registry_factory, layer_cache, tmp_path):
    image = small_image(layer_cache, name="team/on-s3", seed_base=70)
    registry = registry_factory()
    push(image, registry.address, tmp_path)
    pull(f"{registry.address}/{image.name}:{image.tag}", tmp_path / "out", tls_verify=False)
    assert_pulled_identical(tmp_path / "out", image)

    keys = set(store.list_keys(BLOBS))
    for digest in (*(blob.digest for blob in image.layers), image.config.digest, image.manifest_digest):
        assert blob_key(digest) in keys
    assert not [key for key in store.list_keys() if "/_uploads/" in key]  # every upload committed and cleared

    # restarted with no local state at all (a new workdir): everything it serves comes from the bucket
    registry.stop()
    restarted = registry_factory()
    pull(f"{restarted.address}/{image.name}:{image.tag}", tmp_path / "again", tls_verify=False)
    assert_pulled_identical(tmp_path / "again", image)
    for workdir in (registry.workdir, restarted.workdir):  # nothing stored locally: the filesystem root goes unused
        assert sorted(p.name for p in workdir.iterdir()) == ["registry.log", "registry.yml"]


def test_a_layer_over_the_multipart_copy_threshold_comes_back_whole(store, registry_factory, layer_cache, tmp_path):
    image = seed.build_image("team/big-on-s3", "1.0", [seed.random_layer(layer_cache, BIG_LAYER, 80)])
    registry = registry_factory()
    push(image, registry.address, tmp_path)
    pull(f"{registry.address}/{image.name}:{image.tag}", tmp_path / "out", tls_verify=False)
    assert_pulled_identical(tmp_path / "out", image)
    assert blob_key(image.layers[0].digest) in store.list_keys(BLOBS)


def test_a_mirror_on_a_bucket_pulls_once_then_serves_from_it_even_restarted_with_artifactory_down(
        store, upstream, mirror_factory, layer_cache, tmp_path):
    image = small_image(layer_cache, name="team/mirrored-on-s3", seed_base=90)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False, bucket=store)
    reach(mirror.cfg.mirror.s3)  # what `check` does
    assert mirror.stats()["storage"]["bucket"] == {"name": store.bucket, "endpoint": store.endpoint,
                                                   "uploads_aborted": 0}
    assert mirror.cfg.cache.prefetch  # on by default on a bucket: its writes are whole
    ref = f"{mirror.address}/{image.name}:{image.tag}"
    pull(ref, tmp_path / "cold", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "cold", image)
    mirror.settle(upstream, image)
    assert not (Path(mirror.cfg.mirror.storage) / "docker").exists()  # the filesystem storage goes unused

    upstream.control("reset")
    pull(ref, tmp_path / "warm", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "warm", image)
    assert blob_gets(upstream.stats()) == []  # every layer from the bucket

    # Artifactory goes down, and a mirror with nothing local (another host, or this one rebuilt) starts on the
    # bucket: the image is served, by tag and by digest
    upstream.stop()
    mirror.mirror.stop()
    rebuilt = mirror_factory(credentials_of(upstream), dump=False, bucket=store)
    pull(f"{rebuilt.address}/{image.name}:{image.tag}", tmp_path / "rebuilt-tag", cert_dir=rebuilt.trust)
    assert_pulled_identical(tmp_path / "rebuilt-tag", image)
    pull(f"{rebuilt.address}/{image.name}@{image.manifest_digest}", tmp_path / "rebuilt-digest",
         cert_dir=rebuilt.trust)
    assert_pulled_identical(tmp_path / "rebuilt-digest", image)


def test_check_names_a_bucket_the_store_lacks(store):
    missing = S3Config(bucket="no-such-bucket", endpoint=store.endpoint, access_key=Secret(store.access_key),
                       secret_key=Secret(store.secret_key))
    with pytest.raises(BucketError, match="bucket 'no-such-bucket' at http://127.0.0.1:[0-9]+: it does not exist"):
        reach(missing)


def test_a_layer_another_repository_brought_in_comes_from_the_bucket_and_a_corrupt_one_heals(
        store, upstream, mirror_factory, layer_cache, tmp_path):
    base = seed.random_layer(layer_cache, 2 * seed.MIB, 91)
    a, b, c = (seed.build_image(f"team/{name}", "1.0", [base, seed.random_layer(layer_cache, 64 * 1024, n)])
               for name, n in (("a", 92), ("b", 93), ("c", 94)))
    for image in (a, b, c):
        seed.push(upstream.registry_url, image)
    # no spool kept after its transfer: each pull below reads the bucket, not a spool an earlier one left
    mirror = mirror_factory(credentials_of(upstream), dump=False, bucket=store, cache={"spool_keep": 0})
    pull(f"{mirror.address}/{a.name}:{a.tag}", tmp_path / "a", cert_dir=mirror.trust)
    mirror.settle(upstream, a)

    upstream.control("reset")
    pull(f"{mirror.address}/{b.name}:{b.tag}", tmp_path / "b", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "b", b)
    mirror.settle(upstream, b)
    fetched = {r["path"].rsplit("/", 1)[1] for r in blob_gets(upstream.stats())}
    assert fetched == {b.layers[1].digest, b.config.digest}  # the shared base came from the bucket

    # a bit flips in the base's object: the next repository to need it gets no bad byte, and its pull after
    # that has the base fetched again and whole
    good = store.read(blob_key(base.digest))
    store.write(blob_key(base.digest), good[:1000] + bytes([good[1000] ^ 0x01]) + good[1001:])
    with pytest.raises(PullError):
        pull(f"{mirror.address}/{c.name}:{c.tag}", tmp_path / "c-refused", cert_dir=mirror.trust)
    assert [key for key in store.list_keys() if "/quarantine/" in key]
    pull(f"{mirror.address}/{c.name}:{c.tag}", tmp_path / "c", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "c", c)
    mirror.settle(upstream, c)
    assert store.read(blob_key(base.digest)) == good
    assert "is corrupt" in mirror.logs()


ROUNDS, AT_ONCE = 4, 8  # the link race: a fresh image per round, pulled by AT_ONCE machines at once


def test_with_prefetch_on_a_bucket_pulls_of_one_image_at_once_never_see_a_torn_link(
        store, upstream, mirror_factory, layer_cache, tmp_path):
    """On a folder, registry 2.8 rewrites a layer's link in place, and a pull reading it meanwhile gets a 500
    (why cache.prefetch is off by default); an object store's PUT is atomic."""
    images = [small_image(layer_cache, name=f"race/app{r}", seed_base=100 + 10 * r) for r in range(ROUNDS)]
    for image in images:
        seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False, bucket=store, cache={"prefetch": True})
    failures = []
    for image in images:
        ref = f"{mirror.address}/{image.name}:{image.tag}"
        with ThreadPoolExecutor(AT_ONCE) as pool:
            pulls = [pool.submit(pull, ref, tmp_path / f"{image.name}-{i}", cert_dir=mirror.trust)
                     for i in range(AT_ONCE)]
            for done in pulls:
                try:
                    done.result(timeout=300)
                except PullError as e:
                    failures.append(str(e))
        for i in range(AT_ONCE):
            if not failures:
                assert_pulled_identical(tmp_path / f"{image.name}-{i}", image)
    assert failures == []
    assert "http.response.status=500" not in (mirror.mirror.log_dir / "registry.log").read_text()


def test_incomplete_multipart_uploads_a_day_old_are_aborted(store):
    """What a registry stopped mid-upload leaves: no listing shows it, the store keeps it until aborted."""
    bucket = Bucket(S3Config(bucket=store.bucket, endpoint=store.endpoint, access_key=Secret(store.access_key),
                             secret_key=Secret(store.secret_key)))
    try:
        s3 = bucket._client
        key = "docker/registry/v2/repositories/team/app/_uploads/left-by-a-crash/data"
        upload = s3.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
        s3.upload_part(Bucket=store.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 1024)
        began = s3.list_multipart_uploads(Bucket=store.bucket)["Uploads"][0]["Initiated"].timestamp()
        assert bucket.abort_stale_uploads(PURGE_AGE_SECONDS, began + 60) == 0  # a minute old: maybe a live one
        assert bucket.abort_stale_uploads(PURGE_AGE_SECONDS, began + PURGE_AGE_SECONDS) == 1
        assert s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    finally:
        bucket.close()


def test_verify_reads_every_blob_in_the_bucket_and_moves_a_corrupt_one_aside(store, tmp_path, capsys):
    good, bad = b"a good layer" * 1000, b"a layer that rotted" * 1000
    good_digest = "sha256:" + hashlib.sha256(good).hexdigest()
    bad_digest = "sha256:" + hashlib.sha256(bad).hexdigest()
    store.write(blob_key(good_digest), good)
    store.write(blob_key(bad_digest), bad[:-1] + b"!")  # one byte changed since the registry stored it
    config = tmp_path / "mirror.yaml"
    config.write_text(yaml.safe_dump({
        "upstream": {"url": "http://127.0.0.1:9", "repository": "docker-local", "anonymous": True},
        "mirror": {"storage": str(tmp_path / "unused"), "s3": store.mirror_keys()}}))
    assert commands.main(["--config", str(config), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH {bad_digest}: {len(bad)} bytes read as sha256:" in out and "moved to docker/registry/v2/" in out
    assert "2 blobs (" in out and "1 good, 1 corrupt" in out
    assert blob_key(bad_digest) not in store.list_keys(BLOBS) and blob_key(good_digest) in store.list_keys(BLOBS)
    assert [key for key in store.list_keys("docker/registry/v2/quarantine/") if key.endswith(bad_digest[7:])]
    assert commands.main(["--config", str(config), "verify"]) == 0  # what is left is good
