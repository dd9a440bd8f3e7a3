"""Decisions reused for `ttl`, an "allowed" also through an outage for `stale`, keyed by a hash of the secret so
that a wrong password never meets a cached "allowed"; ages on the monotonic clock."""
from registry_mirror.access.decisions import Decisions, Verdict

ALLOWED, REFUSED = Verdict(True, ""), Verdict(False, "no read permission")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_allowed_is_fresh_for_ttl_then_stale_until_stale_ends():
    clock = Clock()
    decisions = Decisions(ttl=300, stale=3600, clock=clock)
    key = decisions.key("dev", "pw", "tools/lint")
    decisions.record(key, ALLOWED)
    assert decisions.fresh(key).allowed
    clock.now += 300
    assert decisions.fresh(key) is None and decisions.stale_allowed(key).allowed
    clock.now += 3300
    assert decisions.stale_allowed(key) is None


def test_a_refusal_is_reused_for_ttl_but_never_holds_through_an_outage():
    clock = Clock()
    decisions = Decisions(ttl=300, stale=3600, clock=clock)
    key = decisions.key("dev", "pw", "team/app")
    decisions.record(key, REFUSED)
    assert decisions.fresh(key).reason == "no read permission"
    assert decisions.stale_allowed(key) is None


def test_another_secret_or_repository_is_another_decision_and_the_secret_is_not_kept():
    decisions = Decisions(ttl=300, stale=3600, clock=Clock())
    key = decisions.key("dev", "right-password", "tools/lint")
    decisions.record(key, ALLOWED)
    assert decisions.fresh(decisions.key("dev", "wrong-password", "tools/lint")) is None
    assert decisions.fresh(decisions.key("dev", "right-password", "team/app")) is None
    assert b"right-password" not in key[1] and len(key[1]) == 32
    assert Decisions(300, 3600).key("dev", "right-password", "x")[1] != decisions.key("dev", "right-password", "x")[1]


def test_an_unreachable_artifactory_is_not_a_decision_and_ttl_zero_asks_every_time():
    decisions = Decisions(ttl=0, stale=3600, clock=Clock())
    key = decisions.key("dev", "pw", "tools/lint")
    decisions.record(key, Verdict(False, "down", reachable=False))
    assert len(decisions) == 0
    decisions.record(key, ALLOWED)
    assert decisions.fresh(key) is None and decisions.stale_allowed(key).allowed


def test_a_refusal_ends_an_earlier_allowed_and_one_that_may_change_soon_is_not_kept():
    decisions = Decisions(ttl=300, stale=3600, clock=Clock())
    key = decisions.key("dev", "pw", "tools/lint")
    decisions.record(key, ALLOWED)
    assert decisions.credential_good(decisions.key("dev", "pw", "team/app"))  # the secret, whatever repository
    decisions.record(key, REFUSED)  # revoked
    assert decisions.stale_allowed(key) is None and not decisions.fresh(key).allowed
    missing = decisions.key("dev", "pw", "tools/new")
    decisions.record(missing, Verdict(False, "no such image yet", lasting=False))
    assert decisions.fresh(missing) is None
    assert not decisions.credential_good(decisions.key("dev", "other", "tools/lint"))
