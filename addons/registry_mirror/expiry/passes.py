"""The mirror's own expiry of the stock registry's storage: images not pulled for `mirror.max_age` go, and
above `mirror.max_bytes` the least recently pulled go first.

The registry's own expiry deletes blob data that other repositories still link to (distribution#2367); it
runs with deletes disabled, so its expiry fails harmlessly (distribution#4249), and this one takes over:
reference-aware (storage/eviction.py), with last pulls from the registry's notifications (expiry/last_pulls.py). A
pass runs at start, every `max_age / 4` (at least a minute apart) and as soon as the bytes stored since the last
pass may have crossed `max_bytes` (or still do after it), starting at most every RECHECK_SECONDS; above the cap it
evicts down to LOW_WATER of it, so that the next few pulls do not start another pass at once. Passes read and change
the filesystem in a thread, one at a time; a blob in flight is never deleted. The registry runs without a blob
descriptor cache, so a deleted blob is fetched again, never served from a stale descriptor as 200 with no bytes.

A clock step never empties the cache. Ages are differences of wall-clock times, so a step would pass for
time gone by. One while the mirror runs is taken out of the last pulls as it happens (expiry/last_pulls.py); one
before it started shows only in the times themselves (`clock_jumped`): when no image in storage was pulled within
`max_age` (the clock stepped forward, or nothing at all was pulled for that long) or a last pull lies more than
FUTURE_TOLERANCE ahead of now (the clock stepped back, or another replica's runs ahead), a pass removes nothing
by age, says why (a warning, `age_evictions_skipped`), and restarts the ages: the last pulls move forward until
the newest is now (their order and distances kept), or those ahead of now come back to now. Size evictions still
run. Images never seen pulled count as pulled now and are not evidence either way. So an idle mirror removes
nothing by age; a step shorter than `max_age` before the start, or between replicas' clocks, is not seen, and
ages images by at most the step.

Each pass first removes leftovers: partial uploads no transfer writes any more (storage/uploads.py), blob data
files a full disk left empty (storage/torn_files.py), data a stopped pass set aside (storage/eviction.py) and
folders emptied a minute ago or more (storage/empty_folders.py); partial uploads in progress count against
`max_bytes`.

Storage figures are true from the start: each pass publishes what it reads (`used_bytes`, `images`) before it
plans or deletes, so the pass at start measures the storage even if it then fails, and again after it deletes.
Between passes `used_bytes` is that reading (blob data), less what the pass freed, plus the verified bytes of
blob transfers since the pass began (`stored_since_pass`): an estimate, on the high side for blobs (a blob two
replicas fetched counts twice, one stored while the pass read may count twice) though manifests the registry
stored since are missing; it is exact when nothing was stored since. `images` is as of the reading.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from registry_mirror.expiry.forget import Target, images_named
from registry_mirror.expiry.last_pulls import LastPulls, pulled_manifests
from registry_mirror.storage import eviction
from registry_mirror.storage.inventory import Image, Inventory, inventory
from registry_mirror.storage.store import Store
from registry_mirror.storage.stores import Tidied
from registry_mirror.storage.tags import drop_tag

log = logging.getLogger(__name__)

MIN_INTERVAL = 60.0
RECHECK_SECONDS = 5.0  # the least time between passes the cap asks for
LOW_WATER = 0.9  # above the cap, a pass evicts down to this share of it
SAVE_DELAY = 1.0  # last pulls are written at most once a second
FUTURE_TOLERANCE = 300.0  # a last pull this far ahead of now is clock skew between replicas, not a step


def clock_jumped(last_pulls: Iterable[float], now: float, max_age: float,
                 tolerance: float = FUTURE_TOLERANCE) -> str | None:
    """Why ages cannot be trusted at `now`, or None: the last pulls of the images in storage seen pulled all lie
    more than `max_age` before it (every one would go by age), or one lies more than `tolerance` after it."""
    newest = max(last_pulls, default=None)
    if newest is None:
        return None
    if newest - now > tolerance:
        return (f"the newest last pull, {_when(newest)}, lies {_span(newest - now)} after now, {_when(now)}: "
                f"the clock stepped back, or another replica's clock runs ahead")
    if now - newest > max_age:
        return (f"the newest last pull, {_when(newest)}, lies {_span(now - newest)} before now, {_when(now)}, "
                f"more than max_age ({_span(max_age)}): the clock stepped forward, or nothing was pulled for that "
                f"long")
    return None


def restarted(last_pulls: Mapping[Image, float], now: float) -> dict[Image, float]:
    """After a forward step: the last pulls moved forward together until the newest is `now`."""
    shift = now - max(last_pulls.values(), default=now)
    return {image: at + shift for image, at in last_pulls.items()}


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f} hours" if seconds >= 3600 else f"{seconds:.0f} s"


@dataclass(frozen=True)
class Ages:
    """How old the images of one reading are."""
    last_pulls: Mapping[Image, float]  # images seen pulled: the latest pull of the image or any of its manifests
    unknown: tuple[Image, ...]  # never seen pulled: their age starts now
    clock_jumped: str | None  # why nothing goes by age, or None


@dataclass
class ExpiryState:
    """What the stats page shows."""
    used_bytes: int | None = None  # last reading, less what its pass freed, plus stored_since_pass; None before
    images: int = 0  # at the last reading
    measured_at: float | None = None  # when a pass last read the storage
    stored_since_pass: int = 0  # verified bytes stored since the last reading's pass began (in used_bytes)
    images_evicted: int = 0
    bytes_evicted: int = 0
    passes: int = 0
    pulls_notified: int = 0  # manifest pulls the registry reported
    kept_in_flight: int = 0  # blobs the last pass left alone: in flight, being read, or answered moments ago
    age_evictions_skipped: str = ""  # why the last pass removed nothing by age (clock_jumped), else ""
    passes_age_skipped: int = 0
    clock_steps: int = 0  # steps of the wall clock seen while running, taken out of the last pulls
    uploads_removed: int = 0  # partial uploads no transfer wrote any more (storage/uploads.py)
    upload_bytes_removed: int = 0
    empty_files_removed: int = 0  # blob data files a full disk left empty (storage/torn_files.py)
    images_forgotten: int = 0  # removed by `forget` or a deletion upstream (expiry/forget.py)
    last_pass_requests: int = 0  # operations the last pass made on the storage (on a bucket: requests)
    last_pass_at: float | None = None
    last_error: str = ""


class Expiry:
    def __init__(self, store: Store, max_age: float, max_bytes: int | None, pulls: LastPulls,
                 in_flight: Callable[[], frozenset[str]] = frozenset, grace: float = eviction.GRACE_SECONDS,
                 tidy: Callable[[float], Tidied] = lambda now: Tidied()):
        """`tidy`: removes the leftovers of interrupted writes (storage/stores.py), before each reading."""
        self.store, self.grace, self.tidy = store, grace, tidy
        self.max_age, self.max_bytes, self.pulls, self.in_flight = max_age, max_bytes, pulls, in_flight
        self.state = ExpiryState()
        pulls.on_step = self._clock_stepped
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._save_pending = False
        self._writes: set[asyncio.Future] = set()
        self._reading: int | None = None  # bytes the last pass read, less what it freed

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
        self.state.stored_since_pass += nbytes
        if self._reading is not None:
            self.state.used_bytes = self._reading + self.state.stored_since_pass
            if self.max_bytes is not None and self.state.used_bytes > self.max_bytes:
                self._wake.set()

    def _measured(self, reading: int, images: int, at: float, stored_before: int = 0) -> None:
        """A pass read the storage (`stored_before`: what stored_since_pass held when it began, now in it)."""
        self.state.stored_since_pass -= stored_before
        self._reading = reading
        self.state.used_bytes, self.state.images = reading + self.state.stored_since_pass, images
        self.state.measured_at = at

    def _clock_stepped(self, seconds: float) -> None:
        self.state.clock_steps += 1

    def _save(self) -> None:
        self._save_pending = False
        if (rows := self.pulls.rows_to_save()) is not None:  # written off the loop: it may be megabytes
            write = asyncio.ensure_future(asyncio.to_thread(self.pulls.write, rows))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    async def run_pass(self) -> eviction.Applied:
        async with self._lock:
            stored_before = self.state.stored_since_pass
            now = self.pulls.now()  # first: a step it sees moves the last pulls
            mine, in_flight = self.pulls.snapshot(), self.in_flight()
            requests_before = self.store.requests.total()
            try:
                latest, inv = await asyncio.to_thread(self._read, mine)
                self._measured(inv.total_bytes, len(inv.images), now, stored_before)
                applied, ages = await asyncio.to_thread(self._pass, inv, latest, now, in_flight)
            except Exception as e:  # noqa: BLE001 - reported, and the next pass tries again
                self.state.last_error = f"{type(e).__name__}: {e}"
                log.exception("expiry pass failed; the next one tries again")
                raise
            self.state.last_pass_requests = self.store.requests.total() - requests_before
            self._restart_ages(ages, now)
            self.pulls.first_seen(ages.unknown, now)
            self.pulls.forget(image for image, _ in applied.images)
            self._save()
            self.state.passes += 1
            self.state.last_pass_at = now
            self.state.images_evicted += len(applied.images)
            self.state.bytes_evicted += applied.bytes_freed
            self._measured(inv.total_bytes - applied.bytes_freed, len(inv.images) - len(applied.images), now)
            self.state.last_error = ""
            if applied.images or applied.blobs:
                log.info("expiry: removed %d images and %d blobs, %d bytes freed; %d bytes in storage",
                         len(applied.images), len(applied.blobs), applied.bytes_freed, self.state.used_bytes)
            return applied

    def _restart_ages(self, ages: Ages, now: float) -> None:
        """Whether the pass went by age; if not, says why and corrects the last pulls, so that the next one can."""
        skipped_before, self.state.age_evictions_skipped = self.state.age_evictions_skipped, ages.clock_jumped or ""
        if ages.clock_jumped is None:
            if skipped_before:
                log.info("expiry: the last pulls agree with the clock again; images go by age again")
            return
        self.state.passes_age_skipped += 1
        (log.warning if not skipped_before else log.info)(
            "expiry: no image removed by age, size evictions still run: %s; the ages restart now", ages.clock_jumped)
        if max(ages.last_pulls.values()) > now:
            self.pulls.clamp(now + FUTURE_TOLERANCE, now)
        else:
            self.pulls.advance(restarted(ages.last_pulls, now))  # under each image's own digest

    async def forget(self, target: Target, dry_run: bool = False) -> eviction.Plan:
        """Removes the images `target` names from the storage (between passes, never a blob in flight); what
        went, or with `dry_run` what would."""
        async with self._lock:
            plan = await asyncio.to_thread(self._forget_plan, target, self.in_flight())
            if dry_run:
                return plan
            applied = await asyncio.to_thread(eviction.apply, self.store, plan, self.grace)
            self.pulls.forget(image for image, _ in applied.images)
            self._save()
            self.state.images_forgotten += len(applied.images)
            if self._reading is not None:
                self._reading -= applied.bytes_freed
                self.state.used_bytes = self._reading + self.state.stored_since_pass
            for removal in plan.removals:
                log.warning("forgot %s@%s: %d links removed", removal.image.repository, removal.image.digest,
                            len(removal.links))
            return plan

    async def drop_tag(self, repository: str, tag: str, digest: str | None = None) -> bool:
        """Removes a tag's links (the image stays, by digest): the upstream deleted the tag. With `digest`, only
        while the tag still names it (a tag deleted and pushed again keeps its new image). Whether it went."""
        return await asyncio.to_thread(drop_tag, self.store, repository, tag, digest)

    def _forget_plan(self, target: Target, in_flight: frozenset[str]) -> eviction.Plan:
        inv = inventory(self.store)  # ages play no part: nothing goes by age or size, only what is forgotten
        forgotten = images_named(inv, target)
        plan = eviction.plan(inv, lambda repository, digest: 0.0, 0.0, math.inf, None,
                             in_flight & inv.blob_sizes.keys(), forgotten)
        # only what the forgotten images held: a blob just committed and not linked yet is no orphan to
        # forget (a pass judges those), nor are other repositories' stray links
        theirs = set().union(*(inv.image_blobs(image) for image in forgotten))
        return dataclasses.replace(
            plan, blobs={d: size for d, size in plan.blobs.items() if d in theirs},
            stray_links={name: links for name, links in plan.stray_links.items() if name == target.repository})

    def preview(self) -> eviction.Plan:
        """What a pass would remove now, clock steps judged alike (nothing is changed, not even the ages a step
        would restart)."""
        inv = inventory(self.store)
        protected = self.in_flight() & inv.blob_sizes.keys()
        now = self.pulls.now()
        return self._plan(inv, self._ages(inv, self.pulls.merged(self.pulls.snapshot()), now), now, protected)

    def _read(self, mine: dict) -> tuple[dict, Inventory]:
        self._collect_leftovers(time.time())  # files' times are the wall clock's, whatever the pulls' clock is
        return self.pulls.merged(mine), inventory(self.store)

    def _collect_leftovers(self, now: float) -> None:
        """Uploads no transfer writes any more, data files a full disk left empty, data a stopped pass set aside:
        before the reading, so that what they held is not counted against max_bytes."""
        tidied = self.tidy(now)
        self.state.uploads_removed += tidied.uploads
        self.state.upload_bytes_removed += tidied.upload_bytes
        self.state.empty_files_removed += tidied.empty_files
        eviction.settle(self.store, eviction.leftovers(self.store, now))

    def _pass(self, inv: Inventory, latest: dict, now: float, in_flight: frozenset[str]):
        protected = in_flight & inv.blob_sizes.keys()
        self.state.kept_in_flight = len(protected)
        ages = self._ages(inv, latest, now)
        return eviction.apply(self.store, self._plan(inv, ages, now, protected), self.grace), ages

    def _ages(self, inv: Inventory, latest: dict, now: float) -> Ages:
        last_pulls, unknown = {}, []
        for image in inv.images:
            # an index is pulled by its platforms' digests too (containerd, Kubernetes): the latest of any
            times = [latest[key] for d in inv.image_blobs(image) if (key := (image.repository, d)) in latest]
            if times:
                last_pulls[image] = max(times)
            else:
                unknown.append(image)
        return Ages(last_pulls, tuple(unknown), clock_jumped(last_pulls.values(), now, self.max_age))

    def _plan(self, inv: Inventory, ages: Ages, now: float, protected: frozenset[str]) -> eviction.Plan:
        max_age = math.inf if ages.clock_jumped else self.max_age
        target = self.max_bytes
        if target is not None and inv.total_bytes > target:  # over the cap: down to its low water mark
            target = int(target * LOW_WATER)
        return eviction.plan(inv, lambda repository, digest: ages.last_pulls.get(Image(repository, digest), now),
                             now, max_age, target, protected)

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            freed = False
            try:
                freed = bool((await self.run_pass()).blobs)
            except Exception:  # noqa: BLE001 - logged in run_pass; the loop must outlive any one pass
                pass
            self._wake.clear()
            # still over the cap with blobs in flight, bytes stored while it ran, or a pass that freed some: the
            # next pass at once; otherwise when stored bytes cross the cap, or after the interval
            over = self.max_bytes is not None and (self.state.used_bytes or 0) > self.max_bytes
            if not (over and (freed or self.state.kept_in_flight > 0 or self.state.stored_since_pass > 0)):
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                except TimeoutError:
                    pass
            await asyncio.sleep(max(0.0, began + RECHECK_SECONDS - time.monotonic()))  # however often it wakes
