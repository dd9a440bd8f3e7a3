"""The expiry's passes over a real storage, a folder or a bucket, with a fake clock: orphans are swept unless linked
in time; a notification that may cross the cap wakes a pass; last pulls decide by age, unless the clock has
stepped; the storage figures are true from the first pass on."""
import functools
import logging
import os
import time

import pytest

from registry_mirror.expiry import passes as expiry_module
from registry_mirror.expiry.last_pulls import LastPulls
from registry_mirror.expiry.passes import Expiry, clock_jumped, restarted
from registry_mirror.storage.layout import REPOSITORIES, data_path
from registry_mirror.storage.store import FolderStore
from registry_mirror.storage.stores import tidy_folder
from tests.unit.support.clocks import Clock

DAY = 86400.0


def expiry(storage, pulls_store, clock, max_age=7 * DAY, max_bytes=None, in_flight=frozenset(), **kwargs):
    """An expiry of `storage`, its last pulls in `pulls_store`."""
    pulls = LastPulls(pulls_store, "test", clock)
    return Expiry(storage.store, max_age, max_bytes, pulls, in_flight=lambda: in_flight, grace=0, **kwargs), pulls


async def test_an_image_is_kept_from_its_first_sighting_then_goes_max_age_after_its_last_pull(storage, new_store):
    clock = Clock(100 * DAY)
    old = storage.image("team/old", [storage.blob()])
    ex, pulls = expiry(storage, new_store("pulls"), clock)
    assert (await ex.run_pass()).images == ()  # never seen pulled: its age starts now
    assert pulls.mine == {("team/old", old): clock.now}
    busy = storage.image("team/busy", [storage.blob()])
    clock.now += 7 * DAY + 1
    pulls.record([("team/busy", busy)])  # another image pulled meanwhile: the clock is sound
    applied = await ex.run_pass()
    assert [image for image, _ in applied.images] == [("team/old", old)]
    assert ex.state.images_evicted == 1 and ex.state.images == 1 and pulls.mine == {("team/busy", busy): clock.now}
    assert ex.state.age_evictions_skipped == "" and ex.state.passes_age_skipped == 0


async def test_an_orphan_is_swept_by_the_first_pass_unless_linked_within_its_grace(storage, new_store, monkeypatch):
    clock = Clock(100 * DAY)
    orphan, linked = storage.blob(1000), storage.blob(500)  # data committed, links not written yet
    ex, _ = expiry(storage, new_store("pulls"), clock)

    def registry_links_meanwhile(seconds):  # the registry writes the link of the one while the pass waits
        storage.image("team/app", [linked])
    monkeypatch.setattr(expiry_module.eviction, "apply",
                        functools.partial(expiry_module.eviction.apply, wait=registry_links_meanwhile))
    assert (await ex.run_pass()).blobs == (orphan,)
    assert not storage.has(orphan) and storage.has(linked)


async def test_bytes_stored_that_may_cross_the_cap_wake_a_pass_and_it_evicts_below_the_cap(storage, new_store):
    clock = Clock(100 * DAY)
    images = [storage.image(f"team/app{n}", [storage.blob(4000)]) for n in range(3)]
    ex, pulls = expiry(storage, new_store("pulls"), clock, max_bytes=100_000)

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


async def test_an_index_pulled_by_its_platform_digests_stays(storage, new_store):
    clock = Clock(100 * DAY)
    child = storage.image("team/app", [storage.blob()])
    index = storage.index("team/app", [child], tag="1.0")
    ex, pulls = expiry(storage, new_store("pulls"), clock)
    pulls.record([("team/app", index)])
    clock.now += 6 * DAY
    pulls.record([("team/app", child)])  # Kubernetes pulls the platform's digest
    clock.now += 6 * DAY  # the index's own pull is twelve days old, the platform's six
    assert (await ex.run_pass()).images == ()


async def test_blobs_in_flight_are_never_deleted(storage, new_store):
    clock = Clock(100 * DAY)
    layer = storage.blob(1000)
    image = storage.image("team/app", [layer])
    ex, pulls = expiry(storage, new_store("pulls"), clock, in_flight=frozenset({layer}))
    pulls.record([("team/app", image)])
    clock.now += 8 * DAY
    pulls.record([("team/busy", storage.image("team/busy", [storage.blob()]))])
    applied = await ex.run_pass()
    assert applied.images and storage.has(layer)


class Reads:
    """The store, with every path read recorded (on a bucket, each a request)."""

    def __init__(self, store):
        self.store, self.paths = store, []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def read(self, path, limit):
        self.paths.append(path)
        return self.store.read(path, limit)

    def read_many(self, paths, limit):
        paths = list(paths)
        self.paths += paths
        return self.store.read_many(paths, limit)


async def test_a_pass_that_removes_nothing_reads_each_link_and_manifest_once(storage, new_store):
    images = [storage.image(f"team/app{n}", [storage.blob()], tag="1.0") for n in range(3)]
    reads = Reads(storage.store)
    pulls = LastPulls(new_store("pulls"), "test", Clock(100 * DAY))
    applied = await Expiry(reads, 7 * DAY, None, pulls, grace=0).run_pass()
    assert applied.images == () and applied.blobs == ()
    links = [path for path in storage.paths(REPOSITORIES) if path.endswith("/link")]
    assert sorted(reads.paths) == sorted(links + [data_path(image) for image in images])


def test_the_evictions_command_lists_what_the_next_pass_would_remove_and_changes_nothing(tmp_path, folder_storage,
                                                                                      capsys):
    import json

    from registry_mirror.cli.commands import main
    storage = folder_storage
    old, new = storage.image("team/old", [storage.blob()]), storage.image("team/new", [storage.blob()])
    (tmp_path / "storage.pulls").mkdir()
    (tmp_path / "storage.pulls" / "host-8081.json").write_text(json.dumps({"pulls": [
        ["team/old", old, 1.0], ["team/new", new, time.time() - 60]]}))  # 1970, and a minute ago
    config = tmp_path / "mirror.yaml"
    config.write_text(f"upstream:\n  url: https://art.example.com\n  repository: docker-local\n  anonymous: true\n"
                      f"mirror:\n  storage: {tmp_path / 'storage'}\n  max_age: 7d\n")
    before = storage.tree()
    assert main(["--config", str(config), "evictions"]) == 0
    out = capsys.readouterr().out
    assert f"team/old@{old}  last pulled 1970-01-01 00:00 UTC  (age)" in out and "team/new" not in out
    assert out.strip().endswith("bytes stay (max_bytes: none)") and "1 images" in out
    assert storage.tree() == before


# A clock step never empties the cache

NOW, AGE = 100 * DAY, 7 * DAY


@pytest.mark.parametrize("last_pulls, jumped", [
    ([], None),  # nothing seen pulled (images never seen pulled count as pulled now): no evidence either way
    ([NOW - 60], None),
    ([NOW - 8 * DAY, NOW - 60], None),  # one image really not pulled for max_age, another a minute ago
    ([NOW - AGE], None),  # exactly max_age old: nothing would go by age yet
    ([NOW - AGE - 1], "stepped forward"),
    ([NOW - 8 * DAY - 600, NOW - 8 * DAY - 60], "stepped forward"),  # the clock 8 days ahead, pulls minutes old
    ([NOW - 400 * DAY], "stepped forward"),
    ([NOW + 300], None),  # skew between replicas' clocks
    ([NOW + 301], "stepped back"),
    ([NOW - 8 * DAY, NOW - 60, NOW + 8 * DAY], "stepped back"),  # the clock 8 days behind
    ([NOW - 30 * DAY, NOW + 8 * DAY], "stepped back"),  # both: ahead of now decides, the restart clamps
])
def test_clock_jumped(last_pulls, jumped):
    reason = clock_jumped(iter(last_pulls), NOW, AGE)
    if jumped is None:
        assert reason is None
    else:  # names the newest last pull and now
        assert jumped in reason and time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(max(last_pulls))) in reason
        assert "1970-04-11 00:00:00 UTC" in reason  # NOW


@pytest.mark.parametrize("last_pulls, moved", [
    ({}, {}),
    ({("a", "1"): NOW - 9 * DAY}, {("a", "1"): NOW}),
    ({("a", "1"): NOW - 9 * DAY, ("b", "2"): NOW - 8 * DAY}, {("a", "1"): NOW - DAY, ("b", "2"): NOW}),
])
def test_after_a_forward_step_the_ages_restart_with_their_order_and_distances_kept(last_pulls, moved):
    assert restarted(last_pulls, NOW) == moved


def two_images_pulled_minutes_ago(storage, pulls_store, clock, **kwargs):
    app, web = storage.image("team/app", [storage.blob(4000)]), storage.image("team/web", [storage.blob(4000)])
    ex, pulls = expiry(storage, pulls_store, clock, **kwargs)
    pulls.record([("team/web", web)])
    clock.now += 60
    pulls.record([("team/app", app)])
    clock.now += 300
    return ex, pulls, app, web


async def test_a_clock_8_days_ahead_removes_nothing_by_age_and_the_ages_restart(storage, new_store, caplog):
    clock = Clock(100 * DAY)
    ex, pulls, app, web = two_images_pulled_minutes_ago(storage, new_store("pulls"), clock)
    before = storage.tree()
    clock.now += 8 * DAY  # a VM restored, a bad NTP step: the pass at start
    with caplog.at_level(logging.WARNING, "registry_mirror.expiry.passes"):
        assert (await ex.run_pass()).images == ()
    assert storage.tree() == before
    assert "stepped forward" in ex.state.age_evictions_skipped and ex.state.passes_age_skipped == 1
    assert "no image removed by age" in caplog.text and "1970-04-19" in caplog.text  # now, the newest: 04-11
    assert pulls.mine == {("team/web", web): clock.now - 60, ("team/app", app): clock.now}  # restarted
    # the first pulls since do not make the others look 8 days old
    clock.now += DAY
    pulls.record([("team/app", app)])
    assert (await ex.run_pass()).images == () and ex.state.age_evictions_skipped == ""
    clock.now += 6 * DAY + 1  # web not pulled for max_age since the step: it goes, by age
    pulls.record([("team/app", app)])
    assert [image for image, _ in (await ex.run_pass()).images] == [("team/web", web)]
    assert ex.state.passes_age_skipped == 1


async def test_a_clock_8_days_ahead_still_evicts_by_size(storage, new_store):
    clock = Clock(100 * DAY)
    ex, pulls, app, web = two_images_pulled_minutes_ago(storage, new_store("pulls"), clock, max_bytes=6000)
    clock.now += 8 * DAY
    applied = await ex.run_pass()
    assert [image for image, _ in applied.images] == [("team/web", web)]  # the least recently pulled, for size
    assert ex.state.age_evictions_skipped and ex.state.used_bytes <= 6000
    assert storage.has(app)


async def test_a_clock_8_days_behind_removes_nothing_by_age(storage, new_store):
    clock = Clock(100 * DAY)
    ex, pulls, app, web = two_images_pulled_minutes_ago(storage, new_store("pulls"), clock)
    clock.now -= 8 * DAY  # the last pulls lie 8 days in the future
    assert (await ex.run_pass()).images == ()
    assert "stepped back" in ex.state.age_evictions_skipped
    assert pulls.mine == {("team/web", web): clock.now, ("team/app", app): clock.now}  # back to now
    clock.now += DAY
    pulls.record([("team/app", app)])
    assert (await ex.run_pass()).images == () and ex.state.age_evictions_skipped == ""
    clock.now += 6 * DAY + 1
    pulls.record([("team/app", app)])
    assert [image for image, _ in (await ex.run_pass()).images] == [("team/web", web)]


async def test_another_replicas_last_pulls_ahead_hold_age_evictions_while_they_are(storage, new_store):
    import json
    clock = Clock(100 * DAY)
    ex, pulls, app, web = two_images_pulled_minutes_ago(storage, new_store("pulls"), clock)
    pulls.store.write("ahead.json", json.dumps({"pulls": [["team/web", web, clock.now + 8 * DAY]]}).encode())
    clock.now += 8 * DAY - 3600  # app not pulled for max_age here; web pulled "in the future" there
    assert (await ex.run_pass()).images == () and "another replica" in ex.state.age_evictions_skipped
    assert (await ex.run_pass()).images == () and ex.state.passes_age_skipped == 2


@pytest.mark.parametrize("pulled_after_the_step", [True, False])
async def test_a_step_while_running_is_taken_out_of_the_last_pulls(storage, new_store, pulled_after_the_step):
    clock, monotonic = Clock(100 * DAY), Clock(5.0)
    app, web = storage.image("team/app", [storage.blob()]), storage.image("team/web", [storage.blob()])
    pulls = LastPulls(new_store("pulls"), "test", clock, monotonic)
    ex = Expiry(storage.store, 7 * DAY, None, pulls, grace=0)
    pulls.record([("team/web", web)])
    clock.now += 600
    monotonic.now += 600
    clock.now += 8 * DAY  # the wall clock steps; the monotonic one does not
    if pulled_after_the_step:  # before the pass: the pull sees the step
        pulls.record([("team/app", app)])
    assert (await ex.run_pass()).images == () and ex.state.clock_steps == 1
    assert pulls.mine[("team/web", web)] == clock.now - 600  # its age stays ten minutes
    assert ex.state.age_evictions_skipped == ""  # ages are true again: no need to skip


# True storage figures

async def test_the_figures_are_read_by_the_pass_at_start_without_a_cap(storage, new_store):
    clock = Clock(100 * DAY)
    blobs = [storage.blob(5000), storage.blob(3000)]
    storage.image("team/app", blobs[:1]), storage.image("team/web", blobs[1:])
    ex, _ = expiry(storage, new_store("pulls"), clock)
    assert ex.state.used_bytes is None  # not measured yet
    before = storage.store.requests.total()
    await ex.run_pass()
    assert ex.state.last_pass_requests == storage.store.requests.total() - before > 0
    total = storage.stored_bytes()
    assert total > 8000 and ex.state.used_bytes == total and ex.state.images == 2
    assert ex.state.measured_at == clock.now and ex.state.stored_since_pass == 0


async def test_a_pass_failing_part_way_still_leaves_the_figures_read(storage, new_store, monkeypatch):
    clock = Clock(100 * DAY)
    storage.image("team/app", [storage.blob(5000)])
    ex, _ = expiry(storage, new_store("pulls"), clock)

    def broken(root, plan, grace):
        raise OSError("disk gone")
    monkeypatch.setattr(expiry_module.eviction, "apply", broken)
    with pytest.raises(OSError):
        await ex.run_pass()
    assert ex.state.used_bytes == storage.stored_bytes() > 5000
    assert ex.state.images == 1 and ex.state.passes == 0 and "disk gone" in ex.state.last_error


async def test_bytes_stored_and_removed_keep_the_figures_current_between_passes(storage, new_store):
    clock = Clock(100 * DAY)
    old = storage.image("team/old", [storage.blob(5000)])
    new = storage.image("team/new", [storage.blob(3000)])
    ex, pulls = expiry(storage, new_store("pulls"), clock)
    ex.stored(700)  # before any reading: the pass at start reads it
    await ex.run_pass()
    total = storage.stored_bytes()
    assert ex.state.used_bytes == total and ex.state.stored_since_pass == 0
    ex.stored(1000)
    ex.stored(24)
    assert ex.state.used_bytes == total + 1024 and ex.state.stored_since_pass == 1024
    # a pass that removes one image: the new reading, less what it freed
    clock.now += 8 * DAY
    pulls.record([("team/new", new)])
    applied = await ex.run_pass()
    assert [image for image, _ in applied.images] == [("team/old", old)]
    remaining = storage.stored_bytes()
    assert ex.state.used_bytes == remaining == total - applied.bytes_freed and ex.state.images == 1


async def test_bytes_stored_while_a_pass_reads_stay_counted(storage, new_store):
    clock = Clock(100 * DAY)
    storage.image("team/app", [storage.blob(5000)])
    pulls = LastPulls(new_store("pulls"), "test", clock)
    ex = None

    def in_flight():  # asked as the pass begins: a transfer verifies just then
        ex.stored(500)
        return frozenset()
    ex = Expiry(storage.store, 7 * DAY, None, pulls, in_flight=in_flight, grace=0)
    ex.stored(100)  # before the pass: in its reading
    await ex.run_pass()
    total = storage.stored_bytes()
    assert ex.state.stored_since_pass == 500 and ex.state.used_bytes == total + 500  # on the high side


async def test_a_pass_removes_leftover_uploads_and_torn_files_before_it_reads(tmp_path, folder_storage):
    """What they held is not counted against max_bytes; an upload still written and a file being written stay."""
    storage, clock = folder_storage, Clock(100 * DAY)
    storage.image("team/app", [storage.blob(5000)])
    now = time.time()
    uploads = storage.v2 / "repositories/team/app/_uploads"
    for name, changed_at in (("stale", now - 3600), ("written", now)):
        (uploads / name).mkdir(parents=True)
        (uploads / name / "data").write_bytes(b"x" * 1000)
        os.utime(uploads / name / "data", (changed_at, changed_at))
    torn = storage.v2 / "blobs/sha256/aa" / ("a" * 64) / "data"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"")
    os.utime(torn, (now - 3600, now - 3600))
    ex, _ = expiry(storage, FolderStore(tmp_path / "pulls"), clock, tidy=lambda now: tidy_folder(storage.root, now))
    await ex.run_pass()
    assert not (uploads / "stale").exists() and (uploads / "written").exists() and not torn.exists()
    assert (ex.state.uploads_removed, ex.state.upload_bytes_removed, ex.state.empty_files_removed) == (1, 1000, 1)
    assert ex.state.used_bytes == storage.stored_bytes() + 1000  # the upload in progress counts
