"""How many blob transfers one upstream serves at once, and the line the others wait in.

A big deploy asks for hundreds of distinct layers at once. Past `limit` a transfer waits for a slot, up to
`wait` seconds; the wait is the mirror's own, so it never counts as an upstream failure (it never marks the
upstream down), and one that runs out fails its transfer before any byte is answered.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SlotTimeout(Exception):
    """No slot came free in time; the message says which setting bounds it."""


class TransferSlots:
    def __init__(self, limit: int, wait: float):
        self.limit, self.wait = limit, wait
        self._free = asyncio.Semaphore(limit)
        self.active = 0  # transfers holding a slot
        self.waiting = 0  # transfers in line for one
        self.timed_out = 0  # transfers that gave up waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait):
                await self._free.acquire()
        except TimeoutError:
            self.timed_out += 1
            raise SlotTimeout(f"{self.limit} blob transfers to this upstream were in flight for {self.wait:g} s "
                              f"(upstream.max_blob_transfers, upstream.blob_queue_timeout); try again, or raise "
                              f"them") from None
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._free.release()
