"""The expiry's passes over a real storage tree, with a fake clock: orphans are marked, then swept; a
notification that may cross the cap wakes a pass; last pulls decide by age."""
import asyncio

from registry_mirror.expiry import Expiry
from registry_mirror.pulls import LastPulls

from .test_storage_inventory import Storage

DAY = 86400.0


class Clock:
    now = 100 * DAY

    def __call__(self):
        return self.now


def expiry(tmp_path, clock, max_age=7 * DAY, max_bytes=None, in_flight=frozenset()):
    pulls = LastPulls(tmp_path / "pulls", "test", clock)
    return Expiry(str(tmp_path / "storage"), max_age, max_bytes, pulls, in_flight=lambda: in_flight), pulls


def test_an_image_is_kept_from_its_first_sighting_then_goes_max_age_after_its_last_pull(tmp_path):
    storage, clock = Storage(tmp_path / "storage"), Clock()
    old = storage.image("team/old", [storage.blob()])
    ex, pulls = expiry(tmp_path, clock)
    assert asyncio.run(ex.run_pass()).images == ()  # never seen pulled: its age starts now
    assert pulls.mine == {("team/old", old): clock.now}
    clock.now += 7 * DAY + 1
    applied = asyncio.run(ex.run_pass())
    assert [image for image, _ in applied.images] == [("team/old", old)]
    assert ex.state.images_evicted == 1 and ex.state.images == 0 and pulls.mine == {}


def test_an_orphan_is_swept_only_by_the_pass_after_the_one_that_first_saw_it(tmp_path):
    storage, clock = Storage(tmp_path / "storage"), Clock()
    orphan = storage.blob(1000)  # data committed, its link not written yet
    ex, _ = expiry(tmp_path, clock)
    assert asyncio.run(ex.run_pass()).blobs == () and ex.state.kept_in_flight == 1
    assert storage.data_path(orphan).exists()
    assert asyncio.run(ex.run_pass()).blobs == (orphan,)
    assert not storage.data_path(orphan).exists()


def test_an_orphan_linked_between_passes_is_kept(tmp_path):
    storage, clock = Storage(tmp_path / "storage"), Clock()
    blob = storage.blob(1000)
    ex, _ = expiry(tmp_path, clock)
    asyncio.run(ex.run_pass())
    storage.image("team/app", [blob])  # the registry wrote its links meanwhile
    asyncio.run(ex.run_pass())
    assert storage.data_path(blob).exists()


def test_bytes_stored_that_may_cross_the_cap_wake_a_pass_and_it_evicts_below_the_cap(tmp_path):
    storage, clock = Storage(tmp_path / "storage"), Clock()
    images = [storage.image(f"team/app{n}", [storage.blob(4000)]) for n in range(3)]
    ex, pulls = expiry(tmp_path, clock, max_bytes=100_000)

    async def scenario():
        for n, image in enumerate(images):
            clock.now += 1
            pulls.record([(f"team/app{n}", image)])
        await ex.run_pass()
        ex.stored(80_000)
        assert not ex._wake.is_set()  # some 13 KB stored + 80 KB new: under the cap
        ex.stored(10_000)
        assert ex._wake.is_set()
        ex.max_bytes = 9000  # two images' worth: above it, a pass evicts down to 90% of it
        applied = await ex.run_pass()
        assert [image.repository for image, _ in applied.images] == ["team/app0", "team/app1"]
        assert ex.state.used_bytes <= 0.9 * 9000
    asyncio.run(scenario())


def test_an_index_pulled_by_its_platform_digests_stays(tmp_path):
    storage, clock = Storage(tmp_path / "storage"), Clock()
    child = storage.image("team/app", [storage.blob()])
    index = storage.index("team/app", [child], tag="1.0")
    ex, pulls = expiry(tmp_path, clock)
    pulls.record([("team/app", index)])
    clock.now += 6 * DAY
    pulls.record([("team/app", child)])  # Kubernetes pulls the platform's digest
    clock.now += 6 * DAY  # the index's own pull is twelve days old, the platform's six
    assert asyncio.run(ex.run_pass()).images == ()


def test_blobs_in_flight_are_never_deleted(tmp_path):
    storage, clock = Storage(tmp_path / "storage"), Clock()
    layer = storage.blob(1000)
    image = storage.image("team/app", [layer])
    ex, pulls = expiry(tmp_path, clock, in_flight=frozenset({layer}))
    pulls.record([("team/app", image)])
    clock.now += 8 * DAY
    applied = asyncio.run(ex.run_pass())
    assert applied.images and storage.data_path(layer).exists()


def test_the_evictions_command_lists_what_the_next_pass_would_remove_and_changes_nothing(tmp_path, capsys):
    import json

    from registry_mirror.cli import main
    storage = Storage(tmp_path / "storage")
    old, new = storage.image("team/old", [storage.blob()]), storage.image("team/new", [storage.blob()])
    (tmp_path / "storage.pulls").mkdir()
    (tmp_path / "storage.pulls" / "host-8081.json").write_text(json.dumps({"pulls": [
        ["team/old", old, 1.0], ["team/new", new, 4e9]]}))  # 1970, and 2096
    config = tmp_path / "mirror.yaml"
    config.write_text(f"upstream:\n  url: https://art.example.com\n  repository: docker-local\n  anonymous: true\n"
                      f"mirror:\n  storage: {tmp_path / 'storage'}\n  max_age: 7d\n")
    before = storage.tree()
    assert main(["--config", str(config), "evictions"]) == 0
    out = capsys.readouterr().out
    assert f"team/old@{old}  last pulled 1970-01-01 00:00 UTC  (age)" in out and "team/new" not in out
    assert out.strip().endswith("bytes stay (max_bytes: none)") and "1 images" in out
    assert storage.tree() == before
