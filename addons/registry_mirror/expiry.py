"""The mirror's own expiry of the stock registry's storage: images not pulled for `mirror.max_age` go, and
above `mirror.max_bytes` the least recently pulled go first.

The registry's own expiry deletes blob data that other repositories still link to (distribution#2367); it
runs with deletes disabled, so its expiry fails harmlessly (distribution#4249), and this one takes over:
reference-aware (eviction.py), with last pulls from the registry's notifications (pulls.py). A pass runs
at start, every `max_age / 4` (at least a minute apart) and when the bytes pulled since the last pass may
have crossed `max_bytes`. Passes read and change the filesystem in a thread, one at a time; a blob in
flight is never deleted. The registry runs without a blob descriptor cache, so a deleted blob is fetched
again, never served from a stale descriptor as 200 with no bytes.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import eviction
from .pulls import LastPulls, pulled_blob_bytes, pulled_manifests
from .storage_inventory import inventory, linked_now

log = logging.getLogger(__name__)

MIN_INTERVAL = 60.0
RECHECK_SECONDS = 5.0  # still over the cap after a pass, and it can still change: look again this soon
SAVE_DELAY = 1.0  # last pulls are written at most once a second


@dataclass
class ExpiryState:
    """What the stats page shows."""
    used_bytes: int | None = None  # at the end of the last pass
    images: int = 0
    images_evicted: int = 0
    bytes_evicted: int = 0
    passes: int = 0
    pulls_notified: int = 0  # manifest pulls the registry reported
    kept_in_flight: int = 0  # blobs the last pass left alone: in flight, or unlinked and first seen so
    last_pass_at: float | None = None
    last_error: str = ""


class Expiry:
    def __init__(self, storage: str, max_age: float, max_bytes: int | None, pulls: LastPulls,
                 in_flight: Callable[[], frozenset[str]] = frozenset):
        self.root = Path(storage)
        self.max_age, self.max_bytes, self.pulls, self.in_flight = max_age, max_bytes, pulls, in_flight
        self.state = ExpiryState()
        self.pulled_since_pass = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._save_pending = False
        self._orphans_before: frozenset[str] = frozenset()  # unlinked blobs the last pass saw

    def _save(self) -> None:
        self._save_pending = False
        self._orphans_before: frozenset[str] = frozenset()  # unlinked blobs the last pass saw
        self.pulls.save()

    @property
    def interval(self) -> float:
        return max(MIN_INTERVAL, self.max_age / 4)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.pulls.save()

    def notified(self, envelope: object) -> None:
        """A notification from the registry: last pulls, and a pass soon if the cap may be crossed."""
        images = pulled_manifests(envelope)
        self.pulls.record(images)
        self.state.pulls_notified += len(images)
        if images and not self._save_pending:
            self._save_pending = True
            asyncio.get_running_loop().call_later(SAVE_DELAY, self._save)
        self.pulled_since_pass += pulled_blob_bytes(envelope)
        used = self.state.used_bytes
        if self.max_bytes is not None and used is not None and used + self.pulled_since_pass > self.max_bytes:
            self._wake.set()

    async def run_pass(self) -> eviction.Applied:
        async with self._lock:
            self.pulled_since_pass = 0
            latest, now, in_flight = self.pulls.latest(), self.pulls.now(), self.in_flight()
            try:
                applied, unknown, remaining = await asyncio.to_thread(self._pass, latest, now, in_flight)
            except OSError as e:
                self.state.last_error = f"{type(e).__name__}: {e}"
                log.warning("expiry pass failed (%s); the next one tries again", self.state.last_error)
                raise
            self.pulls.first_seen(unknown, now)
            self.pulls.forget(image for image, _ in applied.images)
            self.pulls.save()
            self.state.passes += 1
            self.state.last_pass_at = now
            self.state.images_evicted += len(applied.images)
            self.state.bytes_evicted += applied.bytes_freed
            self.state.used_bytes, self.state.images = remaining
            self.state.last_error = ""
            if applied.images or applied.blobs:
                log.info("expiry: removed %d images and %d blobs, %d bytes freed; %d bytes in storage",
                         len(applied.images), len(applied.blobs), applied.bytes_freed, self.state.used_bytes)
            return applied

    def preview(self) -> eviction.Plan:
        """What a pass would remove now (nothing is changed)."""
        plan, _ = self._plan(inventory(self.root), self.pulls.latest(), self.pulls.now(), self.in_flight())
        return plan

    def _pass(self, latest: dict, now: float, in_flight: frozenset[str]):
        inv = inventory(self.root)
        protected = (in_flight | self._new_orphans(inv)) & inv.blob_sizes.keys()
        self.state.kept_in_flight = len(protected)
        plan, unknown = self._plan(inv, latest, now, protected)
        applied = eviction.apply(self.root, plan)
        return applied, unknown, (inv.total_bytes - applied.bytes_freed, len(inv.images) - len(applied.images))

    def _new_orphans(self, inv) -> frozenset[str]:
        """Blobs no link names, first seen so by this pass: the registry commits a blob's data, then its link,
        so an orphan is collected only when the pass before saw it unlinked too (mark, then sweep)."""
        orphans = frozenset(inv.blob_sizes.keys() - linked_now(self.root))
        new, self._orphans_before = orphans - self._orphans_before, orphans
        return new

    def _plan(self, inv, latest: dict, now: float, in_flight: frozenset[str]):
        unknown: list[tuple[str, str]] = []

        def last_pull(repository: str, digest: str) -> float:
            at = latest.get((repository, digest))
            if at is None:  # never seen pulled: its age starts now
                unknown.append((repository, digest))
                return now
            return at
        return eviction.plan(inv, last_pull, now, self.max_age, self.max_bytes, in_flight), unknown

    async def _run(self) -> None:
        while True:
            freed = False
            try:
                freed = bool((await self.run_pass()).blobs)
            except OSError:
                pass
            self._wake.clear()
            # still over the cap with blobs in flight, or a pass that freed some: look again soon
            over = self.max_bytes is not None and (self.state.used_bytes or 0) > self.max_bytes
            soon = over and (freed or self.state.kept_in_flight > 0)
            try:
                await asyncio.wait_for(self._wake.wait(), RECHECK_SECONDS if soon else self.interval)
            except TimeoutError:
                pass
