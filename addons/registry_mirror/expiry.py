"""The mirror's own expiry of the stock registry's storage: images not pulled for `mirror.max_age` go, and
above `mirror.max_bytes` the least recently pulled go first.

The registry's own expiry deletes blob data that other repositories still link to (distribution#2367); it
runs with deletes disabled, so its expiry fails harmlessly (distribution#4249), and this one takes over:
reference-aware (eviction.py), with last pulls from the registry's notifications (pulls.py). A pass runs at
start, every `max_age / 4` (at least a minute apart) and, at most every RECHECK_SECONDS, when the bytes
stored since the last pass may have crossed `max_bytes`; above the cap it evicts down to LOW_WATER of it,
so that the next few pulls do not start another pass at once. Passes read and change the filesystem in a
thread, one at a time; a blob in flight is never deleted. The registry runs without a blob descriptor
cache, so a deleted blob is fetched again, never served from a stale descriptor as 200 with no bytes.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import eviction
from .pulls import LastPulls, pulled_manifests
from .storage_inventory import Image, inventory, linked_now

log = logging.getLogger(__name__)

MIN_INTERVAL = 60.0
RECHECK_SECONDS = 5.0  # the least time between passes the cap asks for
LOW_WATER = 0.9  # above the cap, a pass evicts down to this share of it
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
        self.stored_since_pass = 0  # bytes the mirror fetched and verified since the last pass
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._save_pending = False
        self._writes: set[asyncio.Future] = set()
        self._orphans_before: frozenset[str] = frozenset()  # unlinked blobs the last pass saw

    @property
    def interval(self) -> float:
        return max(MIN_INTERVAL, self.max_age / 4)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, *self._writes, return_exceptions=True)
        self.pulls.save()

    def notified(self, envelope: object) -> None:
        """A notification from the registry: the last pulls it names."""
        images = pulled_manifests(envelope)
        self.pulls.record(images)
        self.state.pulls_notified += len(images)
        if images and not self._save_pending:
            self._save_pending = True
            asyncio.get_running_loop().call_later(SAVE_DELAY, self._save)

    def stored(self, nbytes: int) -> None:
        """Bytes fetched from the upstream and verified: the registry stores them; a pass if the cap may be
        crossed."""
        self.stored_since_pass += nbytes
        used = self.state.used_bytes
        if self.max_bytes is not None and used is not None and used + self.stored_since_pass > self.max_bytes:
            self._wake.set()

    def _save(self) -> None:
        self._save_pending = False
        if (rows := self.pulls.rows_to_save()) is not None:  # written off the loop: it may be megabytes
            write = asyncio.ensure_future(asyncio.to_thread(self.pulls.write, rows))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    async def run_pass(self) -> eviction.Applied:
        async with self._lock:
            self.stored_since_pass = 0
            mine, now, in_flight = self.pulls.snapshot(), self.pulls.now(), self.in_flight()
            try:
                applied, unknown, remaining = await asyncio.to_thread(self._pass, mine, now, in_flight)
            except Exception as e:  # noqa: BLE001 - reported, and the next pass tries again
                self.state.last_error = f"{type(e).__name__}: {e}"
                log.exception("expiry pass failed; the next one tries again")
                raise
            self.pulls.first_seen(unknown, now)
            self.pulls.forget(image for image, _ in applied.images)
            self._save()
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
        """What a pass would remove now (nothing is changed, not even the orphans' marks)."""
        inv = inventory(self.root)
        protected = (self.in_flight() | self._new_orphans(inv, mark=False)) & inv.blob_sizes.keys()
        plan, _ = self._plan(inv, self.pulls.merged(self.pulls.snapshot()), self.pulls.now(), protected)
        return plan

    def _pass(self, mine: dict, now: float, in_flight: frozenset[str]):
        latest = self.pulls.merged(mine)
        inv = inventory(self.root)
        protected = (in_flight | self._new_orphans(inv)) & inv.blob_sizes.keys()
        self.state.kept_in_flight = len(protected)
        plan, unknown = self._plan(inv, latest, now, protected)
        applied = eviction.apply(self.root, plan)
        return applied, unknown, (inv.total_bytes - applied.bytes_freed, len(inv.images) - len(applied.images))

    def _new_orphans(self, inv, mark: bool = True) -> frozenset[str]:
        """Blobs no link names, first seen so by this pass: the registry commits a blob's data, then its link,
        so an orphan is collected only when the pass before saw it unlinked too (mark, then sweep)."""
        orphans = frozenset(inv.blob_sizes.keys() - linked_now(self.root))
        new = orphans - self._orphans_before
        if mark:
            self._orphans_before = orphans
        return new

    def _plan(self, inv, latest: dict, now: float, protected: frozenset[str]):
        unknown: list[tuple[str, str]] = []

        def last_pull(repository: str, digest: str) -> float:
            # an index is pulled by its platforms' digests too (containerd, Kubernetes): the latest of any
            image = Image(repository, digest)
            times = [latest[key] for d in inv.image_blobs(image) if (key := (repository, d)) in latest]
            if not times:  # never seen pulled: its age starts now
                unknown.append((repository, digest))
                return now
            return max(times)
        over = self.max_bytes is not None and inv.total_bytes > self.max_bytes
        target = int(self.max_bytes * LOW_WATER) if over else self.max_bytes
        return eviction.plan(inv, last_pull, now, self.max_age, target, protected), unknown

    async def _run(self) -> None:
        while True:
            freed = False
            try:
                freed = bool((await self.run_pass()).blobs)
            except Exception:  # noqa: BLE001 - logged in run_pass; the loop must outlive any one pass
                pass
            self._wake.clear()
            # still over the cap with blobs in flight, or a pass that freed some: look again soon
            over = self.max_bytes is not None and (self.state.used_bytes or 0) > self.max_bytes
            soon = over and (freed or self.state.kept_in_flight > 0)
            try:
                await asyncio.wait_for(self._wake.wait(), RECHECK_SECONDS if soon else self.interval)
            except TimeoutError:
                pass
            await asyncio.sleep(RECHECK_SECONDS)  # however often the cap wakes it
