"""Eviction removes images by age and by size without ever leaving a link to deleted data, even across a crash or
the registry's writes in the middle of a pass; on a folder and on a bucket alike."""
import json
import math
import tempfile
import time

import pytest

from registry_mirror.storage import eviction
from registry_mirror.storage.empty_folders import QUIET_SECONDS, remove_empty_folders
from registry_mirror.storage.eviction import apply, plan
from registry_mirror.storage.inventory import Image, inventory, parse_manifest
from registry_mirror.storage.layout import ASIDE_SUFFIX, layer_link, revision_link
from registry_mirror.storage.store import FolderStore, Store
from tests.unit.support.storage import DOCKER_LIST, DOCKER_V2, OCI_INDEX, OCI_MANIFEST, Storage, digest_of

NOW, MAX_AGE = 1_000_000.0, 3600.0
OLD, RECENT = NOW - 2 * MAX_AGE, NOW - 60


class SimulatedCrash(Exception):
    pass


def pulled(times: dict[tuple[str, str], float], default: float = RECENT):
    return lambda repository, digest: times.get((repository, digest), default)


def run(storage: Storage, times, max_bytes=None, in_flight=frozenset(), store: Store | None = None):
    """A pass (`store`: the one it goes through, by default the storage's)."""
    p = plan(inventory(storage.store), pulled(times), NOW, MAX_AGE, max_bytes, in_flight)
    return p, apply(store or storage.store, p, grace=0)


@pytest.mark.parametrize("media_type", [DOCKER_V2, OCI_MANIFEST])
@pytest.mark.parametrize("expired_name", ["a", "team/a"])
def test_an_expired_repository_goes_and_the_blobs_it_shares_stay(storage, media_type, expired_name):
    base = [storage.blob(1000), storage.blob(2000)]
    only_a = storage.blob(300)
    a = storage.image(expired_name, [*base, only_a], tag="1.0", media_type=media_type)
    b = storage.image("b", base, tag="1.0", media_type=media_type)
    b_before = storage.repository_tree("b")
    config_a = inventory(storage.store).image_blobs(Image(expired_name, a)) - {a, only_a, *base}
    p, applied = run(storage, {(expired_name, a): OLD, ("b", b): RECENT})
    assert [(r.image, r.reason) for r in p.removals] == [(Image(expired_name, a), "age")]
    assert p.repositories_removed == (expired_name,) and storage.repository_tree(expired_name) == {}
    assert storage.repository_tree("b") == b_before
    assert all(storage.has(d) for d in [*base, b])
    assert set(p.blobs) == {a, only_a, *config_a} and not any(storage.has(d) for d in p.blobs)
    assert applied.images == ((Image(expired_name, a), OLD),) and set(applied.blobs) == set(p.blobs)
    assert applied.bytes_freed == p.bytes_freed > 300 and storage.broken_links() == []
    assert not any(path.endswith(ASIDE_SUFFIX) for path in storage.paths())


@pytest.mark.parametrize("expired_name", ["a", "team/a"])
def test_an_expired_repositorys_folders_go_once_quiet(folder_storage, expired_name):
    storage = folder_storage
    a = storage.image(expired_name, [storage.blob()], tag="1.0")
    storage.image("b", [storage.blob()], tag="1.0")
    run(storage, {(expired_name, a): OLD})
    assert (storage.v2 / "repositories" / expired_name).is_dir()  # the registry may be writing into it
    remove_empty_folders(storage.root, time.time() + QUIET_SECONDS)
    assert not (storage.v2 / "repositories" / expired_name).exists()
    assert not (storage.v2 / "repositories" / "team").exists()  # emptied parents go too
    assert (storage.v2 / "repositories" / "b").is_dir()


def test_links_go_tags_first_then_revisions_then_layers(storage):
    child = storage.image("multi", [storage.blob()])
    index = storage.index("multi", [child], tag="1.0")
    (removal,) = plan(inventory(storage.store), pulled({}, OLD), NOW, MAX_AGE, None).removals
    kinds = ["tag" if "/tags/" in link else "revision" if "/revisions/" in link else "layer" for link in removal.links]
    assert kinds == ["tag"] * 2 + ["revision"] * 2 + ["layer"] * 2
    assert removal.links[-3] == "_manifests/revisions/sha256/{}/link".format(index.split(":")[1])  # its own last
    assert removal.links[1] == "_manifests/tags/1.0/current/link"  # after the tag's history


# sizes: base 1000 shared by all; a 10_000, b 20_000, c 40_000 of their own; manifests and configs < 2000 in all
@pytest.mark.parametrize("max_bytes, removed", [
    (None, []),
    (80_000, []),  # 71_000 and some: counting the shared base thrice would make it 73_000 and more
    (70_000, ["a"]),
    (50_000, ["a", "b"]),
    (40_000, ["a", "b", "c"]),
    (0, ["a", "b", "c"]),
])
def test_above_the_cap_the_least_recently_pulled_go_first(storage, max_bytes, removed):
    base = storage.blob(1000)
    own = {name: storage.blob(size) for name, size in [("a", 10_000), ("b", 20_000), ("c", 40_000)]}
    images = {name: storage.image(name, [base, layer], tag="1.0") for name, layer in own.items()}
    times = {(name, images[name]): RECENT - 30 + i for i, name in enumerate(["a", "b", "c"])}
    p, applied = run(storage, times, max_bytes)
    assert [(r.image.repository, r.reason) for r in p.removals] == [(name, "size") for name in removed]
    assert (base in p.blobs) == (len(removed) == 3)  # freed only when no remaining image needs it
    assert all((own[name] in p.blobs) == (name in removed) for name in own)
    assert max_bytes is None or p.bytes_kept <= max_bytes or len(removed) == 3
    assert p.bytes_kept == inventory(storage.store).total_bytes and applied.bytes_freed == p.bytes_freed


def test_expired_images_go_before_the_cap_is_considered(storage):
    old, new = storage.image("old", [storage.blob(5000)]), storage.image("new", [storage.blob(5000)])
    p, _ = run(storage, {("old", old): OLD, ("new", new): RECENT}, max_bytes=7000)
    assert [(r.image.repository, r.reason) for r in p.removals] == [("old", "age")]


def test_with_no_max_age_only_the_cap_removes(storage):
    """What the expiry plans when the clock has stepped: nothing by age, the least recently pulled by size."""
    old, new = storage.image("old", [storage.blob(5000)]), storage.image("new", [storage.blob(5000)])
    times = {("old", old): OLD, ("new", new): OLD + 1}
    assert plan(inventory(storage.store), pulled(times), NOW, math.inf, None).removals == ()
    p = plan(inventory(storage.store), pulled(times), NOW, math.inf, 7000)
    assert [(r.image.repository, r.reason) for r in p.removals] == [("old", "size")]


@pytest.mark.parametrize("media_type", [DOCKER_LIST, OCI_INDEX])
@pytest.mark.parametrize("index_pulled, children_stay", [(OLD, False), (RECENT, True)])
def test_an_index_keeps_or_loses_all_its_platforms_together(storage, media_type, index_pulled, children_stay):
    shared = storage.blob()
    amd, arm = storage.image("multi", [shared, storage.blob()]), storage.image("multi", [shared, storage.blob()])
    index = storage.index("multi", [amd, arm], tag="1.0", media_type=media_type)
    other = storage.image("other", [shared], tag="1.0")
    inv = inventory(storage.store)
    platform_blobs = inv.image_blobs(Image("multi", index)) - {shared}
    # the children's own pull times do not count: they are no images of their own
    times = {("multi", index): index_pulled, ("multi", amd): OLD, ("multi", arm): OLD, ("other", other): NOW}
    p, _ = run(storage, times)
    assert [r.image for r in p.removals] == ([] if children_stay else [Image("multi", index)])
    assert all(storage.has(d) == children_stay for d in platform_blobs)
    assert storage.has(shared) and storage.broken_links() == []


def test_a_tagged_child_outlives_its_expired_index(storage):
    amd, arm = storage.image("multi", [storage.blob()]), storage.image("multi", [storage.blob()])
    index = storage.index("multi", [amd, arm], tag="1.0")
    storage.tag("multi", "arm", arm)
    arm_blobs = inventory(storage.store).image_blobs(Image("multi", arm))
    p, _ = run(storage, {("multi", index): OLD, ("multi", arm): RECENT})
    assert [r.image for r in p.removals] == [Image("multi", index)]
    left = inventory(storage.store)
    assert left.images == (Image("multi", arm),) and left.image_blobs(Image("multi", arm)) == arm_blobs
    assert set(left.blob_sizes) == arm_blobs and left.repositories["multi"].tags == {"arm": arm}


@pytest.mark.parametrize("which", ["manifest", "config", "layer"])
def test_in_flight_blobs_keep_their_data_and_lose_their_links(storage, which):
    layer = storage.blob()
    a = storage.image("a", [layer], tag="1.0")
    config = next(d for d in inventory(storage.store).image_blobs(Image("a", a)) if d not in (a, layer))
    flying = {"manifest": a, "config": config, "layer": layer}[which]
    p, applied = run(storage, {("a", a): OLD}, in_flight=frozenset({flying}))
    assert flying not in p.blobs and flying not in applied.blobs and storage.has(flying)
    assert storage.repository_tree("a") == {} and len(applied.blobs) == 2  # every link of `a` went
    # unlinked and no longer in flight: an orphan, which the next pass collects
    assert run(storage, {})[1].blobs == (flying,)


@pytest.mark.parametrize("in_flight", [False, True])
def test_orphan_blobs_are_collected(storage, in_flight):
    orphan = storage.blob(500)
    stray = storage.blob(700)
    kept = storage.image("app", [storage.blob()], tag="1.0")
    storage.link("app", "layer", stray)  # linked, but no manifest of the repository names it
    p, applied = run(storage, {("app", kept): RECENT}, in_flight=frozenset({orphan} if in_flight else ()))
    assert p.removals == () and p.stray_links == {"app": ("_layers/sha256/{}/link".format(stray.split(":")[1]),)}
    assert set(applied.blobs) == ({stray} if in_flight else {orphan, stray})
    assert storage.has(orphan) == in_flight and storage.broken_links() == []
    assert inventory(storage.store).images == (Image("app", kept),)


def test_a_blob_linked_again_after_the_plan_is_kept(storage):
    layer = storage.blob()
    a = storage.image("a", [layer], tag="1.0")
    p = plan(inventory(storage.store), pulled({("a", a): OLD}), NOW, MAX_AGE, None)
    storage.link("b", "layer", layer)  # a pull through another repository, between plan and apply
    applied = apply(storage.store, p, grace=0)
    assert applied.relinked == (layer,) and layer not in applied.blobs and storage.broken_links() == []


def test_applying_a_plan_twice_is_harmless(storage):
    a = storage.image("a", [storage.blob()], tag="1.0")
    p = plan(inventory(storage.store), pulled({("a", a): OLD}), NOW, MAX_AGE, None)
    first, second = apply(storage.store, p, grace=0), apply(storage.store, p, grace=0)
    assert len(first.blobs) == 3 and first.links_deleted == 5
    assert (second.blobs, second.bytes_freed, second.links_deleted) == ((), 0, 0)


# a manifest being linked that is not one (or not yet): what it needs is unknown, so the layers stay
@pytest.mark.parametrize("link, blobs_freed", [("_layers/sha256/{}/link", 3),
                                               ("_manifests/revisions/sha256/{}/link", 1)])
@pytest.mark.parametrize("text", ["", "sha256:", "\x00\xff"])
def test_an_unreadable_link_and_its_data_stay_it_may_be_mid_write(storage, link, blobs_freed, text):
    blob = storage.blob()
    a = storage.image("app", [storage.blob()], tag="1.0")
    storage.write_link("app", link.format(blob.split(":")[1]), text)
    p, applied = run(storage, {("app", a): OLD})
    assert [r.image for r in p.removals] == [Image("app", a)] and len(applied.blobs) == blobs_freed
    assert storage.has(blob) and storage.read_link("app", link.format(blob.split(":")[1])) == text.encode()


@pytest.mark.parametrize("kind", ["layer", "revision"])
@pytest.mark.parametrize("pulled_at, stays", [(OLD, False), (RECENT, True)])
def test_a_link_naming_missing_data_goes_with_its_image(storage, kind, pulled_at, stays):
    layer = storage.blob()
    a = storage.image("app", [layer], tag="1.0")
    storage.remove(a if kind == "revision" else layer)
    before = storage.repository_tree("app")
    p, applied = run(storage, {("app", a): pulled_at})
    assert [r.image for r in p.removals] == ([] if stays else [Image("app", a)])
    # a manifest whose data is missing keeps its layers: what it needs is unknown
    assert storage.repository_tree("app") == (before if stays else {}) and len(applied.blobs) == (0 if stays else 2)


@pytest.mark.parametrize("pulled_at, stays", [(OLD, False), (RECENT, True)])
def test_a_manifest_that_is_not_json_keeps_every_layer_of_its_repository(storage, pulled_at, stays):
    layer = storage.blob()
    good = storage.image("app", [layer], tag="1.0")
    odd = storage.put(b"\x00 not a manifest")
    storage.link("app", "revision", odd)
    p, _ = run(storage, {("app", good): OLD, ("app", odd): pulled_at})
    assert {r.image for r in p.removals} == {Image("app", good)} | (set() if stays else {Image("app", odd)})
    # what it needs is unknown, so the repository's layers stay as long as it does
    left = inventory(storage.store).repositories
    assert layer in left["app"].layers if stays else "app" not in left  # no link of it left
    assert storage.has(layer) == stays and storage.has(odd) == stays
    assert not storage.has(good) and storage.broken_links() == []


def scenario(storage: Storage) -> dict[tuple[str, str], float]:
    """Shared layers, a nested repository, an index with a tagged child, an orphan, a stray link, and an image
    that goes by size: every kind of deletion, in several repositories."""
    base = storage.blob(1000)
    old_app = storage.image("team/app", [base, storage.blob(300)], tag="1.0")
    new_app = storage.image("team/app", [base, storage.blob(300)], tag="2.0")
    storage.tag("team/app", "2.0", old_app)  # the tag's history names the old image too
    storage.tag("team/app", "2.0", new_app)
    lib = storage.image("lib", [base, storage.blob(20_000)], tag="latest")
    # pulled before lib, so it goes first, though lib alone would have been enough: a pass that deleted lib's
    # links before zeta's and crashed would find itself under the cap, and keep zeta
    zeta = storage.image("zeta", [storage.blob(2000)], tag="latest")
    amd, arm = storage.image("multi", [base, storage.blob(200)]), storage.image("multi", [storage.blob(200)])
    index = storage.index("multi", [amd, arm], tag="1.0")
    storage.tag("multi", "arm", arm)
    team = storage.image("team", [storage.blob(5000)], tag="x")
    storage.blob(100)  # an orphan
    storage.link("team/app", "layer", storage.blob(100))  # a stray link
    return {("team/app", old_app): OLD, ("team/app", new_app): RECENT, ("lib", lib): RECENT - 500,
            ("zeta", zeta): RECENT - 1000, ("multi", index): OLD, ("multi", arm): RECENT, ("team", team): RECENT}


CAP = 15_000  # without lib the rest is under 10_000, with it above 30_000
CHANGING = ("delete", "delete_folder", "copy", "put_back", "write")  # what a store's operations change


class CrashingStore:
    """A store whose process dies before its (`fail_after` + 1)th change; `fail_after` None: it never dies. The
    changes it made, (operation, path), in `changes`."""

    def __init__(self, store: Store, fail_after: int | None = None):
        self.store, self.fail_after = store, fail_after
        self.changes: list[tuple[str, str]] = []

    def __getattr__(self, name: str):
        found = getattr(self.store, name)
        if name not in CHANGING:
            return found

        def change(path: str, *args):
            if self.fail_after is not None and len(self.changes) >= self.fail_after:
                raise SimulatedCrash(name, path, *args)
            self.changes.append((name, path))
            return found(path, *args)
        return change


def kind_of_change(change: tuple[str, str]) -> str:
    name, path = change
    return name + next((f" {part}" for part in ("/tags/", "/revisions/", "/_layers/") if part in path), "")


def kind_of_step(step: str) -> str:
    """A pass's step (`apply`'s on_step) without the path or digest it names."""
    return kind_of_change((" ".join(word for word in step.split() if ":" not in word and "/" not in word), step))


def _uninterrupted() -> tuple[list[tuple[str, str]], dict[str, bytes | None]]:
    """The changes a pass over the scenario makes (a crash may come before any of them), and the storage it leaves
    (its paths are a bucket's too)."""
    with tempfile.TemporaryDirectory() as folder:
        storage = Storage(FolderStore(folder))
        counted = CrashingStore(storage.store)
        run(storage, scenario(storage), CAP, store=counted)
        return counted.changes, storage.tree()


CHANGES, FINISHED = _uninterrupted()


def firsts(kinds: list[str]) -> set[int]:
    """Where each kind first comes: a bucket's sample of what a folder runs in full."""
    return {kinds.index(kind) for kind in kinds}


def crash_points() -> list:
    """(backend, fail_after): before each change of the pass (data set aside is copied, then deleted: a crash
    between leaves both). On a bucket, only before the first change of each kind and the last: its operations keep
    the one contract with a folder's (tests/unit/storage/test_store.py), and there a pass is hundreds of requests."""
    points = [("folder", n) for n in range(len(CHANGES))]
    bucket = sorted(firsts([kind_of_change(change) for change in CHANGES]) | {len(CHANGES) - 1})
    return points + [pytest.param("bucket", n, marks=pytest.mark.bucket) for n in bucket]


def test_the_scenario_has_every_kind_of_deletion(storage):
    p, _ = run(storage, scenario(storage), CAP)
    assert {r.reason for r in p.removals} == {"age", "size"} and p.stray_links and len(p.blobs) > 5
    assert [(r.image.repository, r.reason) for r in p.removals] == [
        ("multi", "age"), ("team/app", "age"), ("zeta", "size"), ("lib", "size")]
    assert set(p.repositories_removed) == {"lib", "zeta"} and p.deletions > 30
    assert len(CHANGES) == p.deletions + 2 * len(p.blobs)  # each blob: copied aside, its data deleted, then the copy


@pytest.mark.parametrize("backend, fail_after", crash_points())
def test_a_crash_anywhere_leaves_valid_links_and_the_next_pass_finishes_the_job(storage, fail_after):
    times = scenario(storage)
    with pytest.raises(SimulatedCrash):
        run(storage, times, CAP, store=CrashingStore(storage.store, fail_after))
    assert storage.broken_links() == []
    later = time.time() + eviction.LEFTOVER_SECONDS  # a later pass: what the crash left aside is a leftover
    eviction.settle(storage.store, eviction.leftovers(storage.store, later))
    run(storage, times, CAP)
    assert storage.tree() == FINISHED
    assert run(storage, times, CAP)[0].deletions == 0  # and a pass over a finished tree has nothing to do


class Registry:
    """Plays the registry's commit of a blob or manifest against a pass, as distribution 2.8 does it: it looks for
    the data (`stat`), writes it only if missing, then writes its link (`link`); a gap separates the two."""

    def __init__(self, storage: Storage, repository: str, data: bytes, kind: str, tag: str | None = None):
        self.storage, self.repository, self.data, self.kind, self.tag = storage, repository, data, kind, tag
        self.digest, self.found = digest_of(data), None

    def stat(self) -> None:
        self.found = self.storage.has(self.digest)

    def link(self) -> None:
        if not self.found:
            self.storage.put(self.data)
        self.storage.link(self.repository, self.kind, self.digest)
        if self.tag:
            self.storage.tag(self.repository, self.tag, self.digest)


def race(storage: Storage):
    """An old image in `a` that goes, its layer `shared`; a recent one in `c` that stays."""
    shared = storage.blob(500)
    gone = storage.image("a", [shared, storage.blob(300)], tag="1.0")
    kept = storage.image("c", [storage.blob(200)], tag="1.0")
    return shared, {("a", gone): OLD, ("c", kept): RECENT}


def steps_of_a_pass(new_store) -> list[str]:
    storage, steps = Storage(new_store("steps")), []
    _, times = race(storage)
    apply(storage.store, plan(inventory(storage.store), pulled(times), NOW, MAX_AGE, None), 0, on_step=steps.append)
    return steps


def interleavings(steps: list[str], upto: int, backend: str) -> list[tuple[int, int]]:
    """(first, then): the steps of a pass, up to `upto`, before which the registry does its first and its second
    write. On a folder every pair; on a bucket, from the first step of each kind, both at once or the second at
    `upto` (its operations keep the one contract with a folder's, tests/unit/storage/test_store.py, and there a
    pass is a hundred requests or more)."""
    if backend == "folder":
        return [(first, then) for first in range(upto + 1) for then in range(first, upto + 1)]
    starts = sorted({n for n in firsts([kind_of_step(step) for step in steps]) if n <= upto})
    return sorted({(first, then) for first in starts for then in (first, upto)})


def play(storage: Storage, times, registry: Registry, stat_at: int, link_at: int) -> None:
    """A pass with the registry's stat before step `stat_at` and its link before step `link_at`."""
    steps = []

    def step(what: str) -> None:
        if len(steps) == stat_at:
            registry.stat()
        if len(steps) == link_at:
            registry.link()
        steps.append(what)
    apply(storage.store, plan(inventory(storage.store), pulled(times), NOW, MAX_AGE, None), 0, on_step=step)


def test_a_blob_the_registry_finds_while_a_pass_deletes_it_is_never_left_linked_to_nothing(new_store, backend):
    """Another repository pulls the layer the pass is removing: whichever steps of the pass its stat and its link
    fall between, its link names data at the end (the gap between them within the pass's grace)."""
    steps = steps_of_a_pass(new_store)
    grace = steps.index("grace")
    assert steps[grace - 1].startswith("set aside") and steps[-1].startswith("settle")
    for stat_at, link_at in interleavings(steps, grace, backend):
        storage = Storage(new_store(f"{stat_at}-{link_at}"))
        shared, times = race(storage)
        b = Registry(storage, "b", storage.data(shared), "layer")
        play(storage, times, b, stat_at, link_at)
        where = f"stat before {steps[stat_at]!r}, link before {steps[link_at]!r}"
        assert storage.broken_links() == [], where
        assert storage.data(shared) == b.data, where
        assert not any(path.endswith(ASIDE_SUFFIX) for path in storage.paths()), where


def test_a_manifest_pulled_while_a_pass_runs_keeps_the_layers_it_needs(new_store, backend):
    """A new image of the same repository, sharing the layer that goes with the old one: linked before the pass
    reads what the repository needs, its layers stay; linked later, the layer is re-fetched, never left broken."""
    steps = steps_of_a_pass(new_store)
    needs_read = steps.index("read needs")
    grace = steps.index("grace")
    for stat_at, link_at in interleavings(steps, grace, backend):
        storage = Storage(new_store(f"{stat_at}-{link_at}"))
        shared, times = race(storage)
        config = storage.blob(100)
        storage.link("a", "layer", config)
        doc = {"schemaVersion": 2, "mediaType": DOCKER_V2,
               "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config,
                          "size": 100},
               "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": shared,
                           "size": 500}]}
        new = Registry(storage, "a", json.dumps(doc).encode(), "revision", tag="2.0")
        play(storage, {**times, ("a", new.digest): RECENT}, new, stat_at, link_at)
        where = f"stat before {steps[stat_at]!r}, link before {steps[link_at]!r}"
        assert storage.broken_links() == [], where
        assert storage.has(new.digest), where
        layers = inventory(storage.store).repositories["a"].layers
        if link_at <= needs_read:
            assert {shared, config} <= layers.keys() and storage.has(shared), where


def intact(storage: Storage, repository: str) -> list[str]:
    """What a pull of the repository's images would miss: a tag naming no revision, a revision without the data or
    the layer links its manifest names."""
    inv = inventory(storage.store)
    found = inv.repositories.get(repository)
    if found is None:
        return []
    missing = [f"tag {tag} names {digest}" for tag, digest in found.tags.items() if digest not in found.revisions]
    for digest in found.revisions:
        if (data := storage.data(digest)) is None:
            missing.append(f"revision {digest} has no data")
            continue
        _, blobs = parse_manifest(data)
        missing += [f"{digest} lacks {blob}" for blob in sorted(blobs)
                    if blob not in found.layers or not storage.has(blob)]
    return missing


def pull_again_during_a_pass(storage: Storage, tag_at: int, layers_at: int) -> str:
    """A pull by tag of the image the pass removes: the registry writes the tag (it asked the upstream) and finds
    the manifest by its revision link if still there (else stores it again) before step `tag_at`; it serves
    each layer from its link if link and data are there (else fetches it) before step `layers_at`. The image."""
    _, times = race(storage)
    gone = next(digest for (name, digest) in times if name == "a")
    manifest = storage.data(gone)
    _, blobs = parse_manifest(manifest)
    kept = {blob: storage.data(blob) for blob in blobs}
    seen: list[str] = []

    def pull(what: str) -> None:
        if len(seen) == tag_at:
            storage.tag("a", "1.0", gone)
            if not storage.has_link("a", revision_link(gone)):
                Registry(storage, "a", manifest, "revision").link()
        if len(seen) == layers_at:
            for blob, data in kept.items():
                if not (storage.has_link("a", layer_link(blob)) and storage.has(blob)):
                    Registry(storage, "a", data, "layer").link()  # fetched from the upstream
        seen.append(what)
    apply(storage.store, plan(inventory(storage.store), pulled(times), NOW, MAX_AGE, None), 0, on_step=pull)
    return gone


def test_an_image_pulled_again_while_a_pass_removes_it_is_left_whole(new_store, backend):
    """At whichever steps of the pass the pull's writes and reads fall, the image is whole at the end, or gone
    (the tag written before the pass removed it) with nothing of it left broken."""
    steps = steps_of_a_pass(new_store)
    grace = steps.index("grace")
    tag_unlinked = next(i for i, step in enumerate(steps) if "/tags/1.0/current/" in step)
    for tag_at, layers_at in interleavings(steps, grace, backend):
        storage = Storage(new_store(f"{tag_at}-{layers_at}"))
        gone = pull_again_during_a_pass(storage, tag_at, layers_at)
        where = f"tag before {steps[tag_at]!r}, layers before {steps[layers_at]!r}"
        assert storage.broken_links() == [] and intact(storage, "a") == [], where
        if tag_at > tag_unlinked:  # written after the pass removed it: the pull's image stays
            assert inventory(storage.store).repositories["a"].tags == {"1.0": gone}, where
