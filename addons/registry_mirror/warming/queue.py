"""Warms waiting to run: a bounded queue that coalesces duplicates and retries failures with a backoff.

Artifactory may send an event more than once (its own retries, a replay, one webhook per repository path)
and a CI pipeline pushes in bursts: a warm of a digest that is already queued or running is not queued again,
so a burst of duplicates costs one warm, and a replayed event at most one more once that warm is done. The
queue holds at most `bound` warms; beyond, an event is refused (Artifactory shows the failed delivery)
rather than memory growing. A failed warm is tried again after `backoff`, doubling, `attempts` times in all.
The queue itself is synchronous and takes the time from an injected clock, so its policy is tested without
sleeping; `Warmer` runs it on the event loop, one warm at a time (a warm is a pull through the mirror:
several at once would only share the same link and disks).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from registry_mirror.background import BackgroundLoop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmJob:
    digest: str
    names: tuple[str, ...]  # every name the mirror's clients pull it by
    tag: str = ""  # refreshed first, so that pulls by tag see the new digest at once

    @property
    def key(self) -> tuple:
        return self.digest, self.names


@dataclass
class WarmTotals:
    """What the stats page shows of the warms."""
    queued: int = 0  # waiting now, retries included
    running: int = 0
    done: int = 0
    failed: int = 0  # gave up after every attempt
    retries: int = 0
    coalesced: int = 0  # events whose warm was already queued or running
    refused: int = 0  # events refused with the queue full
    bytes: int = 0  # read through the mirror by finished warms
    blobs: int = 0
    seconds: float = 0.0  # the finished warms' time, in all
    last_seconds: float | None = None  # the last finished warm's, from its event to its end
    last_error: str = ""


class WarmQueue:
    def __init__(self, bound: int = 64, attempts: int = 4, backoff: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.bound, self.attempts, self.backoff, self.clock = bound, attempts, backoff, clock
        self.totals = WarmTotals()
        self._waiting: dict[tuple, tuple[float, int, float, WarmJob]] = {}  # key -> (due, attempt, since, job)
        self._running: dict[tuple, tuple[int, float]] = {}  # key -> (attempt, since)

    def submit(self, job: WarmJob) -> str:
        """`queued`, `coalesced` (the same warm is queued or running) or `full`."""
        if job.key in self._waiting or job.key in self._running:
            self.totals.coalesced += 1
            return "coalesced"
        if len(self._waiting) + len(self._running) >= self.bound:
            self.totals.refused += 1
            return "full"
        now = self.clock()
        self._waiting[job.key] = (now, 1, now, job)
        self._count()
        return "queued"

    def next_due(self) -> float | None:
        """When the earliest waiting warm may start, on the queue's clock."""
        return min((due for due, *_ in self._waiting.values()), default=None)

    def take(self) -> WarmJob | None:
        """The earliest warm that is due now (it is running from then on), or None."""
        now = self.clock()
        due = [(d, key) for key, (d, *_) in self._waiting.items() if d <= now]
        if not due:
            return None
        _, key = min(due)
        _, attempt, since, job = self._waiting.pop(key)
        self._running[key] = (attempt, since)
        self._count()
        return job

    def finished(self, job: WarmJob, error: str = "", nbytes: int = 0, blobs: int = 0) -> None:
        """A warm taken ended: done, or failed (`error`), to be tried again after the backoff if attempts remain."""
        attempt, since = self._running.pop(job.key)
        now, t = self.clock(), self.totals
        if not error:
            t.done, t.bytes, t.blobs = t.done + 1, t.bytes + nbytes, t.blobs + blobs
            t.last_seconds = now - since
            t.seconds += t.last_seconds
        elif attempt < self.attempts:
            t.retries += 1
            self._waiting[job.key] = (now + self.backoff * 2 ** (attempt - 1), attempt + 1, since, job)
        else:
            t.failed += 1
        if error:
            t.last_error = error
        self._count()

    def _count(self) -> None:
        self.totals.queued, self.totals.running = len(self._waiting), len(self._running)

    def snapshot(self) -> dict:
        return asdict(self.totals)


class Warmer(BackgroundLoop):
    """Runs the queue's warms on the event loop with `warm(job) -> (bytes, blobs)`, one at a time."""

    def __init__(self, queue: WarmQueue, warm: Callable[[WarmJob], Awaitable[tuple[int, int]]]):
        self.queue, self.warm = queue, warm
        self._wake = asyncio.Event()

    def submit(self, job: WarmJob) -> str:
        outcome = self.queue.submit(job)
        self._wake.set()
        return outcome

    async def _run(self) -> None:
        while True:
            job = self.queue.take()
            if job is None:
                await self._sleep_until_due()
                continue
            try:
                nbytes, blobs = await self.warm(job)
            except Exception as e:  # any failure of one warm is retried; it never ends the loop
                log.warning("warm of %s as %s failed: %s", job.digest, ", ".join(job.names), e)
                self.queue.finished(job, error=str(e)[:300] or type(e).__name__)
            else:
                log.info("warmed %s as %s: %d blobs, %d bytes", job.digest, ", ".join(job.names), blobs, nbytes)
                self.queue.finished(job, nbytes=nbytes, blobs=blobs)

    async def _sleep_until_due(self) -> None:
        due = self.queue.next_due()
        self._wake.clear()
        timeout = None if due is None else max(0.0, due - self.queue.clock())
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
