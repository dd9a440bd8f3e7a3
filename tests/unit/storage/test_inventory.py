"""The storage inventory reads Distribution's filesystem layout as the running registry leaves it, garbage included."""
import hashlib
import json
import random
from pathlib import Path

import pytest

from registry_mirror.storage.inventory import Image, inventory, parse_manifest

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Storage:
    """Writes the registry's layout with real manifests and random blob bytes (seeded: a failure reproduces)."""

    def __init__(self, root: Path, seed: int = 0):
        self.root, self.v2 = root, root / "docker" / "registry" / "v2"
        self.random = random.Random(seed)

    def data_path(self, digest: str) -> Path:
        algorithm, hex_ = digest.split(":")
        return self.v2 / "blobs" / algorithm / hex_[:2] / hex_ / "data"

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        self.data_path(digest).parent.mkdir(parents=True, exist_ok=True)
        self.data_path(digest).write_bytes(data)
        return digest

    def blob(self, size: int = 64) -> str:
        return self.put(self.random.randbytes(size))

    def size(self, *digests: str) -> int:
        return sum(self.data_path(d).stat().st_size for d in set(digests))

    def write_link(self, repository: str, relative: str, text: str) -> None:
        path = self.v2 / "repositories" / repository / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def link(self, repository: str, kind: str, digest: str) -> None:
        algorithm, hex_ = digest.split(":")
        folder = {"layer": "_layers", "revision": "_manifests/revisions"}[kind]
        self.write_link(repository, f"{folder}/{algorithm}/{hex_}/link", digest)

    def tag(self, repository: str, tag: str, digest: str) -> None:
        algorithm, hex_ = digest.split(":")
        self.write_link(repository, f"_manifests/tags/{tag}/current/link", digest)
        self.write_link(repository, f"_manifests/tags/{tag}/index/{algorithm}/{hex_}/link", digest)

    def manifest(self, repository: str, doc: dict, tag: str | None) -> str:
        digest = self.put(json.dumps(doc, indent=3).encode())
        self.link(repository, "revision", digest)
        if tag:
            self.tag(repository, tag, digest)
        return digest

    def image(self, repository: str, layers: list[str], tag: str | None = None, media_type: str = DOCKER_V2) -> str:
        """An image manifest with a fresh config, its blobs linked to the repository as a pull leaves them."""
        config = self.put(json.dumps({"architecture": "amd64", "nonce": self.random.randbytes(8).hex()}).encode())
        for digest in (config, *layers):
            self.link(repository, "layer", digest)
        return self.manifest(repository, {
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 1},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d, "size": 1}
                       for d in layers]}, tag)

    def index(self, repository: str, children: list[str], tag: str | None, media_type: str = OCI_INDEX) -> str:
        return self.manifest(repository, {"schemaVersion": 2, "mediaType": media_type, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": 1, "platform": {"architecture": f"arch{i}", "os": "linux"}}
            for i, d in enumerate(children)]}, tag)

    def tree(self) -> dict[str, bytes | None]:
        """Every file (its bytes) and directory (None) under the root."""
        return {str(p.relative_to(self.root)): p.read_bytes() if p.is_file() else None for p in self.root.rglob("*")}

    def broken_links(self) -> list[str]:
        """Layer and revision links naming a digest whose data is gone: what eviction must never leave."""
        links = [p for p in (self.v2 / "repositories").rglob("link") if "_layers" in p.parts or "revisions" in p.parts]
        return [str(p) for p in links if p.read_text() and not self.data_path(p.read_text()).exists()]


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(tmp_path)


SHA, SHB, SHC = ("sha256:" + c * 64 for c in "abc")


@pytest.mark.parametrize("doc, children, blobs", [
    ({"schemaVersion": 2, "mediaType": DOCKER_V2, "config": {"digest": SHA}, "layers": [{"digest": SHB}]},
     set(), {SHA, SHB}),
    # a signature's subject is the image it signs, not one of its parts
    ({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"digest": SHA}], "subject": {"digest": SHC}},
     {SHA}, set()),
    ({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [{"digest": "sha512:" + "d" * 128}]},
     {"sha512:" + "d" * 128}, set()),
    ({"schemaVersion": 1, "fsLayers": [{"blobSum": SHA}, {"blobSum": SHA}]}, set(), {SHA}),
    ({"schemaVersion": 2, "layers": [{"digest": "sha256:ab"}, {"digest": 7}, "x", None], "config": []}, set(), set()),
    ({"schemaVersion": 2, "blobs": [{"digest": SHA}]}, set(), {SHA}),
])
def test_parse_manifest_names_what_it_needs(doc, children, blobs):
    assert parse_manifest(json.dumps(doc).encode()) == (children, blobs)


@pytest.mark.parametrize("data", [b"", b"not json", b"\xff\xfe\x00garbage", b"[1, 2]", b'{"layers": []}',
                                  b'{"schemaVersion": 3}', b"[" * 100_000])
def test_parse_manifest_refuses_what_is_not_a_manifest(data):
    assert parse_manifest(data) is None


def test_inventory_of_nested_repositories_tags_and_sizes(storage):
    base, app_layer = storage.blob(100), storage.blob(200)
    app = storage.image("team/app", [base, app_layer], tag="1.0")
    team = storage.image("team", [base], tag="latest")  # `team` is a repository and `team/app`'s parent
    inv = inventory(storage.root)
    assert sorted(inv.repositories) == ["team", "team/app"]
    assert inv.repositories["team/app"].tags == {"1.0": app}
    assert inv.repositories["team/app"].tag_history == {"1.0": {app}}
    assert inv.images == (Image("team", team), Image("team/app", app))
    assert inv.blob_sizes[base] == 100 and inv.total_bytes == storage.size(*inv.blob_sizes)
    blobs = inv.image_blobs(Image("team/app", app))
    assert {app, base, app_layer} < blobs and len(blobs) == 4  # and the config


def test_an_index_is_one_image_with_its_children_unless_a_child_is_tagged(storage):
    shared = storage.blob()
    amd, arm = storage.image("multi", [shared, storage.blob()]), storage.image("multi", [shared, storage.blob()])
    index = storage.index("multi", [amd, arm], tag="1.0", media_type=DOCKER_LIST)
    inv = inventory(storage.root)
    assert inv.images == (Image("multi", index),)
    assert inv.image_blobs(Image("multi", index)) == {index, amd, arm} | inv.image_blobs(Image("multi", amd)) | \
        inv.image_blobs(Image("multi", arm))
    storage.tag("multi", "arm-only", arm)
    assert set(inventory(storage.root).images) == {Image("multi", index), Image("multi", arm)}


def test_an_index_child_missing_from_the_repository_is_still_named(storage):
    present = storage.image("multi", [storage.blob()])
    index = storage.index("multi", [present, SHA], tag="1.0")
    inv = inventory(storage.root)
    assert inv.images == (Image("multi", index),) and SHA in inv.image_blobs(Image("multi", index))
    assert inv.unreadable == set()  # a platform never pulled is no sign of garbage


def test_other_digest_algorithms_are_read_from_their_own_folders(storage):
    data = storage.random.randbytes(50)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    storage.data_path(digest).parent.mkdir(parents=True)
    storage.data_path(digest).write_bytes(data)
    storage.image("app", [digest], tag="1.0")
    inv = inventory(storage.root)
    assert inv.blob_sizes[digest] == 50 and digest in inv.repositories["app"].layers


@pytest.mark.parametrize("relative, text", [
    ("_layers/sha256/{hex}/link", ""),
    ("_layers/sha256/{hex}/link", "sha256:"),
    ("_layers/sha256/{hex}/link", "\x00\xff garbage"),
    ("_manifests/revisions/sha256/{hex}/link", ""),
    ("_manifests/revisions/sha256/{hex}/link", "md5:1234"),
])
def test_an_unreadable_link_is_skipped_and_its_digest_pending(storage, relative, text):
    blob = storage.blob()
    storage.image("app", [storage.blob()], tag="1.0")
    storage.write_link("app", relative.format(hex=blob.split(":")[1]), text)
    inv = inventory(storage.root)
    repository = inv.repositories["app"]
    assert blob not in repository.layers and blob not in repository.revisions
    assert inv.pending == {blob} and len(inv.images) == 1


def test_garbage_never_raises(storage):
    good = storage.image("app", [storage.blob()], tag="1.0")
    missing = storage.image("app", [SHA], tag="gone")
    storage.data_path(missing).unlink()  # a revision naming missing data
    not_json = storage.put(b"\x00 not a manifest")
    storage.link("app", "revision", not_json)
    storage.write_link("app", "_manifests/tags/empty/current/link", "")
    storage.write_link("app", "_layers/sha256/not-hex/link", SHA)
    (storage.v2 / "blobs" / "sha256" / "zz" / "zzzz").mkdir(parents=True)  # no data file
    (storage.v2 / "repositories" / "app" / "_layers" / "stray-file").write_text("x")
    inv = inventory(storage.root)
    assert set(inv.images) == {Image("app", good), Image("app", missing), Image("app", not_json)}
    assert inv.unreadable == {not_json, missing} and missing not in inv.references
    # what an unreadable manifest needs is unknown: it keeps every layer of its repository
    layers = inv.repositories["app"].layers.keys()
    assert inv.image_blobs(Image("app", missing)) == layers | {missing}
    assert inv.image_blobs(Image("app", not_json)) == layers | {not_json}
    assert "empty" not in inv.repositories["app"].tags and inv.pending == set()


def test_a_tag_ahead_of_its_revision_is_pending(storage):
    manifest = storage.put(json.dumps({"schemaVersion": 2, "layers": []}).encode())
    storage.image("app", [storage.blob()], tag="1.0")
    storage.write_link("app", "_manifests/tags/2.0/current/link", manifest)  # the proxy writes the tag first
    assert inventory(storage.root).pending == {manifest}


def test_an_empty_or_missing_root_is_an_empty_inventory(tmp_path):
    inv = inventory(tmp_path / "nowhere")
    assert (inv.repositories, inv.images, inv.total_bytes) == ({}, (), 0)
