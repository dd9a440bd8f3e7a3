"""When each image was last pulled, from the stock registry's notifications: the clock of the mirror's expiry.

The registry sends a `pull` event for every manifest and blob it serves, from its storage or from the
remote (HEADs included), so pulls that never reach the addon count too. Kept per (repository, manifest
digest) as wall-clock times, so that ages survive restarts; written whole at most once a second, one file
per replica beside the storage (in a folder, or in its bucket: storage/stores.py), so that replicas sharing a
storage each write their own and every replica's expiry sees the latest pull of any of them. An image found in storage
with no pull known (written by an older mirror, or before this file existed) counts as pulled when first
seen: nothing is removed on the strength of a time nobody recorded.

A step of the wall clock while the mirror runs (a bad NTP step, a VM resumed) would pass for time gone by, so
`now` compares the wall clock with a monotonic one: a gap that moves by more than STEP_TOLERANCE is a step,
and every last pull recorded before it moves with it, so that ages stay true (time suspended counts as not
gone by). A step before the start cannot be seen here: the expiry judges those from the times themselves
(expiry/passes.py, `clock_jumped`), and `advance` and `clamp` are its corrections.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from registry_mirror.oci.manifest_body import MANIFEST_TYPES
from registry_mirror.redact import error_text
from registry_mirror.storage.store import Store
from registry_mirror.warming.pull import USER_AGENT as WARM_AGENT

log = logging.getLogger(__name__)

MAX_IMAGES = 200_000  # images remembered per replica; beyond, the least recently pulled are forgotten
MAX_FILE_BYTES = MAX_IMAGES * 512  # a replica's file: a row is a name, a digest and a time
STEP_TOLERANCE = 60.0  # seconds the wall clock may move against the monotonic one without being a step


def _pulls(envelope: object) -> list[tuple[dict, dict]]:
    """(event, target) of every pull event in a notification envelope; junk is skipped."""
    events = envelope.get("events") if isinstance(envelope, dict) else None
    found = []
    for event in events if isinstance(events, list) else ():
        target = event.get("target") if isinstance(event, dict) else None
        if isinstance(target, dict) and event.get("action") == "pull":
            found.append((event, target))
    return found


def served_pulls(envelope: object) -> list[tuple[str, str, str, int]]:
    """(who, class, method, bytes) of every pull the registry served: who is `warming` for the mirror's own
    warms (their User-Agent), else `clients`; a GET's bytes are the target's length, a HEAD sends none."""
    found = []
    for event, target in _pulls(envelope):
        request = given if isinstance(given := event.get("request"), dict) else {}
        agent, method = str(request.get("useragent", "")), str(request.get("method", "GET")).upper()
        length = target.get("length", target.get("size", 0))
        nbytes = length if isinstance(length, int) and length > 0 and method == "GET" else 0
        kind = "manifest" if target.get("mediaType") in MANIFEST_TYPES else "blob"
        found.append(("warming" if agent.startswith(WARM_AGENT) else "clients", kind, method, nbytes))
    return found


def pulled_manifests(envelope: object) -> list[tuple[str, str]]:
    """(repository, manifest digest) of every manifest pull in a notification envelope; junk is skipped."""
    found = []
    for _event, target in _pulls(envelope):
        repository, digest = target.get("repository"), target.get("digest")
        if target.get("mediaType") in MANIFEST_TYPES and isinstance(repository, str) and isinstance(digest, str):
            found.append((repository, digest))
    return found


class LastPulls:
    def __init__(self, store: Store, replica: str, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] | None = None):
        """`store`: where every replica's file is (storage/stores.py: beside the storage, a folder or a bucket);
        `monotonic`: what steps of `clock` are seen against; by default the system's monotonic clock when
        `clock` is the system's wall clock, and none (no steps seen) for any other."""
        self.store, self.path, self._clock = store, f"{replica}.json", clock
        self._monotonic = monotonic if monotonic is not None else time.monotonic if clock is time.time else None
        self._gap: float | None = None  # wall clock minus monotonic clock, when last read
        self.on_step: Callable[[float], None] | None = None  # told of each step seen, in seconds
        self.mine: dict[tuple[str, str], float] = self._read(self.path)
        self._dirty = False
        self._write_lock = threading.Lock()

    def now(self) -> float:
        """The wall clock; a step since the last reading moves every last pull recorded before it."""
        now = self._clock()
        if self._monotonic is not None:
            gap = now - self._monotonic()
            if self._gap is not None and abs(step := gap - self._gap) > STEP_TOLERANCE:
                self._shift(step)
            self._gap = gap
        return now

    def _shift(self, step: float) -> None:
        log.warning("the wall clock stepped %+.0f s (against the monotonic clock); the %d last pulls recorded "
                    "before move with it, so that their ages stay true", step, len(self.mine))
        for image in self.mine:
            self.mine[image] += step
        self._dirty |= bool(self.mine)
        if self.on_step:
            self.on_step(step)

    def record(self, images: Iterable[tuple[str, str]]) -> None:
        now = self.now()
        for image in images:
            self.mine.pop(image, None)  # re-inserted last: the dict stays in pull order, oldest first
            self.mine[image] = now
            self._dirty = True
        while len(self.mine) > MAX_IMAGES:  # a flood of (forged or real) events cannot grow it without bound
            self.mine.pop(next(iter(self.mine)))

    def forget(self, images: Iterable[tuple[str, str]]) -> None:
        for image in images:
            self._dirty |= self.mine.pop(image, None) is not None

    def first_seen(self, images: Iterable[tuple[str, str]], at: float) -> None:
        """Images found in storage with no pull known: their age starts at `at` (and survives restarts)."""
        for image in images:
            if image not in self.mine:
                self.mine[image] = at
                self._dirty = True

    def advance[Key: tuple[str, str]](self, times: Mapping[Key, float]) -> None:
        """Each image's last pull becomes at least the time given: the expiry's correction of a forward step."""
        for image, at in times.items():
            if at > self.mine.get(image, -math.inf):
                self.mine[image] = at
                self._dirty = True

    def clamp(self, limit: float, at: float) -> None:
        """Last pulls later than `limit` become `at`: the expiry's correction of a backward step."""
        for image, t in self.mine.items():
            if t > limit:
                self.mine[image] = at
                self._dirty = True

    def snapshot(self) -> dict[tuple[str, str], float]:
        return dict(self.mine)

    def merged(self, mine: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
        """`mine` (a snapshot) with every other replica's last pulls, latest wins: what a pass goes by. Reads
        files: call it off the event loop."""
        merged = dict(mine)
        for path in sorted(entry.path for entry in self.store.files("")):
            if path != self.path and path.endswith(".json") and "/" not in path:
                for image, at in self._read(path).items():
                    merged[image] = max(at, merged.get(image, 0.0))
        return merged

    def oldest(self) -> float | None:
        return min(self.mine.values(), default=None)

    def rows_to_save(self) -> list | None:
        """The rows to write (in pull order, so that a restart keeps the bound's order), or None if unchanged."""
        if not self._dirty:
            return None
        self._dirty = False
        return [[repo, digest, at] for (repo, digest), at in self.mine.items()]

    def write(self, rows: list) -> None:
        """Write `rows` whole (never half-written: storage/store.py); safe from a thread."""
        with self._write_lock:
            try:
                self.store.write(self.path, json.dumps({"pulls": rows}).encode())
            except Exception as e:  # noqa: BLE001 - a full disk or an unreachable bucket: the next save tries again
                self._dirty = True
                log.warning("cannot write the last pulls to %s in %s: %s", self.path, self.store.name, error_text(e))

    def save(self) -> None:
        if (rows := self.rows_to_save()) is not None:
            self.write(rows)

    def _read(self, path: str) -> dict[tuple[str, str], float]:
        try:
            data = self.store.read(path, MAX_FILE_BYTES + 1)
            if data is None:
                return {}
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"over {MAX_FILE_BYTES} bytes")
            rows = json.loads(data).get("pulls", [])
            return {(str(r), str(d)): float(t) for r, d, t in rows}
        except Exception as e:  # noqa: BLE001 - unreadable (or unreachable): nothing is removed on its strength
            log.warning("ignoring the last pulls in %s in %s (%s): its images count as pulled when next seen", path,
                        self.store.name, error_text(e))
            return {}
