"""Stale-if-error, the latency budget and upstream health, with a fake upstream and a fake clock."""
import asyncio

import pytest

from registry_mirror.config.load import CacheConfig
from registry_mirror.manifests.service import UpstreamDown
from registry_mirror.manifests.tag_state import KnownTag, TagState
from registry_mirror.oci.registry_requests import classify
from registry_mirror.upstream.client import UpstreamError
from registry_mirror.upstream.health import UpstreamHealth
from tests.unit.manifests.test_service import IMAGE, FakeUpstream, body_for, headers, manifest_service
from tests.unit.support.clocks import Clock
from tests.unit.support.waits import BOUND


class FlakyUpstream(FakeUpstream):
    """Fails while `fail`; while `held` is an event, answers only once the test sets it."""
    def __init__(self):
        super().__init__()
        self.fail = False
        self.held: asyncio.Event | None = None

    async def fetch_small(self, method, req, hdrs):
        if self.held is not None:
            await self.held.wait()
        if self.fail:
            self.calls.append(("failed", req.reference))
            raise UpstreamError("GET http://up/v2/...: ClientConnectorError")
        return await super().fetch_small(method, req, hdrs)


def make(tmp_path=None, budget=30.0, **cache):
    """A service on one fake clock (TTLs and tag ages alike). The default budget is one no answer here can
    overrun, however slow the machine; a test that needs it overrun passes a small one and an upstream that
    cannot answer within it (held, or assumed down)."""
    clock = Clock()
    up = FlakyUpstream()
    tag_state_file = str(tmp_path / "tags.json") if tmp_path else None
    cfg = CacheConfig(tag_ttl=30, stale_budget=budget, tag_state_file=tag_state_file, **cache)
    health = UpstreamHealth(failures_to_down=3, down_seconds=300, timer=clock)
    return manifest_service(up, cfg, clock, health, known=TagState(tag_state_file, clock=clock)), up, clock


TAG = "/v2/app/manifests/1.0"


def test_health_counts_consecutive_failures_and_recovers():
    clock = Clock()
    h = UpstreamHealth(failures_to_down=3, down_seconds=30, timer=clock)
    h.failure("a"), h.failure("b")
    assert not h.down
    h.success()
    h.failure("c"), h.failure("d")
    assert not h.down
    h.failure("e")
    assert h.down and h.last_error == "e" and h.retry_in() == 30
    clock.now = 31
    assert not h.down  # the period ran out: the next request tries again
    h.failure("f")
    assert h.down  # still failing: down at once
    h.success()
    assert not h.down


async def test_a_failed_refresh_answers_the_last_known_digest_with_its_age():
    svc, up, clock = make()
    fresh = await svc.answer(classify("GET", TAG), headers(IMAGE))
    clock.now = 40  # past the tag TTL
    up.fail = True
    stale = await svc.answer(classify("GET", TAG), headers(IMAGE))
    assert stale.outcome == "STALE" and stale.body == fresh.body
    assert stale.headers["Docker-Content-Digest"] == fresh.headers["Docker-Content-Digest"]
    assert stale.headers["X-Mirror-Stale-Age"] == stale.headers["Age"] == "40"
    assert stale.headers["Warning"].startswith("110")
    assert svc.health.consecutive_failures == 1


async def test_a_slow_refresh_is_answered_stale_within_the_budget_and_finishes_in_the_background():
    svc, up, clock = make(budget=0.05)  # the held upstream answers only after it has run out
    await svc.answer(classify("GET", TAG), headers(IMAGE))
    clock.now = 40
    up.version, up.held = 1, asyncio.Event()
    stale = await asyncio.wait_for(svc.answer(classify("GET", TAG), headers(IMAGE)), BOUND)
    assert stale.outcome == "STALE" and len(up.calls) == 1  # answered while the refresh is still held
    refresh = list(svc._inflight.values())
    assert len(refresh) == 1  # going on in the background
    up.held.set()
    await asyncio.wait_for(refresh[0], BOUND)  # it ends and fills the caches
    later = await svc.answer(classify("GET", TAG), headers(IMAGE))
    assert later.outcome == "HIT" and later.body == body_for(IMAGE, 1) and len(up.calls) == 2


async def test_while_down_cached_answers_are_immediate_and_uncached_fail_at_once():
    svc, up, clock = make(budget=0.05)  # an uncached answer waits this long for a flap to end; none does
    await svc.answer(classify("GET", TAG), headers(IMAGE))
    up.fail = True
    for n in range(3):
        with pytest.raises(UpstreamError):
            await svc.answer(classify("GET", f"/v2/other/manifests/v{n}"), headers(IMAGE))
    assert svc.health.down
    calls = len(up.calls)
    clock.now = 40
    assert (await svc.answer(classify("HEAD", TAG), headers(IMAGE))).outcome == "STALE"
    with pytest.raises(UpstreamDown, match="assumed down"):
        await svc.answer(classify("GET", "/v2/other/manifests/v9"), headers(IMAGE))
    assert len(up.calls) == calls  # nothing was asked upstream while down


async def test_too_stale_is_not_answered():
    svc, up, clock = make(max_stale=60)
    await svc.answer(classify("GET", TAG), headers(IMAGE))
    up.fail = True
    clock.now = 60
    assert (await svc.answer(classify("GET", TAG), headers(IMAGE))).outcome == "STALE"  # just old enough
    clock.now = 61
    with pytest.raises(UpstreamError):
        await svc.answer(classify("GET", TAG), headers(IMAGE))


def test_tag_ages_come_from_the_tag_states_clock():
    clock = Clock()
    clock.now = 1000.0
    state = TagState(None, clock=clock)
    known = KnownTag("sha256:" + "a" * 64, IMAGE, 10, state.now())
    assert known.fetched_at == 1000.0
    clock.now = 1042.5
    assert state.age(known) == 42.5
    clock.now = 900.0  # a wall clock set back: no negative age
    assert state.age(known) == 0.0


async def test_a_fetched_tag_is_stamped_with_the_tag_states_clock():
    svc, up, clock = make()
    clock.now = 12.5
    await svc.answer(classify("GET", TAG), headers(IMAGE))
    (known,) = svc.known.tags.values()
    assert known.fetched_at == 12.5


async def test_last_known_tags_survive_a_restart_for_heads(tmp_path):
    svc, up, _ = make(tmp_path)
    fresh = await svc.answer(classify("GET", TAG), headers(IMAGE))
    svc.known.save()
    restarted, up2, _ = make(tmp_path)
    up2.fail = True
    head = await restarted.answer(classify("HEAD", TAG), headers(IMAGE), "HEAD")
    assert head.outcome == "STALE"
    assert head.headers["Docker-Content-Digest"] == fresh.headers["Docker-Content-Digest"]
    assert head.headers["Content-Length"] == str(len(fresh.body))
    with pytest.raises(UpstreamError):  # a GET needs the body, which only the registry has now
        await restarted.answer(classify("GET", TAG), headers(IMAGE), "GET")
