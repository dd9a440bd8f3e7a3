"""Upstream health: consecutive failures make the upstream assumed down for a while, on a fake timer; a probe of
its /v2/ ends that early."""
import pytest

from registry_mirror.upstream.health import HealthProbe, UpstreamHealth
from tests.unit.support.clocks import Clock
from tests.unit.support.waits import BOUND, until


def health(failures_to_down: int = 3, down_seconds: float = 30.0):
    timer, wall = Clock(100.0), Clock(1_700_000_000.0)
    return UpstreamHealth(failures_to_down, down_seconds, timer=timer, wall_clock=wall), timer, wall


def test_down_after_consecutive_failures_for_the_down_period_on_its_timer():
    h, timer, _ = health()
    h.failure("a"), h.failure("b")
    assert not h.down and h.retry_in() == 0.0
    h.failure("c")
    assert h.down and h.retry_in() == 30.0 and h.consecutive_failures == 3
    timer.now += 29.5
    assert h.down and h.retry_in() == 0.5
    timer.now += 0.5
    assert not h.down and h.retry_in() == 0.0  # the period ran out: the next request tries the upstream again
    h.failure("d")
    assert h.down and h.retry_in() == 30.0  # still failing: down again at once, for a whole period


def test_a_success_between_failures_starts_the_count_over():
    h, _, _ = health()
    h.failure("a"), h.failure("b"), h.success()
    h.failure("c"), h.failure("d")
    assert not h.down and h.consecutive_failures == 2


def test_a_hung_request_alone_is_enough_to_be_down():
    h, _, _ = health(failures_to_down=5)
    h.failure("GET manifest: timed out", hung=True)
    assert h.down and h.consecutive_failures == 5


def test_the_last_error_is_stamped_with_the_wall_clock_not_the_timer():
    h, timer, wall = health()
    h.failure("GET blob: connection reset")
    assert (h.last_error, h.last_error_at) == ("GET blob: connection reset", 1_700_000_000.0)
    wall.now += 60
    h.refused("the upstream refused the mirror's credentials")
    assert h.last_error == "the upstream refused the mirror's credentials" and h.last_error_at == 1_700_000_060.0
    assert h.consecutive_failures == 1 and not h.down  # a refusal is an answer: the upstream is up


async def test_waiting_for_the_upstream_returns_at_once_when_it_is_up():
    h, _, _ = health()
    assert await h.wait_until_up(within=0) is True


async def test_a_wait_that_runs_out_while_down_says_so():
    h, _, _ = health(failures_to_down=1)
    h.failure("refused")
    assert await h.wait_until_up(within=0) is False  # no real time passes: the wait is bounded by `within`
    assert h.down


class ProbedUpstream:
    """Answers the health probe with `statuses` in turn (None: unreachable), the last one from then on."""

    def __init__(self, *statuses):
        self.statuses, self.asked = list(statuses), 0

    async def probe(self):
        self.asked += 1
        return self.statuses[min(self.asked, len(self.statuses)) - 1]


@pytest.mark.parametrize("answers", [(200,), (None, 503, 404), (500, 401)])
async def test_the_probe_ends_the_down_period_at_its_first_answer_below_500(answers):
    h, _, _ = health(failures_to_down=1, down_seconds=3600)
    h.failure("connection refused")
    upstream = ProbedUpstream(*answers)
    probe = HealthProbe(upstream, h, interval=0)
    try:
        assert await h.wait_until_up(within=BOUND)  # woken by the probe: the fake timer never moves
    finally:
        probe.stop()
    assert upstream.asked == len(answers)  # no earlier answer (unreachable, a 5xx) ended it
    assert not h.down and h.consecutive_failures == 0


async def test_a_probe_that_still_gets_no_answer_keeps_it_down_past_the_period_with_its_last_error():
    h, timer, _ = health(failures_to_down=1, down_seconds=30)
    h.failure("GET team/app:1.0: connection refused")
    upstream = ProbedUpstream(None)  # Artifactory stays unreachable
    probe = HealthProbe(upstream, h, interval=0)
    try:
        timer.now += 31  # the period ran out, with no request from a client to try again (a quiet mirror)
        await until(lambda: h.down, "the probe to find it still down")
    finally:
        probe.stop()
    assert h.retry_in() == 30.0 and h.last_error == "GET team/app:1.0: connection refused"
    assert h.state == "down"
