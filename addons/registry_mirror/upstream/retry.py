"""When a request to the upstream is sent again: a dropped connection or a 502/503/504 after a short backoff,
a 429 (rate-limited) after its Retry-After while the waits stay within RATE_LIMIT_WAIT_CAP."""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

import aiohttp

from registry_mirror.redact import error_text, url_for_logs

RETRIED_STATUSES = (502, 503, 504)
RETRY_BACKOFF = 0.25  # seconds, doubled on each retry: 3 retries span a 1.75 s flap
# a 429 is retried (within upstream.retries) after its Retry-After, or the backoff without one, while all the
# waits of one request add up to at most this; a longer Retry-After is passed on to the registry at once
RATE_LIMIT_WAIT_CAP = 5.0


class UpstreamError(Exception):
    """The upstream could not be reached or answered nonsense; the message carries no secret.

    `timed_out`: it accepted the connection and did not answer in time (hung), which health treats as down."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


def retry_after(value: str | None, now: float) -> float | None:
    """The seconds a `Retry-After` asks for (delay-seconds, or an HTTP date, against the epoch `now`); None
    for a missing or malformed one."""
    value = (value or "").strip()
    if re.fullmatch(r"\d{1,9}", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # a "-0000" zone: UTC, by RFC 5322
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class Retrying:
    """`retries` more attempts at most; `sleep` and `clock` (an epoch, for Retry-After dates) are injected so
    that retry waits are tested without time passing."""
    retries: int
    sleep: Callable[[float], Awaitable[None]]
    clock: Callable[[], float]

    async def request(self, session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                      limits: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """One request; a refusal or a timeout is not retried (upstream/health.py deals with an upstream that is away).
        The last 429 is answered, Retry-After and all."""
        rate_limited_for = 0.0  # seconds waited on 429s so far
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = await session.request(method, url, headers=headers, allow_redirects=False, timeout=limits)
            except TimeoutError as e:
                raise UpstreamError(f"{method} {url_for_logs(url)}: {error_text(e)}", timed_out=True) from e
            except (aiohttp.ClientError, OSError) as e:
                # refused: it is not listening, and retrying costs the caller time a cached answer would not
                if last or isinstance(e, (aiohttp.ServerTimeoutError, aiohttp.ClientConnectorError)):
                    raise UpstreamError(f"{method} {url_for_logs(url)}: {error_text(e)}",
                                        timed_out=isinstance(e, aiohttp.ServerTimeoutError)) from e
            else:
                if resp.status == 429 and not last:
                    wait = self._rate_limit_wait(resp, attempt)
                    if rate_limited_for + wait > RATE_LIMIT_WAIT_CAP:
                        return resp  # asked to wait longer than a pull should: the registry hears it at once
                    rate_limited_for += wait
                    resp.release()
                    await self.sleep(wait)
                    continue
                if resp.status not in RETRIED_STATUSES or last:
                    return resp
                resp.release()
            await self.sleep(RETRY_BACKOFF * 2 ** attempt)
        raise AssertionError("unreachable")

    def _rate_limit_wait(self, resp: aiohttp.ClientResponse, attempt: int) -> float:
        wait = retry_after(resp.headers.get("Retry-After"), self.clock())
        return RETRY_BACKOFF * 2 ** attempt if wait is None else wait
