"""The last pulls' clock: a step of the wall clock while running is taken out of the ages (seen against a
monotonic clock), and the expiry's corrections of steps from before the start. Their files, one per replica in a
store beside the storage (a folder or a bucket alike), survive restarts and merge, and a bad one is ignored."""
import json

import pytest

from registry_mirror.expiry import last_pulls
from registry_mirror.expiry.last_pulls import STEP_TOLERANCE, LastPulls
from registry_mirror.storage.store import FolderStore
from tests.unit.support.clocks import Clock

DAY = 86400.0


def clocks(tmp_path):
    wall, monotonic = Clock(100 * DAY), Clock(5.0)
    steps = []
    pulls = LastPulls(FolderStore(tmp_path), "a", wall, monotonic)
    pulls.on_step = steps.append
    pulls.record([("team/app", "d1")])
    wall.now += 600
    monotonic.now += 600
    pulls.record([("team/web", "d2")])
    return pulls, wall, monotonic, steps


@pytest.mark.parametrize("wall_moves, step", [
    (0.0, None),  # time passing on both clocks: no step
    (STEP_TOLERANCE, None),  # slewing, drift
    (-STEP_TOLERANCE, None),
    (8 * DAY, 8 * DAY),  # a bad NTP step, a VM resumed
    (-8 * DAY, -8 * DAY),  # the correction
    (STEP_TOLERANCE + 1, STEP_TOLERANCE + 1),
])
def test_a_step_of_the_wall_clock_moves_the_last_pulls_recorded_before_it(tmp_path, wall_moves, step):
    pulls, wall, monotonic, steps = clocks(tmp_path)
    before = dict(pulls.mine)
    wall.now += 3600 + wall_moves
    monotonic.now += 3600
    pulls.record([("team/new", "d3")])
    moved = step or 0.0
    assert pulls.mine == {**{image: at + moved for image, at in before.items()}, ("team/new", "d3"): wall.now}
    assert steps == ([step] if step else [])
    assert list(pulls.mine) == [("team/app", "d1"), ("team/web", "d2"), ("team/new", "d3")]  # order kept


def test_a_step_seen_by_now_alone_is_saved(tmp_path):
    pulls, wall, monotonic, _ = clocks(tmp_path)
    pulls.save()
    wall.now += 8 * DAY
    pulls.now()
    pulls.save()
    assert LastPulls(pulls.store, "a").mine == {("team/app", "d1"): 100 * DAY + 8 * DAY,
                                             ("team/web", "d2"): 100 * DAY + 600 + 8 * DAY}


def test_no_monotonic_clock_no_step_seen(tmp_path):
    wall = Clock(100 * DAY)
    pulls = LastPulls(FolderStore(tmp_path), "a", wall)  # a fake wall clock alone: its jumps are time passing
    pulls.record([("team/app", "d1")])
    wall.now += 8 * DAY
    pulls.now()
    assert pulls.mine == {("team/app", "d1"): 100 * DAY}


def test_advance_only_moves_last_pulls_forward_and_clamp_brings_the_future_back(tmp_path):
    pulls = LastPulls(FolderStore(tmp_path), "a", Clock(100 * DAY))
    pulls.first_seen([("a", "1"), ("b", "2")], 50.0)
    pulls.advance({("a", "1"): 80.0, ("b", "2"): 20.0, ("c", "3"): 70.0})  # c: from another replica's file
    assert pulls.mine == {("a", "1"): 80.0, ("b", "2"): 50.0, ("c", "3"): 70.0}
    pulls.clamp(60.0, 55.0)
    assert pulls.mine == {("a", "1"): 55.0, ("b", "2"): 50.0, ("c", "3"): 55.0}
    assert pulls.rows_to_save() is not None


# The files, on a folder and on a bucket alike

def test_last_pulls_survive_a_restart_and_replicas_merge_the_latest(new_store):
    clock = Clock(1000.0)
    mine = LastPulls(new_store("pulls"), "a", clock)
    mine.record([("team/app", "d1"), ("team/old", "d0")])
    mine.save()
    other = LastPulls(new_store("pulls"), "b", clock)
    clock.now = 2000.0
    other.record([("team/app", "d1"), ("team/web", "d2")])
    other.save()
    again = LastPulls(new_store("pulls"), "a", clock)  # a restart of replica a
    assert again.mine == {("team/app", "d1"): 1000.0, ("team/old", "d0"): 1000.0}
    assert list(again.mine) == [("team/app", "d1"), ("team/old", "d0")]  # in pull order, for the bound
    assert again.merged(again.snapshot()) == {("team/app", "d1"): 2000.0, ("team/web", "d2"): 2000.0,
                                              ("team/old", "d0"): 1000.0}


def test_only_each_replicas_own_file_is_merged(new_store):
    store = new_store("pulls")
    row = json.dumps({"pulls": [["team/app", "d1", 5000.0]]}).encode()
    for path in ("deeper/c.json", "c.json.tmp", "notes.txt"):  # none is a replica's file
        store.write(path, row)
    pulls = LastPulls(store, "a", Clock(1000.0))
    pulls.record([("team/app", "d1")])
    assert pulls.merged(pulls.snapshot()) == {("team/app", "d1"): 1000.0}
    store.write("c.json", row)
    assert pulls.merged(pulls.snapshot()) == {("team/app", "d1"): 5000.0}


@pytest.mark.parametrize("data", [b"{not json", b'{"pulls": [["r", "d"]]}', b'{"pulls": 7}', b"[]",
                                  json.dumps({"pulls": [["r", "d", 5.0]] * 40}).encode()])  # over the cap below
def test_an_unreadable_file_is_ignored_with_a_warning(new_store, caplog, monkeypatch, data):
    monkeypatch.setattr(last_pulls, "MAX_FILE_BYTES", 500)
    store = new_store("pulls")
    store.write("a.json", data)
    assert LastPulls(store, "a").mine == {}
    assert "count as pulled when next seen" in caplog.text
    store.write("a.json", json.dumps({"pulls": [["r", "d", 5.0]]}).encode())
    assert LastPulls(store, "a").mine == {("r", "d"): 5.0}


class FailingWrites:
    """A store whose writes fail while `failing` (a full disk, a bucket away)."""

    def __init__(self, store):
        self.store, self.failing = store, True

    def __getattr__(self, name):
        return getattr(self.store, name)

    def write(self, path: str, data: bytes) -> None:
        if self.failing:
            raise OSError("no space left on device")
        self.store.write(path, data)


def test_a_write_that_fails_is_made_by_the_next_save(new_store, caplog):
    store = FailingWrites(new_store("pulls"))
    pulls = LastPulls(store, "a", Clock(1000.0))
    pulls.record([("team/app", "d1")])
    pulls.save()
    assert "cannot write the last pulls to a.json" in caplog.text and store.read("a.json", 1000) is None
    store.failing = False
    pulls.save()  # nothing recorded since: still written
    assert LastPulls(store, "a").mine == {("team/app", "d1"): 1000.0}
