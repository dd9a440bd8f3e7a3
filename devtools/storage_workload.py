"""A company-shaped workload under a storage cap, for the test (tests/integration/test_storage_workload.py) and
the bench (`./run.sh bench-storage`): images seeded into the test upstream, rounds of skopeo pulls at 1 to 8 at
once through the mirror, and what the mirror's storage did meanwhile.

The shape (`Shape`; every size times `scale`): 3 base images (40, 25 and 10 MiB), pullable themselves, and `apps`
application images on them spread over the other repositories (13 in all): each repository has one base, a
dependencies layer its tags share and a code layer per tag; tags 1.0, 1.1, ... and `latest` naming the newest.
212.8 MiB of distinct layers at scale 1. `max_bytes` is `cap_share` of the distinct bytes (layers, configs,
manifests). Pulls: by tag, some by digest, repositories by a Zipf-like popularity, a quarter repeating the pull
before (a deploy's machines), in rounds whose size and concurrency (1 to `max_at_once`) come from `seed`. Every
pull is copied with skopeo and checked byte for byte against what was seeded.

The storage is watched by the test's own means, never the package under test's: a folder's files (`FolderView`),
or a bucket's objects through the object store's listing and reads (`BucketView`: the registry's same layout as
keys; a partial upload's data there is a multipart upload, invisible to a listing, and counted from its parts).

What it observes:
- samples: the storage's bytes, blob data files (in place, or set aside by a pass in its grace) plus partial uploads
  (`repositories/<name>/_uploads/`), read every SAMPLE_SECONDS from a thread, each against the bound below;
- passes: the storage read right after the addon's `storage.passes` counter changes (polled every STATS_SECONDS),
  and the requests that pass made on the storage (`storage.last_pass_requests`, as the addon counts them);
- references, at the end of each round: pulls quiesced (no transfer in the mirror, no request open upstream, no
  upload folder in the registry's storage), then, when a pass is due (the addon's `used_bytes` or our reading over
  the cap), the end of the next pass; then every link under `_layers` and `_manifests/revisions` must name blob
  data, every tag's current link a revision the repository has, and every manifest the repository has must have a
  layer link for its config and each layer (else its next pull fetches them again). A problem counts only if a
  second reading, right after, still shows it (a pass removing an image between our reads of its links is not one);
- upstream: blob GET bytes the upstream sent against the distinct bytes of the blobs it sent; each re-fetch of a
  blob counts as "after an eviction" when the sampler saw that blob's data disappear since its previous fetch (one
  disappearance allows one re-fetch), else as "with no eviction seen" (its data stayed, or only a link went).

The bound at time t is `max_bytes` plus the distinct bytes (a blob shared counts once) of the images being pulled
at t: the pulls started by t that have not ended, and those that ended at or after the start of the last pass
seen finished by t (its `storage.last_pass_at`, the wall clock the pass read at its start) less COMMIT_GRACE. A
pass can only evict what was stored, and order by last pull what was pulled, before it began, and it keeps the
blobs answered within COMMIT_GRACE before it began (the registry may still be committing and linking them):
until a pass that began that long after a pull ended has finished, that pull's image may sit on top of the cap.
A pull lasts from skopeo's start to its exit.
A sample's data set aside is held against the bound only at the pass's end: during its grace (seconds) a pull may
store a blob anew while the old copy waits aside, so the disk briefly holds both.
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import os
import random
import shutil
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from devtools import seed
from devtools.skopeo import PullError, pull
from devtools.upstream_harness import UpstreamHarness
from registry_mirror.blobs.server import COMMIT_GRACE

if TYPE_CHECKING:
    from devtools.object_store import ObjectStore

MIB, KIB = seed.MIB, 1024
BASE_MIB = (40, 25, 10)
COMPANY_LAYER_BYTES = int(212.8 * MIB)  # every distinct layer at scale 1: the bases and the applications' own
BASE_REPOSITORIES = ("base/jdk", "base/python", "base/alpine")
APP_REPOSITORIES = ("payments/api", "payments/worker", "search/api", "search/indexer", "web/frontend", "web/bff",
                    "data/etl", "data/reports", "platform/auth", "platform/gateway")
V2 = Path("docker", "registry", "v2")  # the registry's layout, read here without the package under test
SAMPLE_SECONDS = 0.05
STATS_SECONDS = 0.1
QUIESCE_TIMEOUT = 120.0  # pulls done, until the mirror and the registry have stored what they fetched
PASS_TIMEOUT = 150.0  # a due pass: RECHECK_SECONDS after the last, or the minimum interval (60 s), and its run
PULL_TIMEOUT = 600.0
GRACE_FIGURE = 60.0  # a second bound, for the figures only: pulls that ended this long ago count too
BUCKET_READS = 16  # a bucket's links read at once
BUCKET_TIMEOUT = 10.0  # one request to the object store
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass(frozen=True)
class Shape:
    scale: float = 1.0
    apps: int = 30
    repositories: int = 13  # the 3 bases' and the applications'
    pulls: int = 780
    rounds: int = 20
    max_at_once: int = 8
    at_once: tuple[int, ...] = ()  # the rounds' concurrency in turn; () draws them from `seed`
    cap_share: float = 0.4
    by_digest: float = 0.15  # share of pulls by digest
    repeat: float = 0.25  # share of pulls repeating the one before (a deploy to several machines)
    seed: int = 1
    layer_seed: int = 7100  # the layers' random bytes (the layer cache is keyed by seed and size)


@dataclass(frozen=True)
class Catalog:
    images: tuple[seed.Image, ...]  # every (repository, tag); `latest` repeats its version's manifest
    weights: tuple[float, ...]  # how popular each is
    shape: Shape

    def blobs(self, image: seed.Image) -> dict[str, int]:
        """Digest -> bytes of what the image's pull stores: manifest, config, layers."""
        return {image.manifest_digest: len(image.manifest), image.config.digest: image.config.size,
                **{layer.digest: layer.size for layer in image.layers}}

    @property
    def sizes(self) -> dict[str, int]:
        return {d: n for image in self.images for d, n in self.blobs(image).items()}

    @property
    def layer_bytes(self) -> int:
        return sum({layer.digest: layer.size for image in self.images for layer in image.layers}.values())

    @property
    def distinct_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def max_bytes(self) -> int:
        return int(self.distinct_bytes * self.shape.cap_share)

    @property
    def repositories(self) -> tuple[str, ...]:
        return tuple(sorted({image.name for image in self.images}))


def build_catalog(cache: Path, shape: Shape) -> Catalog:
    """The company's images, made from cached random layers (`cache`); deterministic for a shape."""
    rng = random.Random(shape.layer_seed)
    n_bases = len(BASE_MIB)
    app_repositories = [*APP_REPOSITORIES, *(f"team{r}/service" for r in range(len(APP_REPOSITORIES), 100))][
        :max(1, shape.repositories - n_bases)]
    deps_w = [rng.uniform(2.0, 6.0) for _ in app_repositories]
    code_w = [rng.uniform(1.0, 3.0) for _ in range(shape.apps)]
    app_bytes = (COMPANY_LAYER_BYTES - sum(BASE_MIB) * MIB) * shape.scale
    unit = app_bytes / (sum(deps_w) + sum(code_w))
    bases = [seed.random_layer(cache, max(KIB, int(mib * MIB * shape.scale)), shape.layer_seed + i)
             for i, mib in enumerate(BASE_MIB)]
    deps = [seed.random_layer(cache, max(KIB, int(w * unit)), shape.layer_seed + 100 + r) for r, w in enumerate(deps_w)]
    images, weights = [], []
    for b, name in enumerate(BASE_REPOSITORIES):
        image = seed.build_image(name, "1", [bases[b]])
        images += [image, dataclasses.replace(image, tag="latest")]
        weights += [0.2, 0.3]
    popularity = [1 / (rank + 1) ** 0.9 for rank in range(len(app_repositories))]
    rng.shuffle(popularity)
    newest: dict[int, seed.Image] = {}
    for i, w in enumerate(code_w):
        r, version = i % len(app_repositories), i // len(app_repositories)
        code = seed.random_layer(cache, max(KIB, int(w * unit)), shape.layer_seed + 200 + i)
        image = seed.build_image(app_repositories[r], f"1.{version}", [bases[r % n_bases], deps[r], code])
        images.append(image)
        weights.append(popularity[r] * (1 + version))  # newer versions are deployed more
        newest[r] = image
    for r, image in sorted(newest.items()):
        images.append(dataclasses.replace(image, tag="latest"))
        weights.append(popularity[r] * 3)
    return Catalog(tuple(images), tuple(weights), shape)


def seed_upstream(registry_url: str, catalog: Catalog) -> None:
    for image in catalog.images:
        seed.push(registry_url, image)


@dataclass(frozen=True)
class PlannedPull:
    image: int  # index in the catalog
    by_digest: bool


def plan_rounds(catalog: Catalog) -> list[tuple[int, list[PlannedPull]]]:
    """(pulls at once, the pulls in order) per round, deterministic for the shape's seed."""
    shape = catalog.shape
    rng = random.Random(shape.seed)
    levels: list[int] = list(shape.at_once) * shape.rounds
    while len(levels) < shape.rounds:
        batch = list(range(1, shape.max_at_once + 1))
        rng.shuffle(batch)
        levels += batch
    sizes = [shape.pulls // shape.rounds + (1 if r < shape.pulls % shape.rounds else 0) for r in range(shape.rounds)]
    rounds = []
    for at_once, size in zip(levels, sizes, strict=False):
        pulls: list[PlannedPull] = []
        for _ in range(size):
            if pulls and rng.random() < shape.repeat:
                pulls.append(pulls[-1])
                continue
            image = rng.choices(range(len(catalog.images)), catalog.weights)[0]
            pulls.append(PlannedPull(image, rng.random() < shape.by_digest))
        rounds.append((at_once, pulls))
    return rounds


@dataclass(frozen=True)
class Target:
    """The running mirror and its upstream, as the test's fixtures or the bench started them."""
    address: str  # host:port of the stock registry (TLS)
    trust: Path  # skopeo's --src-cert-dir
    storage: StorageView  # the registry's storage: FolderView(its rootdirectory) or BucketView(its bucket)
    stats_url: str  # the addon's /_mirror/stats.json
    upstream: UpstreamHarness


@dataclass
class PullRecord:
    n: int
    round: int
    image: int
    by_digest: bool
    start: float  # wall clock
    end: float | None = None
    error: str = ""
    mismatch: str = ""  # what differed from the seeded bytes, "" when identical


@dataclass
class PassRecord:
    passes: int  # the counter's value
    start: float | None  # the pass's own wall clock at its start (storage.last_pass_at)
    seen: float  # when the counter was seen changed
    bytes: int | None  # the storage read right after (None: the counter as first seen, not a pass end read)
    requests: int | None = None  # the addon's storage.last_pass_requests then (None: the addon has no such figure)


@dataclass
class RoundRecord:
    round: int
    at_once: int
    pulls: int
    quiesced: bool
    uploads_left: int  # upload folders still there when quiescing gave up
    pass_due: bool
    pass_came: bool | None  # None: none was due
    bytes_checked: int  # the storage when the references were checked
    broken: list[str] = field(default_factory=list)
    checked_at: float = 0.0  # wall clock


class StorageReading(NamedTuple):
    data: int  # blob data files in place
    aside: int  # blob data a pass set aside and has not settled yet (its grace): still on the disk
    uploads: int  # partial uploads
    upload_folders: int
    present: frozenset[str]  # digests whose data is in place

    @property
    def total(self) -> int:
        return self.data + self.aside + self.uploads


def read_storage(root: Path, repositories) -> StorageReading:
    """The storage's bytes as a disk holds them; what vanishes while read is skipped."""
    data_bytes = aside_bytes = 0
    present = set()
    blobs = root / V2 / "blobs" / "sha256"
    for prefix in _dirs(blobs):
        for hex_ in _dirs(blobs / prefix):
            try:
                data_bytes += (blobs / prefix / hex_ / "data").stat().st_size
                present.add(f"sha256:{hex_}")
            except OSError:
                pass
            try:
                aside_bytes += (blobs / prefix / hex_ / "data.evicting").stat().st_size
            except OSError:
                pass
    upload_bytes = folders = 0
    for name in repositories:
        base = root / V2 / "repositories" / name / "_uploads"
        uploads = _dirs(base)
        folders += len(uploads)
        for upload in uploads:
            for folder, _, files in os.walk(base / upload):
                for f in files:
                    try:
                        upload_bytes += os.lstat(os.path.join(folder, f)).st_size
                    except OSError:
                        pass
    return StorageReading(data_bytes, aside_bytes, upload_bytes, folders, frozenset(present))


def broken_references(root: Path) -> list[str]:
    """Links naming missing data, tags naming manifests the repository lacks, manifests lacking layer links."""
    v2 = root / V2
    problems = []
    for name, path in _repositories(v2 / "repositories"):
        layers = _links(path / "_layers")
        revisions = _links(path / "_manifests" / "revisions")
        for kind, links in (("layer", layers), ("revision", revisions)):
            for digest, target in sorted(links.items()):
                if target is None:
                    problems.append(f"{name}: {kind} link {digest} is empty")
                elif not (v2 / _data(target)).exists():
                    problems.append(f"{name}: {kind} link {digest} names missing data")
        tags = path / "_manifests" / "tags"
        for tag in _dirs(tags):
            current = _read_text(tags / tag / "current" / "link")
            if current and current not in revisions:
                problems.append(f"{name}:{tag} names {current}, which the repository lacks")
        problems += unlinked_layers(name, revisions, layers, lambda target: _read_json(v2 / _data(target)),
                                    stored=lambda digest: (v2 / _data(digest)).exists())
    return problems


STORED_UNLINKED = "(its data stored)"


def unlinked_layers(name: str, revisions: dict, layers, manifest_of, stored=None) -> list[str]:
    """The repository's revisions whose manifest (`manifest_of(target digest)`, None when unreadable) names a config
    or layer the repository has no link for; with `stored(digest)`, each whose data the storage holds is marked
    STORED_UNLINKED (its next pull is served from storage, not the WAN)."""
    problems = []
    for digest, target in sorted(revisions.items()):
        manifest = manifest_of(target) if target else None
        if not isinstance(manifest, dict):
            continue
        needed = [entry.get("digest") for entry in [manifest.get("config"), *(manifest.get("layers") or [])]
                  if isinstance(entry, dict)]
        missing = [d for d in needed if isinstance(d, str) and d not in layers]
        for d in missing:
            problems.append(f"{name}@{digest}: no layer link for {d}"
                            + (f" {STORED_UNLINKED}" if stored is not None and stored(d) else ""))
    return problems


def corrupt_blobs(root: Path) -> int:
    """Blob data files whose bytes fail their digest; what vanishes while read is skipped."""
    bad = 0
    for data in (root / V2 / "blobs").glob("*/*/*/data"):
        h = hashlib.sha256()
        try:
            with open(data, "rb") as f:
                while chunk := f.read(4 * MIB):
                    h.update(chunk)
        except FileNotFoundError:
            continue
        bad += f"sha256:{h.hexdigest()}" != f"{data.parent.parent.parent.name}:{data.parent.name}"
    return bad


class StorageView(Protocol):
    """What the workload reads of the registry's storage, wherever it is."""

    def read(self, repositories) -> StorageReading: ...

    def broken_references(self) -> list[str]: ...

    def corrupt_blobs(self) -> int: ...


@dataclass(frozen=True)
class FolderView:
    """The storage in a folder (`mirror.storage`, the registry's rootdirectory), read as files."""
    root: Path

    def read(self, repositories) -> StorageReading:
        return read_storage(self.root, repositories)

    def broken_references(self) -> list[str]:
        return broken_references(self.root)

    def corrupt_blobs(self) -> int:
        return corrupt_blobs(self.root)

    def __str__(self) -> str:
        return str(self.root)


@dataclass(frozen=True)
class BucketView:
    """The storage in a bucket (`mirror.s3`), read through the object store: ListObjectsV2 and GETs (the store
    takes unsigned requests), ListMultipartUploads and ListParts for the partial uploads' data. The same readings
    as FolderView's: a blob's data is `blobs/<alg>/<hex[:2]>/<hex>/data`, set aside `.../data.evicting`, an upload
    `repositories/<name>/_uploads/<id>/...`; an object that vanishes while read is skipped."""
    store: ObjectStore
    prefix: str = ""  # mirror.s3.prefix
    _manifests: dict = field(default_factory=dict, compare=False, repr=False)  # digest -> bytes (content-addressed)

    @property
    def v2(self) -> str:
        return "/".join(p for p in (self.prefix.strip("/"), V2.as_posix()) if p) + "/"

    def __str__(self) -> str:
        return f"bucket {self.store.bucket}/{self.v2} at {self.store.endpoint}"

    def read(self, repositories) -> StorageReading:
        v2, wanted = self.v2, set(repositories)
        data_bytes = aside_bytes = upload_bytes = 0
        present, folders = set(), set()

        def upload(key: str, size: int) -> None:
            nonlocal upload_bytes
            name, found, rest = key[len(v2) + len("repositories/"):].partition("/_uploads/")
            if found and name in wanted and "/" in rest:  # <id>/<file>
                upload_bytes += size
                folders.add(f"{name}/{rest.split('/', 1)[0]}")
        for key, size in self.store.sizes(v2).items():
            parts = key[len(v2):].split("/")
            if parts[0] == "blobs" and len(parts) == 5 and parts[1] == "sha256":  # blobs/sha256/<xx>/<hex>/<file>
                if parts[4] == "data":
                    data_bytes += size
                    present.add(f"sha256:{parts[3]}")
                elif parts[4] == "data.evicting":
                    aside_bytes += size
            elif parts[0] == "repositories":
                upload(key, size)
        for key, size in self._multipart_uploads(v2 + "repositories/"):
            upload(key, size)
        return StorageReading(data_bytes, aside_bytes, upload_bytes, len(folders), frozenset(present))

    def broken_references(self) -> list[str]:
        """broken_references' problems, from the bucket's keys: the links read, then the data listed."""
        top = self.v2 + "repositories/"
        repositories: dict[str, dict[str, dict[str, str]]] = {}  # name -> kind -> digest or tag -> key
        for key in self.store.list_keys(top):
            parts = key[len(top):].split("/")
            i = next((i for i, part in enumerate(parts) if part.startswith("_")), 0)
            if not i or parts[i] not in ("_layers", "_manifests"):
                continue
            links = repositories.setdefault("/".join(parts[:i]), {"layer": {}, "revision": {}, "tag": {}})
            rest = parts[i:]
            if len(rest) == 4 and rest[0] == "_layers" and rest[3] == "link":
                links["layer"][f"{rest[1]}:{rest[2]}"] = key
            elif len(rest) == 5 and rest[:2] == ["_manifests", "revisions"] and rest[4] == "link":
                links["revision"][f"{rest[2]}:{rest[3]}"] = key
            elif len(rest) == 5 and rest[:2] == ["_manifests", "tags"] and rest[3:] == ["current", "link"]:
                links["tag"][rest[2]] = key
        keys = [key for links in repositories.values() for kind in links.values() for key in kind.values()]
        with ThreadPoolExecutor(BUCKET_READS) as pool:
            texts = dict(zip(keys, pool.map(self._get, keys), strict=True))
        data = set(self.store.list_keys(self.v2 + "blobs/"))  # after the links: data is written before its link

        def read(links: dict[str, str]) -> dict[str, str | None]:  # a link gone since the listing is no link
            return {d: (texts[key].decode(errors="replace").strip() or None) for d, key in links.items()
                    if texts[key] is not None}
        problems = []
        for name, links in sorted(repositories.items()):
            layers, revisions = read(links["layer"]), read(links["revision"])
            for kind, found in (("layer", layers), ("revision", revisions)):
                for digest, target in sorted(found.items()):
                    if target is None:
                        problems.append(f"{name}: {kind} link {digest} is empty")
                    elif self.v2 + _data(target).as_posix() not in data:
                        problems.append(f"{name}: {kind} link {digest} names missing data")
            for tag, current in sorted(read(links["tag"]).items()):
                if current and current not in revisions:
                    problems.append(f"{name}:{tag} names {current}, which the repository lacks")
            problems += unlinked_layers(name, revisions, layers, lambda target: self._manifest(target)
                                        if self.v2 + _data(target).as_posix() in data else None)
        return problems

    def corrupt_blobs(self) -> int:
        bad = 0
        top = self.v2 + "blobs/"
        for key in self.store.list_keys(top):
            parts = key[len(top):].split("/")  # <alg>/<xx>/<hex>/data
            if len(parts) != 4 or parts[3] != "data" or (body := self._get(key)) is None:
                continue
            bad += f"sha256:{hashlib.sha256(body).hexdigest()}" != f"{parts[0]}:{parts[2]}"
        return bad

    def _manifest(self, digest: str):
        if digest not in self._manifests:
            body = self._get(self.v2 + _data(digest).as_posix())
            if body is None:
                return None
            self._manifests[digest] = body
        try:
            return json.loads(self._manifests[digest])
        except ValueError:
            return None

    def _get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it is not there (any other answer raises)."""
        status, body = self._request(f"/{urllib.parse.quote(key, safe='/')}")
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"reading {self.store.bucket}/{key} answered {status}: {body[:300]!r}")
        return body

    def _multipart_uploads(self, prefix: str) -> list[tuple[str, int]]:
        """(key, bytes of the parts uploaded so far) of every multipart upload in progress under `prefix`."""
        uploads, markers = [], {}
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, **markers})
            root = self._xml(f"?uploads&{query}")
            uploads += [(u.findtext(f"{S3_NS}Key") or "", u.findtext(f"{S3_NS}UploadId") or "")
                        for u in root.iter(f"{S3_NS}Upload")]
            markers = {"key-marker": root.findtext(f"{S3_NS}NextKeyMarker") or "",
                       "upload-id-marker": root.findtext(f"{S3_NS}NextUploadIdMarker") or ""}
            if root.findtext(f"{S3_NS}IsTruncated") != "true" or not any(markers.values()):
                break
        found = []
        for key, upload_id in uploads:
            size, marker = 0, ""
            while True:
                query = urllib.parse.urlencode({"uploadId": upload_id, **({"part-number-marker": marker}
                                                                           if marker else {})})
                root = self._xml(f"/{urllib.parse.quote(key, safe='/')}?{query}", missing_ok=True)
                if root is None:  # completed or aborted since listed
                    break
                size += sum(int(part.findtext(f"{S3_NS}Size") or 0) for part in root.iter(f"{S3_NS}Part"))
                marker = root.findtext(f"{S3_NS}NextPartNumberMarker") or ""
                if root.findtext(f"{S3_NS}IsTruncated") != "true" or not marker:
                    found.append((key, size))
                    break
        return found

    def _xml(self, path: str, missing_ok: bool = False):
        status, body = self._request(path)
        if status == 404 and missing_ok:
            return None
        if status != 200:
            raise RuntimeError(f"{self.store.bucket}{path} answered {status}: {body[:300]!r}")
        return ET.fromstring(body)

    def _request(self, path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(f"{self.store.endpoint}/{self.store.bucket}{path}")
        try:
            with urllib.request.urlopen(req, timeout=BUCKET_TIMEOUT) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


class Sample(NamedTuple):
    at: float  # wall clock
    bytes: int  # everything read_storage counts
    uploads: int  # of which partial uploads
    aside: int  # of which data set aside by a pass in its grace


class Watch(threading.Thread):
    """Samples the storage every SAMPLE_SECONDS and the addon's pass counter every STATS_SECONDS."""

    def __init__(self, target: Target, repositories):
        super().__init__(daemon=True, name="storage-watch")
        self.target, self.repositories = target, tuple(repositories)
        self.samples: list[Sample] = []
        self.passes: list[PassRecord] = []
        self.evictions: Counter = Counter()  # digest -> times its data was seen disappear
        self.storage_state: dict = {}  # the addon's last `storage` snapshot
        self.poll_errors = 0
        self._present: frozenset[str] = frozenset()
        self._halt = threading.Event()
        self._changed = threading.Condition()

    def run(self) -> None:
        next_stats = 0.0
        while not self._halt.is_set():
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_SECONDS
                self._poll()
            self._sample()
            self._halt.wait(SAMPLE_SECONDS)  # the sampling period

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def passes_seen(self) -> int:
        return self.passes[-1].passes if self.passes else 0

    def wait_for(self, condition, timeout: float) -> bool:
        """Until `condition(passes seen)` holds, judged whenever the pass counter changes; whether it did within
        `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(list(self.passes)), timeout)

    def _sample(self) -> Sample:
        reading = self.target.storage.read(self.repositories)
        sample = Sample(time.time(), reading.total, reading.uploads, reading.aside)
        self.samples.append(sample)
        self.evictions.update(self._present - reading.present)
        self._present = reading.present
        return sample

    def _poll(self) -> None:
        try:
            state = fetch_json(self.target.stats_url).get("storage") or {}
        except OSError:
            self.poll_errors += 1
            return
        self.storage_state = state
        count = state.get("passes")
        if count is None or count == self.passes_seen():
            return
        first = not self.passes
        now = time.time()
        read = None if first else self._sample().bytes  # right after the counter changed: the pass's end
        with self._changed:
            self.passes.append(PassRecord(count, state.get("last_pass_at"), now, read,
                                          state.get("last_pass_requests")))
            self._changed.notify_all()


class Workload:
    def __init__(self, catalog: Catalog, target: Target, workdir: Path, log=print):
        self.catalog, self.target, self.workdir, self.log = catalog, target, workdir, log
        self.pulls: list[PullRecord] = []
        self.rounds: list[RoundRecord] = []
        self.watch = Watch(target, catalog.repositories)
        self.upstream: dict = {}
        self.wall_s = 0.0

    def run(self) -> Workload:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.watch.start()
        try:
            wait_for(lambda: self.watch.passes, "the addon's stats (storage.passes)", 60)
            n = 0
            for r, (at_once, planned) in enumerate(plan_rounds(self.catalog)):
                records = [PullRecord(n + i, r, p.image, p.by_digest, 0.0) for i, p in enumerate(planned)]
                n += len(records)
                with ThreadPoolExecutor(at_once) as pool:
                    list(pool.map(self._pull, records))
                self.rounds.append(self._end_of_round(r, at_once, len(records)))
                done = self.rounds[-1]
                self.log(f"round {r + 1}: {len(records)} pulls, {at_once} at once; "
                         f"{sum(1 for p in records if p.error)} failed; storage {done.bytes_checked / MIB:.1f} MiB "
                         f"(cap {self.catalog.max_bytes / MIB:.1f}); broken references {len(done.broken)}"
                         + "".join(f"\n  {b}" for b in done.broken))
        finally:
            self.watch.stop()
        self.upstream = self._upstream_figures()
        self.wall_s = time.monotonic() - started
        return self

    def _pull(self, record: PullRecord) -> None:
        image = self.catalog.images[record.image]
        ref = f"{self.target.address}/{image.name}" + (f"@{image.manifest_digest}" if record.by_digest
                                                       else f":{image.tag}")
        dest = self.workdir / f"pull-{record.n}"
        record.start = time.time()
        self.pulls.append(record)
        try:
            pull(ref, dest, cert_dir=self.target.trust, timeout=PULL_TIMEOUT)
        except PullError as e:
            record.error = str(e)[-400:]
        record.end = time.time()
        if not record.error:
            record.mismatch = mismatch(dest, image)
        shutil.rmtree(dest, ignore_errors=True)

    def _end_of_round(self, r: int, at_once: int, count: int) -> RoundRecord:
        quiesced, uploads_left = self._quiesce()
        quiet_at, before = time.time(), self.watch.passes_seen()
        cap = self.catalog.max_bytes
        due = (self.watch.storage_state.get("used_bytes") or 0) > cap or self._stored() > cap
        came = None
        if due:  # a pass that began once all was stored, or one that ended after and left the storage under the cap
            came = self.watch.wait_for(lambda passes: any(
                p.passes > before and ((p.start or 0) >= quiet_at or self._stored() <= cap) for p in passes),
                PASS_TIMEOUT)
        broken, checked = self._check()
        return RoundRecord(r, at_once, count, quiesced, uploads_left, due, came, checked, broken, time.time())

    def _stored(self) -> int:
        return self.target.storage.read(self.catalog.repositories).total

    def _quiesce(self) -> tuple[bool, int]:
        """Until no transfer is open in the mirror, no request upstream and no upload in the registry."""
        deadline = time.monotonic() + QUIESCE_TIMEOUT
        folders = 0
        while time.monotonic() < deadline:
            folders = self.target.storage.read(self.catalog.repositories).upload_folders
            if not folders and not fetch_json(self.target.stats_url)["transfers"] and \
                    self.target.upstream.stats()["open"] == 0:
                return True, 0
            time.sleep(0.1)  # polling interval
        return False, folders

    def _check(self) -> tuple[list[str], int]:
        """Broken references seen twice in a row, between the same two pass counts (at most a few tries)."""
        for _ in range(5):
            before = self.watch.passes_seen()
            first = self.target.storage.broken_references()
            found = sorted(set(first) & set(self.target.storage.broken_references())) if first else []
            stored = self._stored()
            if self.watch.passes_seen() == before:
                break
        return found, stored

    def _upstream_figures(self) -> dict:
        stats = self.target.upstream.settled_stats()
        gets = Counter()
        sent = Counter()
        for record in stats["requests"]:
            path = record["path"].partition("?")[0]
            if record["method"] == "GET" and "/blobs/" in path and record["status"] in (200, 206):
                digest = path.rsplit("/", 1)[1]
                gets[digest] += 1
                sent[digest] += record["bytes"]
        sizes = self.catalog.sizes
        total = sum(sent.values())
        distinct = sum(min(sent[d], sizes.get(d, sent[d])) for d in sent)
        after_eviction = no_eviction = 0
        for digest, count in gets.items():
            again = count - 1
            allowed = min(again, self.watch.evictions[digest])
            after_eviction += allowed * sizes.get(digest, 0)
            no_eviction += (again - allowed) * sizes.get(digest, 0)
        return {"blob_gets": sum(gets.values()), "bytes_total": total, "bytes_distinct": distinct,
                "bytes_refetched": total - distinct, "refetched_after_eviction": after_eviction,
                "refetched_no_eviction_seen": no_eviction,
                "blobs_refetched_no_eviction_seen": sorted(d for d, c in gets.items()
                                                           if c - 1 > self.watch.evictions[d]),
                "records_complete": stats["request_count"] == len(stats["requests"])}

    def figures(self) -> dict:
        """The run's figures (bytes; see the module's docstring for each)."""
        cap = self.catalog.max_bytes
        samples = self.watch.samples
        ends = [p for p in self.watch.passes if p.bytes is not None]
        times = sorted({s.at for s in samples} | {p.seen for p in ends})
        bound = dict(zip(times, self.bounds(times), strict=True))
        over_cap = [s.bytes - cap for s in samples]
        over_bound = [(s.bytes - s.aside - bound[s.at], s.at) for s in samples]
        end_bytes = sorted(p.bytes for p in ends)
        end_over_bound = [p.bytes - bound[p.seen] for p in ends]
        worst = max(over_bound, default=(0, 0.0))
        requests = [p.requests for p in ends if p.requests is not None]
        graced = dict(zip(times, self.bounds(times, GRACE_FIGURE), strict=True))
        return {
            "pulls": len(self.pulls), "failures": sum(1 for p in self.pulls if p.error),
            "non_identical": sum(1 for p in self.pulls if p.mismatch),
            "first_failure": next((p.error for p in self.pulls if p.error), ""),
            "first_mismatch": next((p.mismatch for p in self.pulls if p.mismatch), ""),
            "max_bytes": cap, "distinct_bytes": self.catalog.distinct_bytes, "wall_s": round(self.wall_s, 1),
            "upstream": self.upstream,
            "samples": len(samples), "sample_max_bytes": max((s.bytes for s in samples), default=0),
            "sample_max_over_cap": max(over_cap, default=0),
            "sample_max_over_bound": worst[0],
            "samples_over_bound": sum(1 for o, _ in over_bound if o > 0),
            "samples_over_bound_worst": self._worst_samples(bound),
            "sample_max_uploads": max((s.uploads for s in samples), default=0),
            "sample_max_aside": max((s.aside for s in samples), default=0),
            # the same with pulls that ended within GRACE_FIGURE seconds counted too
            "sample_max_over_bound_grace": max((s.bytes - s.aside - graced[s.at] for s in samples), default=0),
            "samples_over_bound_grace": sum(1 for s in samples if s.bytes - s.aside > graced[s.at]),
            "passes": len(ends), "pass_end_bytes": end_bytes,
            "pass_end_max": max(end_bytes, default=0),
            "pass_end_p50": int(statistics.median(end_bytes)) if end_bytes else 0,
            "pass_ends_over_cap": sum(1 for b in end_bytes if b > cap),
            "pass_end_max_over_bound": max(end_over_bound, default=0),
            "pass_ends_over_bound": sum(1 for o in end_over_bound if o > 0),
            # the requests a pass made on the storage (the addon's storage.last_pass_requests), over the pass ends
            # seen (a pass whose end the poll missed is not in them), and the addon's last value
            "pass_requests_max": max(requests, default=None),
            "pass_requests_p50": int(statistics.median(requests)) if requests else None,
            "pass_requests_last": self.watch.storage_state.get("last_pass_requests"),
            "rounds": [dataclasses.asdict(r) for r in self.rounds],
            "broken_references": sum(len(r.broken) for r in self.rounds),
            "rounds_with_broken_references": sum(1 for r in self.rounds if r.broken),
            "due_passes_missing": sum(1 for r in self.rounds if r.pass_came is False),
            "rounds_not_quiesced": sum(1 for r in self.rounds if not r.quiesced),
            "stats_poll_errors": self.watch.poll_errors,
        }

    def _worst_samples(self, bound: dict[float, int], count: int = 5) -> list[dict]:
        """The samples furthest over the bound, for a look: seconds since the first pull, bytes (of which partial
        uploads and data set aside), the bound, pulls running then, seconds since the last pass end seen."""
        over = sorted(((s.bytes - s.aside - bound[s.at], s) for s in self.watch.samples
                       if s.bytes - s.aside > bound[s.at]), key=lambda o: -o[0])[:count]
        first = min((p.start for p in self.pulls if p.start), default=0.0)
        ends = [p.seen for p in self.watch.passes if p.bytes is not None]
        return [{"t": round(s.at - first, 2), "over": o, "bytes": s.bytes, "uploads": s.uploads, "aside": s.aside,
                 "bound": bound[s.at], "pulls_running": sum(1 for p in self.pulls if p.start and p.start <= s.at
                                                            and (p.end is None or p.end > s.at)),
                 "since_pass_end": round(s.at - max((e for e in ends if e <= s.at), default=first), 2)}
                for o, s in over]

    def bounds(self, times: list[float], grace: float = 0.0) -> list[int]:
        """The bound at each of `times` (ascending): max_bytes plus the distinct bytes of the images being pulled;
        with `grace`, pulls that ended less than that many seconds before count too."""
        cap, catalog = self.catalog.max_bytes, self.catalog
        pulls = sorted((p for p in self.pulls if p.start), key=lambda p: p.start)
        passes = sorted(self.watch.passes, key=lambda p: p.seen)
        held, ending, out = Counter(), [], []
        held_bytes, i, k, last_start = 0, 0, 0, float("-inf")
        sizes = catalog.sizes
        for t in times:
            while i < len(pulls) and pulls[i].start <= t:
                p = pulls[i]
                for d in catalog.blobs(catalog.images[p.image]):
                    held[d] += 1
                    held_bytes += sizes[d] if held[d] == 1 else 0
                heapq.heappush(ending, (p.end if p.end is not None else float("inf"), i))
                i += 1
            while k < len(passes) and passes[k].seen <= t:
                last_start = max(last_start, passes[k].start or float("-inf"))
                k += 1
            # ended before what the last finished pass kept (and, with a grace, before it)
            while ending and ending[0][0] < min(last_start - COMMIT_GRACE, t - grace):
                _, j = heapq.heappop(ending)
                for d in catalog.blobs(catalog.images[pulls[j].image]):
                    held[d] -= 1
                    held_bytes -= sizes[d] if held[d] == 0 else 0
            out.append(cap + held_bytes)
        return out


def mismatch(dest: Path, image: seed.Image) -> str:
    """What skopeo wrote that differs from the seeded image, or "" when every byte matches."""
    try:
        if (dest / "manifest.json").read_bytes() != image.manifest:
            return f"{image.name}:{image.tag}: manifest differs"
        for blob in (*image.layers, image.config):
            h, size = hashlib.sha256(), 0
            with open(dest / blob.digest.split(":")[1], "rb") as f:
                while chunk := f.read(4 * MIB):
                    h.update(chunk)
                    size += len(chunk)
            if size != blob.size or "sha256:" + h.hexdigest() != blob.digest:
                return f"{image.name}:{image.tag}: blob {blob.digest} differs ({size} bytes)"
    except OSError as e:
        return f"{image.name}:{image.tag}: {e}"
    return ""


def fetch_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


def wait_for(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)  # polling interval


def _repositories(top: Path):
    todo = [""]
    while todo:
        name = todo.pop()
        children = _dirs(top / name)
        if name and ("_layers" in children or "_manifests" in children):
            yield name, top / name
        todo.extend(f"{name}/{c}".lstrip("/") for c in children if not c.startswith("_"))


def _links(base: Path) -> dict[str, str | None]:
    links = {}
    for algorithm in _dirs(base):
        for hex_ in _dirs(base / algorithm):
            link = base / algorithm / hex_ / "link"
            if link.exists():  # a folder without its link is one expiry emptied; it goes once quiet
                links[f"{algorithm}:{hex_}"] = _read_text(link)
    return links


def _data(digest: str) -> Path:
    algorithm, hex_ = digest.split(":", 1)
    return Path("blobs", algorithm, hex_[:2], hex_, "data")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _dirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []
