"""What the registry's filesystem storage (its layout: storage/layout.py) holds, read once: repositories and
their links, blob sizes, and the digests each manifest names.

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
from pathlib import Path
from typing import NamedTuple

from registry_mirror.storage.layout import V2, blob_data, is_digest, stored_digests, subdirs
from registry_mirror.storage.uploads import uploads

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


def inventory(root: Path) -> Inventory:
    """Reads the storage under the registry's `rootdirectory` once."""
    v2 = root / V2
    pending: set[str] = set()
    repositories = _repositories(v2 / "repositories", pending)
    revisions = {link for repository in repositories.values() for link in repository.revisions.items()}
    references, unreadable = _manifests(v2, revisions)
    for repository in repositories.values():
        pending.update(set(repository.tags.values()) - repository.revisions.keys())
    return Inventory(repositories, blob_sizes(root), references, frozenset(unreadable),
                     frozenset(pending), _images(repositories, references), sum(u.bytes for u in uploads(root)))


def repository_needs(root: Path, name: str) -> frozenset[str] | None:
    """Every digest the manifests a repository's revision and tag links name at this moment reach, or None when
    that is unknown (a link or a manifest being written, or not a manifest): then it needs every layer it has."""
    path, pending = root / V2 / "repositories" / name, set[str]()
    revisions = _links(path / "_manifests" / "revisions", pending)  # a layer link being written is no manifest
    tags, _ = _tags(path / "_manifests")
    # a link being written will hold the digest its folder names
    named = set(revisions.items()) | {(digest, digest) for digest in pending | set(tags.values())}
    references, unreadable = _manifests(root / V2, named)
    if unreadable:
        return None
    needed = set().union(*(_reach(digest, references) for digest, _ in named))
    layers = _links(path / "_layers", set())
    needed |= {links[d] for links in (revisions, layers) for d in needed if d in links}
    return frozenset(needed)


def _manifests(v2: Path, named: set[tuple[str, str]]) -> tuple[dict[str, frozenset[str]], set[str]]:
    """What the manifests `named` ((digest, the digest its link holds)) and their children name, and those whose
    data cannot be read as a manifest. A child never pulled is skipped: its index names it, and that is all."""
    references: dict[str, frozenset[str]] = {}
    unreadable: set[str] = set()
    todo, seen = list(named), set()
    while todo:
        digest, target = todo.pop()
        if digest in seen:
            continue
        seen.add(digest)
        data = _read(v2 / blob_data(target), MAX_MANIFEST + 1)
        if data is None and (digest, target) not in named:
            continue
        parsed = parse_manifest(data) if data is not None and len(data) <= MAX_MANIFEST else None
        if parsed is None:
            unreadable.add(digest)
            continue
        children, blobs = parsed
        references[digest] = children | blobs
        todo.extend((child, child) for child in children)
    return references, unreadable


def linked_now(root: Path) -> frozenset[str]:
    """Every digest a link of any repository names at this moment, including links being written."""
    named: set[str] = set()
    for r in _repositories(root / V2 / "repositories", named).values():
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


def _repositories(top: Path, pending: set[str]) -> dict[str, Repository]:
    # a name has any number of components, and `team` can be a repository as well as `team/app`'s parent
    found, todo = {}, [""]
    while todo:
        name = todo.pop()
        children = subdirs(top / name)
        if name and ("_manifests" in children or "_layers" in children):
            found[name] = _repository(name, top / name, pending)
        todo.extend(f"{name}/{child}".lstrip("/") for child in children if not child.startswith("_"))
    return found


def _repository(name: str, path: Path, pending: set[str]) -> Repository:
    manifests = path / "_manifests"
    tags, history = _tags(manifests)
    return Repository(name, _links(manifests / "revisions", pending), _links(path / "_layers", pending), tags,
                      history)


def _tags(manifests: Path) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """Each tag's current manifest, and the digests its history names."""
    tags, history = {}, {}
    for tag in subdirs(manifests / "tags"):
        current = _read_link(manifests / "tags" / tag / "current" / "link")
        if current:
            tags[tag] = current
        entries = frozenset(digest for digest, _ in _link_dirs(manifests / "tags" / tag / "index"))
        if entries:
            history[tag] = entries
    return tags, history


def _links(base: Path, pending: set[str]) -> dict[str, str]:
    links = {}
    for digest, link in _link_dirs(base):
        target = _read_link(link)
        if target:
            links[digest] = target
        elif link.exists():  # empty or garbled: being written; a folder without its link is one expiry emptied
            pending.add(digest)
    return links


def _link_dirs(base: Path) -> Iterator[tuple[str, Path]]:
    for algorithm in subdirs(base):
        for hex_ in subdirs(base / algorithm):
            if is_digest(f"{algorithm}:{hex_}"):
                yield f"{algorithm}:{hex_}", base / algorithm / hex_ / "link"


def blob_sizes(root: Path) -> dict[str, int]:
    """Every stored blob's data size, by digest; what vanishes while read is skipped."""
    sizes = {}
    for digest in stored_digests(root):
        try:
            sizes[digest] = (root / V2 / blob_data(digest)).stat().st_size
        except OSError:
            pass  # being moved into place, or just deleted
    return sizes


def _read_link(path: Path) -> str | None:
    text = (_read(path, 256) or b"").decode("ascii", "replace").strip()
    return text if is_digest(text) else None


def _read(path: Path, limit: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None
