"""Incomplete multipart uploads in the bucket (`mirror.s3`), aborted once a day old: every upload the registry does
not finish (a stop, a crash, wrong bytes) leaves one, which no listing shows, the registry's purger never removes,
and the store bills until aborted."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from registry_mirror.background import BackgroundLoop
from registry_mirror.storage.bucket import Bucket
from registry_mirror.storage.uploads import PURGE_AGE_SECONDS

log = logging.getLogger(__name__)

SWEEP_SECONDS = 3600.0  # between two sweeps; the first comes at start


class UploadSweep(BackgroundLoop):
    def __init__(self, bucket: Bucket, older_than: float = PURGE_AGE_SECONDS, every: float = SWEEP_SECONDS,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.bucket, self.older_than, self.every = bucket, older_than, every
        self._clock, self._sleep = clock, sleep
        self.aborted = 0  # since start

    async def sweep(self) -> int:
        """One sweep; how many uploads it aborted (none when the bucket cannot be listed: logged)."""
        try:
            aborted = await asyncio.to_thread(self.bucket.abort_stale_uploads, self.older_than, self._clock())
        except Exception as e:  # a store briefly away: the next sweep tries again
            log.warning("cannot list the incomplete uploads in bucket %s: %s", self.bucket.name, e)
            return 0
        if aborted:
            log.warning("aborted %d incomplete uploads in bucket %s, begun over %d h ago", aborted,
                        self.bucket.name, self.older_than // 3600)
        self.aborted += aborted
        return aborted

    async def _run(self) -> None:
        while True:
            await self.sweep()
            await self._sleep(self.every)
