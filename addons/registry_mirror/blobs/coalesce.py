"""Blob coalescing: requests for the same digest that overlap in time share one fetch.

The stock registry fetches every blob twice on a cold pull (one stream for the client, one in the
background to fill its store) and once more per concurrent pull (distribution#1334, #3969). Here the first
request for a digest starts a transfer whose fill is teed into a spool file (blobs/spool_writer.py); every request,
the first included, is served from the growing spool, so followers get bytes as they arrive. Finished spools
are kept briefly for stragglers (until the registry has committed its copy), within a bound in bytes, then
deleted. A transfer started ahead of any request (blobs/prefetch.py) is held until a request joins it, or for
`hold_seconds`, within the same bound.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from registry_mirror.blobs.spool_folder import SpoolFolder
from registry_mirror.blobs.spool_writer import DigestMismatch, write_verified
from registry_mirror.blobs.transfers import Transfer, TransferFailed

if TYPE_CHECKING:
    from registry_mirror.blobs.route import BlobRoute

log = logging.getLogger(__name__)

Fill = Callable[[Transfer], AsyncGenerator[bytes, None]]  # a transfer's bytes, from wherever; it sets the head


class BlobCoalescer:
    """Shares in-flight blob fetches by digest; `fill(transfer)` yields one transfer's bytes."""

    def __init__(self, fill: Fill, spool_dir: str | None = None, max_spool_bytes: int = 8 * 1024 ** 3,
                 keep_seconds: float = 10.0, timer: Callable[[], float] = time.monotonic,
                 on_verified: Callable[[Transfer], None] = lambda transfer: None, hold_seconds: float = 600.0,
                 on_mismatch: Callable[[Transfer, str], Awaitable[None]] | None = None):
        """`on_verified`: told of every transfer whose bytes matched their digest (its size is now a fact);
        `on_mismatch`: of every transfer whose bytes, in full, did not (with their digest), once it failed."""
        self._fill = fill
        self._on_verified, self._on_mismatch = on_verified, on_mismatch
        self._timer = timer
        # in a folder of its own under `spool_dir` (else $TMPDIR), locked while it runs; a killed run's folder
        # (its spools never verified, never served) is removed by the next start
        self._spool = SpoolFolder(spool_dir)
        self._dir = self._spool.path  # where the spool files go
        self.max_spool_bytes = max_spool_bytes
        self.keep_seconds = keep_seconds
        self.hold_seconds = hold_seconds
        self.transfers: OrderedDict[str, Transfer] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self.closed = False

    def join(self, digest: str, name: str, route: BlobRoute | None = None,
             take_hold: bool = True) -> tuple[Transfer, bool]:
        """The transfer for `digest` and whether this request follows one already under way. The request
        counts as a reader, so that the spool stays, until it calls `leave`; the first one (unless `take_hold`
        is false: another replica reading) takes over a prefetch's hold.

        Keyed by digest alone: the bytes are checked against it, and a base layer shared by many
        repositories then crosses the WAN once."""
        if self.closed:
            raise TransferFailed("the mirror is shutting down")
        self._expire()
        current = self.transfers.get(digest)
        if current is not None and current.error is None:
            prefetched = current.held and take_hold
            if prefetched:  # the first request takes over from the prefetch's hold...
                current.held = False
                current.readers -= 1
                if current.finished:  # ...and the registry's second fetch of it finds it for keep_seconds
                    current.ended_at = self._timer()
                    asyncio.get_running_loop().call_later(self.keep_seconds, self._expire)
            current.served += 1
            current.readers += 1
            return current, not prefetched
        return self._start(digest, name, route), False

    def hold(self, digest: str, name: str, route: BlobRoute | None = None) -> Transfer:
        """Start the transfer for `digest` before any request asks for it, or return the one under way; a
        started one counts as read until a request joins it or `hold_seconds` after it ended."""
        if self.closed:
            raise TransferFailed("the mirror is shutting down")
        current = self.transfers.get(digest)
        if current is not None and current.error is None:
            return current
        transfer = self._start(digest, name, route)
        transfer.served, transfer.held = 0, True
        return transfer

    def spooled_bytes(self) -> int:
        return sum(t.written for t in self.transfers.values())

    def in_use(self) -> frozenset[str]:
        """Digests whose blobs a pass must not delete: transfers under way or read. A finished one kept only for
        stragglers is stored already; protecting it held storage over the cap while a deploy ran."""
        return frozenset(digest for digest, t in self.transfers.items() if not t.finished or t.readers)

    def incoming_bytes(self) -> int:
        """Bytes the transfers in flight have still to receive (of those whose size is known)."""
        return sum(t.size - t.written for t in self.transfers.values() if t.size is not None and not t.finished)

    def _start(self, digest: str, name: str, route: BlobRoute | None) -> Transfer:
        fd, path = tempfile.mkstemp(prefix="blob-", dir=self._dir)
        os.close(fd)
        transfer = Transfer(digest, name, Path(path), route)
        transfer.served, transfer.readers = 1, 1
        self.transfers[digest] = transfer
        task = asyncio.create_task(self._run(transfer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return transfer

    def leave(self, transfer: Transfer) -> None:
        transfer.readers -= 1
        self._expire()

    async def _run(self, transfer: Transfer) -> None:
        try:
            await write_verified(transfer, self._fill(transfer))
            self._on_verified(transfer)
        except asyncio.CancelledError:  # shutting down: the readers end now, not at their timeouts
            transfer.fail("the mirror is shutting down")
            raise
        except Exception as e:  # every failure must reach the waiting readers
            transfer.fail(str(e) or type(e).__name__)
            log.warning("blob %s transfer failed after %d bytes: %s", transfer.digest, transfer.written,
                        transfer.error)
            if isinstance(e, DigestMismatch) and self._on_mismatch is not None:
                await self._on_mismatch(transfer, e.actual)
        finally:
            transfer.ended_at = self._timer()
            transfer.notify()
            self._expire()
            # on time even when no request comes: a spool deleted within the kernel's dirty expiry (30 s by
            # default) is never written to disk at all
            loop = asyncio.get_running_loop()
            loop.call_later(self.keep_seconds, self._expire)
            if transfer.held:
                loop.call_later(self.hold_seconds, self._expire)

    def _expire(self) -> None:
        """Drop finished transfers nobody reads `keep_seconds` after they ended, or when the spool is over its
        bound."""
        now = self._timer()
        total = self.spooled_bytes()
        for digest, t in list(self.transfers.items()):
            if t.held and t.finished and (t.error or total > self.max_spool_bytes
                                          or now - t.ended_at >= self.hold_seconds):
                t.held = False  # prefetched and never asked for, or crowding out what clients read
                t.readers -= 1
            if not t.finished or t.readers:
                continue
            if t.error or total > self.max_spool_bytes or now - t.ended_at >= self.keep_seconds:
                total -= t.written
                del self.transfers[digest]
                t.path.unlink(missing_ok=True)

    async def close(self) -> None:
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.transfers.clear()
        self._spool.close()  # every spool with the folder
