"""Upstream health: after consecutive failures the upstream is assumed down for a while.

The idea of Artifactory's "Assumed Offline Period": while the upstream is down, answers come from the
caches at once (or fail at once) instead of after a timeout each; a probe in the background decides when it
is back. A failure is a transport error, a timeout or a 5xx; a 404 or a 401 is an answer, not a failure. A request
that timed out on an accepted connection (a hung upstream) is enough on its own: every further request would
cost the same timeout.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class UpstreamHealth:
    def __init__(self, failures_to_down: int = 3, down_seconds: float = 30.0,
                 timer: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.failures_to_down = failures_to_down
        self.down_seconds = down_seconds
        self._timer = timer
        self._wall_clock = wall_clock  # for `last_error_at`, an epoch the stats page shows
        self.consecutive_failures = 0
        self.down_until = 0.0
        self.last_error = ""
        self.last_error_at = 0.0
        self.resolved_at = 0.0  # the first success after the last error (wall clock); 0: not resolved yet
        self.answered = False  # any exchange yet (a success, a failure or a refusal): before it, its state is unknown
        self._back: asyncio.Event | None = None

    @property
    def down(self) -> bool:
        """Assumed down: the period after the last failure has not run out and no probe succeeded."""
        return self._timer() < self.down_until

    @property
    def state(self) -> str:
        """down, up, or unknown before its first exchange (nothing asked it yet)."""
        return "down" if self.down else "up" if self.answered else "unknown"

    def success(self) -> None:
        self.answered = True
        if self.down_until:
            log.info("upstream is back")
        if self.last_error and not self.resolved_at:
            self.resolved_at = self._wall_clock()
        self.consecutive_failures = 0
        self.down_until = 0.0
        if self._back is not None:
            self._back.set()
            self._back = None

    async def wait_until_up(self, within: float) -> bool:
        """Wait up to `within` seconds for the upstream to be back (a short outage, a flap); False if still down."""
        if not self.down:
            return True
        if self._back is None:
            self._back = asyncio.Event()
        try:
            await asyncio.wait_for(self._back.wait(), min(within, self.retry_in()))
        except TimeoutError:
            pass
        return not self.down

    def failure(self, error: str, hung: bool = False) -> None:
        """Count a failure; `hung` (accepted, no answer within the timeout) counts as enough to be down."""
        self.answered = True
        self.consecutive_failures += 1
        if hung:
            self.consecutive_failures = max(self.consecutive_failures, self.failures_to_down)
        self.last_error, self.last_error_at, self.resolved_at = error, self._wall_clock(), 0.0
        if self.consecutive_failures >= self.failures_to_down:
            if not self.down:
                log.warning("upstream assumed down for %.0f s after %d consecutive failures; last: %s",
                            self.down_seconds, self.consecutive_failures, error)
            self.down_until = self._timer() + self.down_seconds

    def still_down(self) -> None:
        """The probe found it still failing once the period ran out: another period, the last error kept (a
        quiet mirror would otherwise show up again while Artifactory is still down)."""
        self.down_until = self._timer() + self.down_seconds

    def refused(self, error: str) -> None:
        """The upstream answered but refused the mirror (its credential, its permissions): not down, yet the
        reason a client only sees as "not found" belongs on the stats page."""
        self.noted(error)

    def noted(self, error: str) -> None:
        """An answer that is no failure of the upstream but that a client sees only as a bare error: the last
        error, with its time."""
        self.answered = True
        self.last_error, self.last_error_at, self.resolved_at = error, self._wall_clock(), 0.0

    def retry_in(self) -> float:
        return max(0.0, self.down_until - self._timer())


class HealthProbe:
    """While the upstream is assumed down, ask its /v2/ every second; any answer below 500 means it is back, and
    none once the down period has run out keeps it down for another."""

    def __init__(self, upstream, health: UpstreamHealth, interval: float = 1.0):
        self.upstream, self.health, self.interval = upstream, health, interval
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.health.consecutive_failures < self.health.failures_to_down:
                continue
            status = await self.upstream.probe()
            if status is not None and status < 500:
                self.health.success()
            elif not self.health.down:  # the period ran out and it still does not answer: down for another one
                self.health.still_down()

    def stop(self) -> None:
        self._task.cancel()
