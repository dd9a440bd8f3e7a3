"""What the registry's storage (its layout: storage/layout.py; a folder or a bucket: storage/store.py) holds, read
once: repositories and their links, blob sizes, and the digests each manifest names.

The registry keeps serving while this reads, so whatever vanishes or cannot be read is skipped, never raised.
It writes links in place (truncate, then write), so an empty or garbled link may be one being written: the
digest its directory names is `pending`, as is a tag's manifest before its revision link exists (the proxy
writes the tag first), and eviction keeps their data.

An `Image`, the unit of expiry, is a manifest revision of a repository that no other revision there reaches
(an index's children go with their index) or that a tag names. A child pulled by digest alone leaves no trace
in the tree, so it expires with its index; tag it, and it is an image of its own.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from registry_mirror.storage.layout import (
    BLOBS,
    REPOSITORIES,
    data_path,
    in_repository,
    is_digest,
    linked_digest,
    stored_file,
    tag_link,
)
from registry_mirror.storage.store import Entry, Store
from registry_mirror.storage.uploads import UPLOADS

MAX_MANIFEST = 4 << 20  # Distribution refuses larger manifests, so larger data is not one


def parse_manifest(data: bytes) -> tuple[frozenset[str], frozenset[str]] | None:
    """(child manifests, other blobs) that a manifest names, or None when the data is not a JSON manifest.

    Configs, layers, an index's children, schema1's fsLayers and an OCI artifact's blobs; not `subject`: a
    signature needs the image it signs, but does not own it."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # undecodable bytes are a ValueError too
        return None
    if not isinstance(doc, dict) or doc.get("schemaVersion") not in (1, 2):
        return None

    def digests(key: str, field: str = "digest") -> frozenset[str]:
        entries = doc.get(key)
        entries = [entries] if isinstance(entries, dict) else entries if isinstance(entries, list) else []
        values = (entry.get(field) for entry in entries if isinstance(entry, dict))
        return frozenset(v for v in values if isinstance(v, str) and is_digest(v))

    blobs = digests("config") | digests("layers") | digests("blobs") | digests("fsLayers", "blobSum")
    return digests("manifests"), blobs


class Image(NamedTuple):
    """A tuple, so that it is also the (repository, digest) key last pulls are recorded by."""
    repository: str
    digest: str


@dataclass(frozen=True)
class Repository:
    name: str
    revisions: Mapping[str, str]  # manifest digest -> the digest its link holds (another only across algorithms)
    layers: Mapping[str, str]  # blob digest -> the digest its link holds
    tags: Mapping[str, str]  # tag -> its current manifest digest
    tag_history: Mapping[str, frozenset[str]]  # tag -> the digests its index entries are named by


@dataclass(frozen=True)
class Inventory:
    repositories: Mapping[str, Repository]
    blob_sizes: Mapping[str, int]  # digest -> bytes of its data file
    references: Mapping[str, frozenset[str]]  # manifest digest -> the digests its data names
    unreadable: frozenset[str]  # manifests whose data is missing or not a manifest
    pending: frozenset[str]  # digests the registry may be writing links for right now
    images: tuple[Image, ...]
    upload_bytes: int = 0  # partial uploads (storage/uploads.py): they take space under max_bytes too

    @property
    def total_bytes(self) -> int:
        return sum(self.blob_sizes.values()) + self.upload_bytes

    def image_blobs(self, image: Image) -> frozenset[str]:
        """Every digest the image needs: its manifest, configs, layers, children and theirs."""
        repository = self.repositories[image.repository]
        needed = _reach(image.digest, self.references)
        if needed & self.unreadable:  # what it needs is unknown, so it keeps every layer of its repository
            needed |= repository.layers.keys()
        # a link may hold another algorithm's digest of the same blob: Distribution serves that one's data
        needed |= {links[d] for links in (repository.revisions, repository.layers) for d in needed if d in links}
        return frozenset(needed)


def inventory(store: Store) -> Inventory:
    """Reads the storage once (storage/store.py: a folder or a bucket)."""
    pending: set[str] = set()
    repositories, upload_bytes = _repositories(store, pending)
    revisions = {link for repository in repositories.values() for link in repository.revisions.items()}
    references, unreadable = _manifests(store, revisions)
    for repository in repositories.values():
        pending.update(set(repository.tags.values()) - repository.revisions.keys())
    return Inventory(repositories, blob_sizes(store), references, frozenset(unreadable),
                     frozenset(pending), _images(repositories, references), upload_bytes)


def repository_needs(store: Store, name: str) -> frozenset[str] | None:
    """Every digest the manifests a repository's revision and tag links name at this moment reach, or None when
    that is unknown (a link or a manifest being written, or not a manifest): then it needs every layer it has."""
    pending = set[str]()  # a layer link being written is no manifest
    repository = _repositories(store, pending, only=name, layers_pending=set())[0].get(name) or \
        Repository(name, {}, {}, {}, {})
    revisions = repository.revisions
    # a link being written will hold the digest its folder names
    named = set(revisions.items()) | {(digest, digest) for digest in pending | set(repository.tags.values())}
    references, unreadable = _manifests(store, named)
    if unreadable:
        return None
    needed = set().union(*(_reach(digest, references) for digest, _ in named))
    needed |= {links[d] for links in (revisions, repository.layers) for d in needed if d in links}
    return frozenset(needed)


def _manifests(store: Store, named: set[tuple[str, str]]) -> tuple[dict[str, frozenset[str]], set[str]]:
    """What the manifests `named` ((digest, the digest its link holds)) and their children name, and those whose
    data cannot be read as a manifest. A child never pulled is skipped: its index names it, and that is all.
    Read a level at a time: a bucket reads each level's manifests at once."""
    references: dict[str, frozenset[str]] = {}
    unreadable: set[str] = set()
    seen: set[str] = set()
    level = dict(sorted(named))  # digest -> the digest its data is stored under
    while level:
        data = store.read_many({data_path(target) for target in level.values()}, MAX_MANIFEST + 1)
        seen.update(level)
        children_found: dict[str, str] = {}
        for digest, target in level.items():
            body = data[data_path(target)]
            if body is None and (digest, target) not in named:
                continue
            parsed = parse_manifest(body) if body is not None and len(body) <= MAX_MANIFEST else None
            if parsed is None:
                unreadable.add(digest)
                continue
            children, blobs = parsed
            references[digest] = children | blobs
            children_found.update((child, child) for child in children if child not in seen)
        level = children_found
    return references, unreadable


def linked_now(store: Store) -> frozenset[str]:
    """Every digest a link of any repository names at this moment, including links being written."""
    named: set[str] = set()
    for r in _repositories(store, named)[0].values():
        named.update(r.revisions.keys(), r.revisions.values(), r.layers.keys(), r.layers.values(), r.tags.values())
    return frozenset(named)


def _images(repositories: Mapping[str, Repository], references: Mapping[str, frozenset[str]]) -> tuple[Image, ...]:
    images: list[Image] = []
    for name, repository in sorted(repositories.items()):
        revisions = repository.revisions.keys()
        reached = {d: _reach(d, references) for d in revisions}
        children = {c for d, reach in reached.items() for c in reach - {d}} & revisions
        roots = (revisions - children) | (set(repository.tags.values()) & revisions)
        covered = set().union(*(reached[r] for r in roots))
        roots |= revisions - covered  # revisions that only reach each other: garbage, but still someone's
        images.extend(Image(name, digest) for digest in sorted(roots))
    return tuple(images)


def _reach(start: str, references: Mapping[str, frozenset[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        digest = todo.pop()
        if digest not in seen:
            seen.add(digest)
            todo.extend(references.get(digest, ()))
    return seen


def _repositories(store: Store, pending: set[str], only: str | None = None,
                  layers_pending: set[str] | None = None) -> tuple[dict[str, Repository], int]:
    """Every repository's links, read (`only`: one repository's), and the bytes of partial uploads. A digest
    whose revision link (layer link: to `layers_pending`, by default the same) is empty or garbled goes to
    `pending`: the registry is writing it."""
    files: dict[str, dict[str, str]] = {}  # repository -> its file -> the store path
    upload_bytes = 0
    for entry in store.files(REPOSITORIES if only is None else f"{REPOSITORIES}/{only}"):
        found = in_repository(entry.path)
        if found is None or (only is not None and found[0] != only):
            continue
        name, inside = found
        if inside.startswith(UPLOADS + "/"):
            upload_bytes += entry.size
        elif linked_digest(inside) or tag_link(inside):
            files.setdefault(name, {})[inside] = entry.path
    texts = store.read_many([path for inside in files.values() for path in inside.values()], 256)
    by_kind = (pending, pending if layers_pending is None else layers_pending)
    return {name: _repository(name, {inside: texts[path] for inside, path in inside_files.items()}, *by_kind)
            for name, inside_files in sorted(files.items())}, upload_bytes


def _repository(name: str, files: Mapping[str, bytes | None], pending: set[str],
                layers_pending: set[str]) -> Repository:
    revisions: dict[str, str] = {}
    layers: dict[str, str] = {}
    tags: dict[str, str] = {}
    history: dict[str, set[str]] = {}
    for inside, data in sorted(files.items()):
        target = _link_text(data)
        if (digest := linked_digest(inside)) is not None:
            layer = inside.startswith("_layers/")
            if target:
                (layers if layer else revisions)[digest] = target
            elif data is not None:  # empty or garbled: being written; gone since the listing: deleted
                (layers_pending if layer else pending).add(digest)
        elif (tag := tag_link(inside)) is not None:
            name_, entry = tag
            if entry is not None:
                history.setdefault(name_, set()).add(entry)
            elif target:
                tags[name_] = target
    return Repository(name, revisions, layers, tags, {tag: frozenset(found) for tag, found in history.items()})


def blob_sizes(store: Store) -> dict[str, int]:
    """Every stored blob's data size, by digest."""
    return {digest: entry.size for digest, (entry, aside) in _blob_files(store) if not aside}


def set_aside(store: Store) -> dict[str, float]:
    """Blob data an expiry pass set aside (storage/eviction.py), by digest: when it was."""
    return {digest: entry.changed for digest, (entry, aside) in _blob_files(store) if aside}


def _blob_files(store: Store) -> Iterator[tuple[str, tuple[Entry, bool]]]:
    for entry in store.files(BLOBS):
        if (found := stored_file(entry.path)) is not None:
            yield found[0], (entry, found[1])


def _link_text(data: bytes | None) -> str | None:
    text = (data or b"")[:256].decode("ascii", "replace").strip()
    return text if is_digest(text) else None
