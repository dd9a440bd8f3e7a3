"""The background scrub: every blob in the storage hashed once per `mirror.scrub_interval`, so that a bit that
rots in an image nobody pulled lately is found before a deploy needs it.

A pass lists the stored digests, then checks them one at a time (BlobVerifier.check_now: a corrupt file is moved
aside and fetched again on its next pull), paced to finish in about half the interval: its reads stay a trickle
beside the pulls. A file checked after a pull within `mirror.verify_interval` is skipped.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from registry_mirror.background import BackgroundLoop
from registry_mirror.storage.inventory import blob_sizes
from registry_mirror.storage.store import Store
from registry_mirror.storage.verify import Checked, checkable

log = logging.getLogger(__name__)

MIN_RATE = 1024 * 1024  # bytes per second a pass reads at least, however long the interval
FIRST_PASS_AFTER = 900.0  # seconds after start: a start (and the pulls a restart brings) goes first


@dataclass
class ScrubState:
    passes: int = 0
    checked: int = 0  # files hashed by the scrub
    last_pass_seconds: float | None = None


class Scrub(BackgroundLoop):
    def __init__(self, store: Store, interval: float, check: Callable[[str], Awaitable[Checked | None]],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.interval, self._check, self._sleep, self._clock = store, interval, check, sleep, clock
        self.state = ScrubState()

    async def run_pass(self) -> None:
        """One pass over the storage, paced to about half the interval by what it has read so far."""
        started = self._clock()
        sizes = {d: n for d, n in (await asyncio.to_thread(blob_sizes, self.store)).items() if checkable(d)}
        rate = max(MIN_RATE, sum(sizes.values()) / (self.interval / 2))
        read = 0
        for digest in sizes:
            checked = await self._check(digest)
            if checked is None:
                continue
            self.state.checked += 1
            read += checked.size
            if (ahead := read / rate - (self._clock() - started)) > 0:
                await self._sleep(ahead)
        self.state.passes += 1
        self.state.last_pass_seconds = self._clock() - started
        log.info("scrub: %d stored blobs, %d hashed in %.0f s", len(sizes), self.state.checked,
                 self.state.last_pass_seconds)

    async def _run(self) -> None:
        await self._sleep(FIRST_PASS_AFTER)
        while True:
            started = self._clock()
            try:
                await self.run_pass()
            except Exception:  # noqa: BLE001 - logged; the next pass tries again
                log.exception("scrub pass failed; the next one tries again")
            await self._sleep(max(60.0, self.interval - (self._clock() - started)))
