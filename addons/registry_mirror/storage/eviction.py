"""The mirror's own expiry of the registry's storage: by age, then by size, aware of what shares what.

`plan` is pure. Images last pulled more than `max_age` ago go (none when it is infinite: the expiry's answer to
a clock step); then, while the bytes the remaining images need (each blob counted once, whichever repositories
share it) exceed `max_bytes`, the least recently pulled go. A blob's data goes when no remaining image needs it,
which implies that no remaining link names it; blobs in flight and those the inventory saw being linked stay.
An image whose blobs are in flight still loses its links: the registry links a blob again when its transfer
commits, and one left unlinked is the next pass's orphan.

`apply` runs while the registry serves. Tag and revision links go first, image by image in the plan's order (an
image's own revision last, so that until then the next inventory sees it whole); then each layer link that no
manifest its repository links at that moment needs (one pulled since the inventory may); then the data of blobs
no link names when re-read. That data is first set aside: copied (`data.evicting`), links read again (a copy on a
bucket takes a while), then deleted in place unless linked meanwhile. The registry may have found it just before,
and link it just after. After GRACE_SECONDS, longer than that gap, what a pull needs again comes
back (`repair`: a tag written since names a revision the pass unlinked, a manifest names a layer whose link the
registry found just before it went), links are read again, and data a link names goes back; the rest is
deleted. So no link names deleted data once a pass ends, and what a crash leaves undone the next plan (same pull
times, same clock) picks again, layer links as strays; data it left aside a later pass settles (`leftovers`).
The pass finishes as if it had never stopped.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from registry_mirror.storage.inventory import Image, Inventory, linked_now, repository_needs, set_aside
from registry_mirror.storage.layout import (
    aside_path,
    data_path,
    layer_link,
    layer_link_digest,
    linked_digest,
    repository_path,
    revision_link,
    tag_current_link,
    tag_index_link,
)
from registry_mirror.storage.store import Store

GRACE_SECONDS = 5.0  # far longer than the registry's gap between finding blob data and writing a link to it
LEFTOVER_SECONDS = 60.0  # data set aside this long ago belongs to no pass still running


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
        return self.manifest_links + self.layer_links

    @property
    def manifest_links(self) -> tuple[tuple[str, str], ...]:
        """Tag and revision links, image by image."""
        return tuple((r.image.repository, link) for r in self.removals for link in r.links
                     if layer_link_digest(link) is None)

    @property
    def layer_links(self) -> tuple[tuple[str, str], ...]:
        own = [(r.image.repository, link) for r in self.removals for link in r.links if layer_link_digest(link)]
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
    stray: dict[str, list[str]] = {}
    emptied = []
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


def apply(store: Store, plan: Plan, grace: float = GRACE_SECONDS, wait: Callable[[float], None] = time.sleep,
          on_step: Callable[[str], None] = lambda step: None) -> Applied:
    """Carries a plan out on the registry's storage, while the registry keeps serving; running it again is
    harmless. `on_step` is told before each change (the tests play the registry there)."""
    removed: list[tuple[str, str]] = []
    for name, link in plan.manifest_links:
        on_step(f"unlink {name}/{link}")
        if store.delete(repository_path(name, link)):
            removed.append((name, link))
    # a manifest pulled since the inventory may need a layer the plan would unlink: read what each needs now
    on_step("read needs")
    needs = {name: repository_needs(store, name) for name in dict.fromkeys(name for name, _ in plan.layer_links)}
    for name, link in plan.layer_links:
        need = needs[name]
        if need is None or layer_link_digest(link) in need:
            continue
        on_step(f"unlink {name}/{link}")
        if store.delete(repository_path(name, link)):
            removed.append((name, link))
    on_step("read links")
    # the registry may have linked a blob since the inventory; no data to go, no links to read (on a bucket,
    # a request each)
    linked = linked_now(store) if plan.blobs else frozenset()
    copied = [digest for digest in plan.blobs if digest not in linked and _copy_aside(store, digest, on_step)]
    # copies take a while on a bucket: links the registry wrote meanwhile are read again, just before the data
    # goes, so that a pull between its finding a link and reading the data seldom loses it (it would answer 500)
    on_step("read links before the data goes")
    linked = linked_now(store) if copied else frozenset()
    aside = [digest for digest in copied if _set_aside(store, digest, digest in linked, on_step)]
    if aside or removed:  # the registry may have found a link or data just before it went, and act on it after
        on_step("grace")
        wait(grace)
    on_step("repair links")
    restored = repair(store, removed)
    on_step("read links again")
    deleted = settle(store, aside, on_step)
    relinked = tuple(digest for digest in plan.blobs if digest not in deleted)
    return Applied(tuple((r.image, r.last_pull) for r in plan.removals), deleted,
                   sum(plan.blobs[digest] for digest in deleted), len(removed) - restored, relinked)


def repair(store: Store, removed: Iterable[tuple[str, str]]) -> int:
    """Writes back the revision and layer links of `removed` that a pull needs again: a tag the registry wrote
    since names a revision the pass unlinked (the registry writes a tag, then finds its manifest by the revision
    link, which was still there), or a manifest linked since names a layer whose link the registry found just
    before it went. Only while the data is there, in place or set aside. How many came back."""
    by_repository: dict[str, list[tuple[str, str]]] = {}
    for name, link in removed:
        if (digest := linked_digest(link)) is not None:  # tag links are the registry's to write again
            by_repository.setdefault(name, []).append((link, digest))
    restored = 0
    for name, links in by_repository.items():
        for layers in (False, True):  # revisions first: a revision written back names layers
            need = repository_needs(store, name)  # None: a manifest there is unknown, so it may need any layer
            for link, digest in links:
                if link.startswith("_layers/") != layers or not _data_there(store, digest):
                    continue
                if (need is None and layers) or (need is not None and digest in need):
                    # what the registry would write; if it writes it too, the same bytes
                    store.write(repository_path(name, link), digest.encode())
                    restored += 1
    return restored


def _data_there(store: Store, digest: str) -> bool:
    return store.exists(data_path(digest)) or store.exists(aside_path(digest))


def settle(store: Store, digests: Iterable[str], on_step: Callable[[str], None] = lambda step: None) -> tuple[str, ...]:
    """Blob data set aside: deleted where no link names it now, else put back (unless the registry stored the blob
    anew meanwhile). The digests whose data was deleted."""
    digests = list(digests)
    if not digests:  # every pass settles leftovers, mostly none: no links to read
        return ()
    linked = linked_now(store)
    deleted = []
    for digest in digests:
        on_step(f"settle {digest}")
        if digest not in linked:
            if store.delete(aside_path(digest)):
                deleted.append(digest)
        else:  # never over data the registry stored meanwhile; gone: another replica's pass settled it
            store.put_back(aside_path(digest), data_path(digest))
    return tuple(deleted)


def leftovers(store: Store, now: float, older_than: float = LEFTOVER_SECONDS) -> list[str]:
    """Blob data a pass set aside and did not settle (it stopped during its grace), left for `older_than` seconds:
    a younger one may be another replica's pass in its grace."""
    return sorted(digest for digest, at in set_aside(store).items() if now - at >= older_than)


def _copy_aside(store: Store, digest: str, on_step: Callable[[str], None]) -> bool:
    on_step(f"copy aside {digest}")
    return store.copy(data_path(digest), aside_path(digest))


def _set_aside(store: Store, digest: str, linked: bool, on_step: Callable[[str], None]) -> bool:
    """The data goes, its copy aside kept for the grace; linked again meanwhile, the copy goes instead."""
    on_step(f"set aside {digest}")
    if linked:
        store.delete(aside_path(digest))
        return False
    store.delete(data_path(digest))  # already gone (another replica's pass): the copy aside is settled alike
    return True
