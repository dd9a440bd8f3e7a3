"""The last pulls' clock: a step of the wall clock while running is taken out of the ages (seen against a
monotonic clock), and the expiry's corrections of steps from before the start."""
import pytest

from registry_mirror.expiry.last_pulls import STEP_TOLERANCE, LastPulls
from tests.unit.support.clocks import Clock

DAY = 86400.0


def clocks(tmp_path):
    wall, monotonic = Clock(100 * DAY), Clock(5.0)
    steps = []
    pulls = LastPulls(tmp_path, "a", wall, monotonic)
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
    assert LastPulls(tmp_path, "a").mine == {("team/app", "d1"): 100 * DAY + 8 * DAY,
                                             ("team/web", "d2"): 100 * DAY + 600 + 8 * DAY}


def test_no_monotonic_clock_no_step_seen(tmp_path):
    wall = Clock(100 * DAY)
    pulls = LastPulls(tmp_path, "a", wall)  # a fake wall clock alone: its jumps are time passing
    pulls.record([("team/app", "d1")])
    wall.now += 8 * DAY
    pulls.now()
    assert pulls.mine == {("team/app", "d1"): 100 * DAY}


def test_advance_only_moves_last_pulls_forward_and_clamp_brings_the_future_back(tmp_path):
    pulls = LastPulls(tmp_path, "a", Clock(100 * DAY))
    pulls.first_seen([("a", "1"), ("b", "2")], 50.0)
    pulls.advance({("a", "1"): 80.0, ("b", "2"): 20.0, ("c", "3"): 70.0})  # c: from another replica's file
    assert pulls.mine == {("a", "1"): 80.0, ("b", "2"): 50.0, ("c", "3"): 70.0}
    pulls.clamp(60.0, 55.0)
    assert pulls.mine == {("a", "1"): 55.0, ("b", "2"): 50.0, ("c", "3"): 55.0}
    assert pulls.rows_to_save() is not None
