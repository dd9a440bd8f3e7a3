"""A 429 from the upstream: retried after its Retry-After within a cap, passed on with it when it lasts, answered
stale for a known tag, and never taken for an upstream that is down. No time passes: the sleep is a fake."""
import asyncio
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from aiohttp import web
from multidict import CIMultiDict

from registry_mirror.config.load import parse
from registry_mirror.oci.registry_requests import Kind, RegistryRequest, classify
from registry_mirror.responses import passed_headers, upstream_status_error
from registry_mirror.upstream.client import SmallResponse, Upstream
from registry_mirror.upstream.retry import RATE_LIMIT_WAIT_CAP, RETRY_BACKOFF, retry_after
from tests.unit.manifests.test_service import IMAGE, FakeUpstream, headers
from tests.unit.manifests.test_stale import TAG, make
from tests.unit.support.local_http import serve

NOW = 1_700_000_000.0  # the fake epoch Retry-After dates are read against


def http_date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, timezone.utc), usegmt=True)


@pytest.mark.parametrize("value,seconds", [
    ("0", 0.0), ("3", 3.0), (" 120 ", 120.0),
    (http_date(NOW + 4), 4.0), (http_date(NOW - 60), 0.0),  # a date in the past: at once
    ("Tue, 14 Nov 2023 22:13:24 -0000", 4.0),  # the "-0000" zone: UTC, not the machine's time zone
    (None, None), ("", None), ("soon", None), ("-1", None), ("1.5", None), ("Tue, 99 Foo 2023", None),
])
def test_retry_after(value, seconds):
    assert retry_after(value, NOW) == seconds


class FakeSleep:
    """Records the waits asked for; returns at once."""

    def __init__(self):
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def exchange(answers: list[tuple[int, dict]], retries: int = 3) -> tuple[SmallResponse, list[float], int]:
    """A manifest GET against an upstream answering `answers` in turn (the last one from then on):
    (the response, the waits asked for, the requests the upstream saw)."""
    seen = []

    async def handler(request):
        status, extra = answers[min(len(seen), len(answers) - 1)]
        seen.append(request.path)
        return web.Response(status=status, body=b'{"errors":[]}', headers=extra)
    runner, port = await serve(handler)
    cfg = parse({"upstream": {"url": f"http://127.0.0.1:{port}", "repository": "r", "anonymous": True,
                              "retries": retries}}).upstream
    sleep = FakeSleep()
    upstream = Upstream(cfg, sleep=sleep, clock=lambda: NOW)
    await upstream.start()
    try:
        resp = await upstream.fetch_small("GET", RegistryRequest(Kind.MANIFEST_BY_TAG, "app", "1.0"), {})
    finally:
        await upstream.close()
        await runner.cleanup()
    return resp, sleep.waits, len(seen)


async def test_a_429_is_retried_after_its_retry_after():
    resp, waits, seen = await exchange([(429, {"Retry-After": "1"}), (200, {})])
    assert (resp.status, waits, seen) == (200, [1.0], 2)


async def test_a_429_with_a_date_waits_until_then():
    resp, waits, seen = await exchange([(429, {"Retry-After": http_date(NOW + 2)}), (200, {})])
    assert (resp.status, waits, seen) == (200, [2.0], 2)


async def test_a_429_without_retry_after_waits_the_backoff():
    resp, waits, seen = await exchange([(429, {}), (429, {}), (200, {})])
    assert (resp.status, waits, seen) == (200, [RETRY_BACKOFF, RETRY_BACKOFF * 2], 3)


async def test_a_retry_after_over_the_cap_is_passed_on_at_once_with_its_header():
    resp, waits, seen = await exchange([(429, {"Retry-After": str(int(RATE_LIMIT_WAIT_CAP) + 1)}), (200, {})])
    assert (resp.status, waits, seen) == (429, [], 1)
    assert passed_headers(resp.headers)["Retry-After"] == str(int(RATE_LIMIT_WAIT_CAP) + 1)


async def test_the_waits_of_one_request_add_up_to_the_cap_at_most():
    resp, waits, seen = await exchange([(429, {"Retry-After": "2"})], retries=10)
    assert (resp.status, waits, seen) == (429, [2.0, 2.0], 3)  # a third wait would pass RATE_LIMIT_WAIT_CAP
    assert sum(waits) <= RATE_LIMIT_WAIT_CAP and resp.headers["Retry-After"] == "2"


async def test_a_429_is_retried_within_the_retry_count():
    resp, waits, seen = await exchange([(429, {"Retry-After": "0"})], retries=2)
    assert (resp.status, waits, seen) == (429, [0.0, 0.0], 3)
    resp, waits, seen = await exchange([(429, {"Retry-After": "0"}), (200, {})], retries=0)
    assert (resp.status, waits, seen) == (429, [], 1)


async def test_the_5xx_backoff_uses_the_injected_sleep_too():
    resp, waits, seen = await exchange([(503, {}), (503, {}), (200, {})])
    assert (resp.status, waits, seen) == (200, [RETRY_BACKOFF, RETRY_BACKOFF * 2], 3)


def test_a_lasting_429_is_passed_on_as_is_with_retry_after():
    assert upstream_status_error(429, "manifest app:1.0") is None
    assert passed_headers(CIMultiDict({"Retry-After": "30", "Set-Cookie": "x"})) == {"Retry-After": "30"}


class RateLimited(FakeUpstream):
    """Answers 429 (with Retry-After) while `limited`."""

    def __init__(self):
        super().__init__()
        self.limited = False

    async def fetch_small(self, method, req, hdrs):
        if self.limited:
            self.calls.append(("429", req.reference))
            return SmallResponse(429, CIMultiDict({"Retry-After": "30", "Content-Type": "application/json"}),
                                 b'{"errors":[{"code":"TOOMANYREQUESTS"}]}', "Bearer")
        return await super().fetch_small(method, req, hdrs)


def rate_limited_service():
    svc, _, clock = make()
    up = RateLimited()
    svc.upstream = up
    return svc, up, clock


async def test_a_known_tag_is_answered_stale_on_a_429_and_the_upstream_is_not_down():
    svc, up, clock = rate_limited_service()
    fresh = await svc.answer(classify("GET", TAG), headers(IMAGE))
    clock.now = 40  # past the tag TTL
    up.limited = True
    for _ in range(5):  # more than failures_to_down
        stale = await svc.answer(classify("GET", TAG), headers(IMAGE))
        assert stale.outcome == "STALE" and stale.body == fresh.body
    assert not svc.health.down and svc.health.consecutive_failures == 0
    assert len(svc._sick) == 1  # answered stale at once for a while: no request waits on a rate limit


async def settled() -> None:
    """Every background refresh has ended, and its done callbacks (registered before ours) have run."""
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))


async def test_a_sick_tag_stays_sick_while_its_background_refresh_is_rate_limited():
    svc, up, clock = rate_limited_service()
    await svc.answer(classify("GET", TAG), headers(IMAGE))
    clock.now = 40
    up.limited = True
    await svc.answer(classify("GET", TAG), headers(IMAGE))  # marks it sick
    key = next(iter(svc._sick))
    await svc.answer(classify("GET", TAG), headers(IMAGE))  # sick: stale at once, refresh in the background
    await settled()
    assert key in svc._sick and up.calls[-1] == ("429", "1.0")
    up.limited = False
    await svc.answer(classify("GET", TAG), headers(IMAGE))
    await settled()
    assert key not in svc._sick  # a refresh that succeeded ends it


async def test_an_unknown_tag_on_a_429_gets_the_429_with_retry_after():
    svc, up, _ = rate_limited_service()
    up.limited = True
    answer = await svc.answer(classify("GET", TAG), headers(IMAGE))
    assert answer.status == 429 and answer.headers["Retry-After"] == "30"
    assert not svc.health.down and len(svc.manifests) == 0
