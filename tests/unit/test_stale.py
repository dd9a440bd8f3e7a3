"""Stale-if-error, the latency budget and upstream health, with a fake upstream and a fake clock."""
import asyncio

import pytest

from registry_mirror.config import CacheConfig
from registry_mirror.health import UpstreamHealth
from registry_mirror.manifests import ManifestService, UpstreamDown
from registry_mirror.requests import classify
from registry_mirror.upstream import UpstreamError

from .test_manifests import IMAGE, FakeUpstream, body_for, headers


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FlakyUpstream(FakeUpstream):
    def __init__(self):
        super().__init__()
        self.fail = False
        self.delay = 0.0

    async def fetch_small(self, method, req, hdrs):
        await asyncio.sleep(self.delay)
        if self.fail:
            self.calls.append(("failed", req.reference))
            raise UpstreamError("GET http://up/v2/...: ClientConnectorError")
        return await super().fetch_small(method, req, hdrs)


def make(tmp_path=None, **cache):
    clock = Clock()
    up = FlakyUpstream()
    cfg = CacheConfig(tag_ttl=30, stale_budget=0.2, tag_state_file=str(tmp_path / "tags.json") if tmp_path else None,
                      **cache)
    health = UpstreamHealth(failures_to_down=3, down_seconds=300, timer=clock)
    return ManifestService(up, cfg, health, timer=clock), up, clock


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


def test_a_failed_refresh_answers_the_last_known_digest_with_its_age():
    async def scenario():
        svc, up, clock = make()
        fresh = await svc.answer(classify("GET", TAG), headers(IMAGE))
        clock.now = 40  # past the tag TTL
        up.fail = True
        stale = await svc.answer(classify("GET", TAG), headers(IMAGE))
        assert stale.outcome == "STALE" and stale.body == fresh.body
        assert stale.headers["Docker-Content-Digest"] == fresh.headers["Docker-Content-Digest"]
        assert "X-Mirror-Stale-Age" in stale.headers and stale.headers["Warning"].startswith("110")
        assert svc.health.consecutive_failures == 1
    asyncio.run(scenario())


def test_a_slow_refresh_is_answered_stale_within_the_budget_and_finishes_in_the_background():
    async def scenario():
        svc, up, clock = make()
        await svc.answer(classify("GET", TAG), headers(IMAGE))
        clock.now = 40
        up.delay, up.version = 0.5, 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        stale = await svc.answer(classify("GET", TAG), headers(IMAGE))
        assert stale.outcome == "STALE" and loop.time() - started < 0.4
        await asyncio.sleep(0.5)  # the refresh ends and fills the caches
        up.delay = 0
        later = await svc.answer(classify("GET", TAG), headers(IMAGE))
        assert later.outcome == "HIT" and later.body == body_for(IMAGE, 1)
    asyncio.run(scenario())


def test_while_down_cached_answers_are_immediate_and_uncached_fail_at_once():
    async def scenario():
        svc, up, clock = make()
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
    asyncio.run(scenario())


def test_too_stale_is_not_answered():
    async def scenario():
        svc, up, clock = make(max_stale=60)
        await svc.answer(classify("GET", TAG), headers(IMAGE))
        svc.known.tags.update({k: type(v)(v.digest, v.content_type, v.length, v.fetched_at - 120)
                               for k, v in svc.known.tags.items()})
        clock.now = 40
        up.fail = True
        with pytest.raises(UpstreamError):
            await svc.answer(classify("GET", TAG), headers(IMAGE))
    asyncio.run(scenario())


def test_last_known_tags_survive_a_restart_for_heads(tmp_path):
    async def scenario():
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
    asyncio.run(scenario())
