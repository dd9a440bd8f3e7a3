"""The registry's storage as the running registry leaves it, written by a test through the storage seam
(storage/store.py), so that one test runs on a folder and on a bucket alike (the `storage` fixture,
tests/unit/conftest.py)."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from registry_mirror.storage.layout import (
    BLOBS,
    REPOSITORIES,
    V2,
    data_path,
    in_repository,
    is_digest,
    linked_digest,
    repository_path,
    stored_file,
)
from registry_mirror.storage.store import FolderStore, Store

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
WHOLE = 1 << 30  # a read limit no test's file reaches


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Storage:
    """Writes the registry's layout with real manifests and random blob bytes (seeded: a failure reproduces)."""

    def __init__(self, store: Store, seed: int = 0):
        self.store = store
        self.random = random.Random(seed)

    @property
    def root(self) -> Path:
        """The folder, for what only a folder has (folders, file times): such a test uses `folder_storage`."""
        assert isinstance(self.store, FolderStore), "a folder-only test: use the folder_storage fixture"
        return self.store.root

    @property
    def v2(self) -> Path:
        return self.root / V2

    def data_file(self, digest: str) -> Path:
        """The blob's data file in the folder."""
        return self.root / data_path(digest)

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        self.store.write(data_path(digest), data)
        return digest

    def blob(self, size: int = 64) -> str:
        return self.put(self.random.randbytes(size))

    def has(self, digest: str) -> bool:
        """Whether the blob's data is in place."""
        return self.store.exists(data_path(digest))

    def data(self, digest: str) -> bytes | None:
        return self.store.read(data_path(digest), WHOLE)

    def remove(self, digest: str) -> None:
        assert self.store.delete(data_path(digest))

    def sizes(self) -> dict[str, int]:
        """Every blob data file in place, by digest: its bytes."""
        return {found[0]: entry.size for entry in self.store.files(BLOBS)
                if (found := stored_file(entry.path)) is not None and not found[1]}

    def size(self, *digests: str) -> int:
        sizes = self.sizes()
        return sum(sizes[d] for d in set(digests))

    def stored_bytes(self) -> int:
        return sum(self.sizes().values())

    def write_link(self, repository: str, relative: str, text: str) -> None:
        self.store.write(repository_path(repository, relative), text.encode())

    def read_link(self, repository: str, relative: str) -> bytes | None:
        return self.store.read(repository_path(repository, relative), WHOLE)

    def has_link(self, repository: str, relative: str) -> bool:
        return self.store.exists(repository_path(repository, relative))

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

    def paths(self, folder: str = "") -> list[str]:
        """Every file under `folder`, sorted."""
        return sorted(entry.path for entry in self.store.files(folder))

    def tree(self, folder: str = "") -> dict[str, bytes | None]:
        """Every file under `folder` and its bytes (a bucket has no folders: the files are what a test compares)."""
        return self.store.read_many(self.paths(folder), WHOLE)

    def repository_tree(self, name: str) -> dict[str, bytes | None]:
        return self.tree(f"{REPOSITORIES}/{name}")

    def broken_links(self) -> list[str]:
        """Layer and revision links naming a digest whose data is gone: what eviction must never leave."""
        links = [path for path in self.paths(REPOSITORIES)
                 if (found := in_repository(path)) is not None and linked_digest(found[1]) is not None]
        present = set(self.paths(BLOBS))
        texts = self.store.read_many(links, 256)
        return [path for path, text in texts.items()
                if text and is_digest(digest := text.decode("ascii", "replace").strip())
                and data_path(digest) not in present]
