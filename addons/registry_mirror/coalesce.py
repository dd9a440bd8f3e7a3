"""Blob coalescing: requests for the same digest that overlap in time share one upstream fetch.

The stock registry fetches every blob twice on a cold pull (one stream for the client, one in the
background to fill its store) and once more per concurrent pull (distribution#1334, #3969). Here the first
request for a digest starts a transfer that tees the upstream's bytes into a spool file; every request,
the first included, is served from the growing spool, so followers get bytes as they arrive. The last byte
is handed on only after the digest has been checked: a corrupt blob ends every stream short, and the stock
registry, which verifies what it stores, stores nothing. Finished spools are kept briefly for stragglers
(until the registry has committed its copy), within a bound in bytes, then deleted.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .requests import DIGEST_HEX_LENGTHS

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
NOTIFY_BYTES = 1024 * 1024  # readers wake per MiB, not per socket read: fewer wake-ups and sendfile calls...
NOTIFY_SECONDS = 0.5  # ...and no byte waits longer than this for them, however slow or stalled the upstream


class TransferFailed(Exception):
    """The shared upstream fetch failed; its message carries no secret."""


@dataclass
class UpstreamHead:
    status: int
    headers: dict[str, str]
    body: bytes = b""  # for error answers only


@dataclass
class Transfer:
    digest: str
    name: str  # the repository of the request that started it: its credentials fetch the blob
    path: Path
    source: object = None  # whatever the fetch needs besides the name (the blob server: the route)
    origin: str = ""  # where the bytes come from when not from the upstream (another replica)
    ended_at: float = 0.0  # the coalescer's timer when the transfer was verified or failed
    head: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    size: int | None = None
    written: int = 0
    verified: bool = False
    error: str | None = None
    readers: int = 0  # requests joined and not yet left: while any, the spool stays
    served: int = 0  # requests served from this transfer, the first included
    _progress: asyncio.Event = field(default_factory=asyncio.Event)
    _notified: int = 0  # `written` when readers were last woken
    _pending_wake: asyncio.TimerHandle | None = None

    @property
    def finished(self) -> bool:
        return self.verified or self.error is not None

    def wrote(self, count: int) -> None:
        """`count` more bytes are in the spool: readers wake per NOTIFY_BYTES, or NOTIFY_SECONDS after the first
        byte they have not seen."""
        self.written += count
        if self.written - self._notified >= NOTIFY_BYTES:
            self.notify()
        elif self._pending_wake is None:
            self._pending_wake = asyncio.get_running_loop().call_later(NOTIFY_SECONDS, self.notify)

    def notify(self) -> None:
        if self._pending_wake is not None:
            self._pending_wake.cancel()
            self._pending_wake = None
        self._notified = self.written
        self._progress.set()
        self._progress = asyncio.Event()

    async def wait_for_progress(self, seen: int) -> None:
        if self.written == seen and not self.finished:
            await self._progress.wait()

    async def verdict(self) -> None:
        """Return once the bytes were checked against the digest; TransferFailed if they failed (or never came)."""
        while not self.finished:
            await self._progress.wait()
        if self.error is not None:
            raise TransferFailed(self.error)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range within `size`, or None to send the whole blob."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes="):].strip().partition("-")
    try:
        if first == "":  # suffix range: the last N bytes
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start > end or start >= size:
        return None
    return start, min(end, size - 1)


def _hasher(digest: str):
    """A hash object for `digest`'s algorithm; TransferFailed for one the mirror does not check blobs with."""
    algorithm = digest.partition(":")[0]
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise TransferFailed(f"cannot check {digest[:100]!r}: its algorithm {algorithm[:30]!r} is not one of "
                             f"{', '.join(DIGEST_HEX_LENGTHS)}")
    return hashlib.new(algorithm)


def _write_all(spool, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[spool.write(view):]


class BlobCoalescer:
    """Shares in-flight upstream blob fetches by digest; `fetch(digest, transfer)` fills one transfer."""

    def __init__(self, fetch, spool_dir: str | None = None, max_spool_bytes: int = 8 * 1024 ** 3,
                 keep_seconds: float = 10.0, timer: Callable[[], float] = time.monotonic,
                 on_verified: Callable[[Transfer], None] = lambda transfer: None):
        """`on_verified`: told of every transfer whose bytes matched their digest (its size is now a fact)."""
        self._fetch = fetch
        self._on_verified = on_verified
        self._timer = timer
        self._dir = Path(spool_dir or tempfile.mkdtemp(prefix="artifactory-mirror-spool-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        for leftover in self._dir.glob("blob-*"):  # a crashed run's spools: never verified, never served
            leftover.unlink(missing_ok=True)
        self.max_spool_bytes = max_spool_bytes
        self.keep_seconds = keep_seconds
        self.transfers: OrderedDict[str, Transfer] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self.closed = False

    def join(self, digest: str, name: str, source: object = None) -> tuple[Transfer, bool]:
        """The transfer for `digest` and whether this request follows one already under way. The request
        counts as a reader, so that the spool stays, until it calls `leave`.

        Keyed by digest alone: the bytes are checked against it, and a base layer shared by many
        repositories then crosses the WAN once."""
        if self.closed:
            raise TransferFailed("the mirror is shutting down")
        self._expire()
        current = self.transfers.get(digest)
        if current is not None and current.error is None:
            current.served += 1
            current.readers += 1
            return current, True
        fd, path = tempfile.mkstemp(prefix="blob-", dir=self._dir)
        os.close(fd)
        transfer = Transfer(digest, name, Path(path), source)
        transfer.served, transfer.readers = 1, 1
        self.transfers[digest] = transfer
        task = asyncio.create_task(self._run(transfer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return transfer, False

    def leave(self, transfer: Transfer) -> None:
        transfer.readers -= 1
        self._expire()

    async def _run(self, transfer: Transfer) -> None:
        try:
            hasher = _hasher(transfer.digest)  # in the try: a digest it cannot check fails the transfer cleanly
            # unbuffered: the file always holds `written`. "r+b", not "wb": on ext4 a truncate-to-empty marks the
            # file for a flush on close (auto_da_alloc), which would write the short-lived spool to disk just as
            # the registry and its clients fsync their copies; untruncated, it stays in the page cache
            with open(transfer.path, "r+b", buffering=0) as spool:  # noqa: ASYNC230 - local, opens at once
                async for chunk in self._fetch(transfer):
                    _write_all(spool, chunk)
                    hasher.update(chunk)
                    transfer.wrote(len(chunk))
            actual = f"{hasher.name}:{hasher.hexdigest()}"
            if transfer.size is not None and transfer.written != transfer.size:
                raise TransferFailed(f"upstream sent {transfer.written} of {transfer.size} bytes")
            if actual != transfer.digest:
                raise TransferFailed(f"upstream bytes do not match {transfer.digest} (got {actual}); discarded")
            transfer.verified = True
            self._on_verified(transfer)
        except asyncio.CancelledError:  # shutting down: the readers end now, not at their timeouts
            self._fail(transfer, "the mirror is shutting down")
            raise
        except Exception as e:  # every failure must reach the waiting readers
            self._fail(transfer, str(e) or type(e).__name__)
            log.warning("blob %s transfer failed after %d bytes: %s", transfer.digest, transfer.written,
                        transfer.error)
        finally:
            transfer.ended_at = self._timer()
            transfer.notify()
            self._expire()
            # on time even when no request comes: a spool deleted within the kernel's dirty expiry (30 s by
            # default) is never written to disk at all
            asyncio.get_running_loop().call_later(self.keep_seconds, self._expire)

    @staticmethod
    def _fail(transfer: Transfer, error: str) -> None:
        transfer.error = error
        if not transfer.head.done():
            transfer.head.set_exception(TransferFailed(error))
        transfer.path.unlink(missing_ok=True)  # readers keep their open descriptors

    @staticmethod
    async def spans(transfer: Transfer, first: int, last: int):
        """Yield (offset, count) spans of the spool's bytes first..last (inclusive) as they arrive.

        The last byte asked for (and, for a blob of unknown size, the newest byte) is held back until the digest
        is checked, so that no answer, a range's included, is ever complete before that verdict: a corrupt blob
        ends every answer short. The spans end only after the verdict; an empty range has no byte to hold back,
        so its answer must wait for the verdict before it is begun (BlobServer._send)."""
        position = first
        while position <= last and not (transfer.verified and position >= transfer.written):
            if transfer.error:
                raise TransferFailed(transfer.error)
            written = transfer.written
            if transfer.verified:
                available = min(written, last + 1)
            else:
                available = max(0, min(last, written if transfer.size is not None else written - 1))
            if position < available:
                yield position, available - position
                position = available
            else:
                await transfer.wait_for_progress(written)
        await transfer.verdict()

    async def read(self, transfer: Transfer, first: int, last: int):
        """The bytes of `spans`, in chunks of at most CHUNK."""
        with open(transfer.path, "rb") as spool:  # noqa: ASYNC230 - a local spool file: opens at once
            async for offset, count in self.spans(transfer, first, last):
                spool.seek(offset)
                while count:
                    chunk = spool.read(min(CHUNK, count))
                    if not chunk:
                        raise TransferFailed("spool file shorter than its transfer")
                    count -= len(chunk)
                    yield chunk

    def _expire(self) -> None:
        """Drop finished transfers nobody reads `keep_seconds` after they ended, or when the spool is over its
        bound."""
        now = self._timer()
        total = sum(t.written for t in self.transfers.values())
        for digest, t in list(self.transfers.items()):
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
        for t in self.transfers.values():
            t.path.unlink(missing_ok=True)
        self.transfers.clear()
        try:
            self._dir.rmdir()
        except OSError:
            pass
