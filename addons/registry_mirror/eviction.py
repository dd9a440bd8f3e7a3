"""The mirror's own expiry of the registry's storage: by age, then by size, aware of what shares what.

`plan` is pure. Images last pulled more than `max_age` ago go (none when it is infinite: the expiry's answer to
a clock step); then, while the bytes the remaining images need (each blob counted once, whichever repositories
share it) exceed `max_bytes`, the least recently pulled go. A blob's data goes when no remaining image needs it,
which implies that no remaining link names it; blobs in flight and those the inventory saw being linked stay.
An image whose blobs are in flight still loses its links: the registry links a blob again when its transfer
commits, and one left unlinked is the next pass's orphan.

`apply` deletes one image at a time, in the plan's order: its tag links, then its revision links (its own
last, so that until then the next inventory still sees it whole), then the layer links nothing remaining in
its repository needs; blob data only after every link, and only for blobs no link names when re-read just
before. So no link ever names deleted data, and what a crash leaves undone is a tail of the plan, which the next
plan (same pull times, same clock) picks again: the pass finishes as if it had never stopped.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .storage_inventory import Image, Inventory, linked_now
from .storage_layout import V2, blob_data, layer_link, revision_link, tag_current_link, tag_index_link


@dataclass(frozen=True)
class Removal:
    image: Image
    last_pull: float
    reason: str  # "age", "size" or "forget"
    links: tuple[str, ...]  # link files relative to the repository's directory, in deletion order


@dataclass(frozen=True)
class Plan:
    removals: tuple[Removal, ...]  # in deletion order: the least recently pulled first
    stray_links: Mapping[str, tuple[str, ...]]  # repository -> layer links no image of it needs, removed last
    repositories_removed: tuple[str, ...]  # no image remains: the directory goes once empty
    blobs: Mapping[str, int]  # digest -> bytes of the data that goes
    bytes_kept: int

    @property
    def bytes_freed(self) -> int:
        return sum(self.blobs.values())

    @property
    def link_files(self) -> tuple[tuple[str, str], ...]:
        """(repository, link file relative to it) in deletion order."""
        own = [(r.image.repository, link) for r in self.removals for link in r.links]
        return tuple(own + [(name, link) for name, links in sorted(self.stray_links.items()) for link in links])

    @property
    def deletions(self) -> int:
        return len(self.link_files) + len(self.blobs)


@dataclass(frozen=True)
class Applied:
    images: tuple[tuple[Image, float], ...]  # removed, with their last pull
    blobs: tuple[str, ...]  # whose data was deleted
    bytes_freed: int
    links_deleted: int
    relinked: tuple[str, ...]  # kept: a link named them again by the time their data was due


def plan(inv: Inventory, last_pull: Callable[[str, str], float], now: float, max_age: float,
         max_bytes: int | None, in_flight: frozenset[str] = frozenset(),
         forgotten: frozenset[Image] = frozenset()) -> Plan:
    """What a pass removes; `last_pull(repository, digest)` is a wall-clock time, like `now`. `forgotten`: images
    an operator (or a deletion upstream) removes whatever their age."""
    pulls = {image: last_pull(image.repository, image.digest) for image in inv.images}
    holds = {image: inv.image_blobs(image) for image in inv.images}
    protected = (in_flight | inv.pending) & inv.blob_sizes.keys()
    order = sorted(inv.images, key=lambda image: (pulls[image], image))
    chosen = {image: "forget" for image in order if image in forgotten}
    chosen.update((image, "age") for image in order if image not in chosen and now - pulls[image] > max_age)

    holders = Counter(blob for image in order if image not in chosen for blob in holds[image])
    # the bytes the remaining images need; blobs in flight do not count: no eviction could free them, and
    # counting them would empty the storage while a big pull is under way
    kept = sum(inv.blob_sizes.get(blob, 0) for blob in holders.keys())
    for image in order:
        if max_bytes is None or kept <= max_bytes:
            break
        if image not in chosen:
            chosen[image] = "size"
            for blob in holds[image]:
                holders[blob] -= 1
                if not holders[blob]:
                    kept -= inv.blob_sizes.get(blob, 0)
    staying = {blob for blob, n in holders.items() if n} | protected
    blobs = {digest: size for digest, size in sorted(inv.blob_sizes.items()) if digest not in staying}

    going = [image for image in order if image in chosen]  # the expired are the oldest, so they come first
    links: dict[Image, tuple[list[str], list[str], list[str]]] = {image: ([], [], []) for image in going}
    stray, emptied = {}, []
    for name, repository in sorted(inv.repositories.items()):
        mine = [image for image in order if image.repository == name]
        needed = set().union(*(holds[image] for image in mine if image not in chosen))
        owner = {blob: image for image in going if image.repository == name for blob in holds[image]}  # the last
        for digest in sorted(repository.revisions.keys() - needed):
            links[owner[digest]][1].append(revision_link(digest))  # every revision is some image's
        for digest in sorted(repository.layers.keys() - needed):
            if digest in owner:
                links[owner[digest]][2].append(layer_link(digest))
            else:
                stray.setdefault(name, []).append(layer_link(digest))
        for tag in sorted(repository.tags.keys() | repository.tag_history.keys()):
            history = sorted(repository.tag_history.get(tag, ()))
            current = repository.tags.get(tag)
            if current is not None and Image(name, current) in chosen:  # the whole tag goes, current link last
                links[Image(name, current)][0].extend([*(tag_index_link(tag, d) for d in history),
                                                       tag_current_link(tag)])
            else:  # only the history naming revisions that go
                for digest in history:
                    if digest in repository.revisions and digest not in needed:
                        links[owner[digest]][0].append(tag_index_link(tag, digest))
        if all(image in chosen for image in mine):
            emptied.append(name)

    def in_order(image: Image) -> tuple[str, ...]:
        tags, revisions, layers = links[image]
        own = revision_link(image.digest)
        return tuple(tags + sorted(revisions, key=lambda link: link == own) + layers)

    removals = tuple(Removal(image, pulls[image], chosen[image], in_order(image)) for image in going)
    return Plan(removals, {name: tuple(found) for name, found in stray.items()}, tuple(emptied), blobs,
                inv.total_bytes - sum(blobs.values()))


def apply(root: Path, plan: Plan) -> Applied:
    """Carries a plan out under the registry's `rootdirectory`; running it again is harmless."""
    v2 = root / V2
    repositories, blobs = v2 / "repositories", v2 / "blobs"
    links = sum(_delete(repositories / name / link, repositories) for name, link in plan.link_files)
    for name in plan.repositories_removed:
        _prune_repository(repositories / name, repositories)
    linked = linked_now(root)  # the registry may have linked a blob since the inventory
    relinked = tuple(digest for digest in plan.blobs if digest in linked)
    deleted = [digest for digest in plan.blobs if digest not in linked and _delete(v2 / blob_data(digest), blobs)]
    return Applied(tuple((r.image, r.last_pull) for r in plan.removals), tuple(deleted),
                   sum(plan.blobs[digest] for digest in deleted), links, relinked)


def _delete(path: Path, stop: Path) -> bool:
    """Removes one file, then the directories up to `stop` this left empty; a missing file is already done."""
    try:
        path.unlink()
        removed = True
    except FileNotFoundError:
        removed = False
    _prune(path.parent, stop)
    return removed


def _prune(directory: Path, stop: Path) -> None:
    # an rmdir racing the registry's mkdir-then-write can fail that one write: rare, and the client retries
    while directory != stop and directory.is_relative_to(stop):
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # not empty: something the plan did not know, such as an upload, keeps it
            return
        directory = directory.parent


def _prune_repository(path: Path, stop: Path) -> None:
    """Removes the empty directories a repository's links left; never `_uploads`, nor a nested repository."""
    for part in ("_manifests", "_layers"):
        for directory, _, _ in os.walk(path / part, topdown=False):
            try:
                os.rmdir(directory)
            except OSError:
                pass
    _prune(path, stop)
