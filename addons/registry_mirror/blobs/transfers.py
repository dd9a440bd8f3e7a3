"""One blob transfer: the spool file its fill writes and every request reads, and which of those bytes a reader
may have when.

The last byte asked for is held back until the digest has been checked, so that no answer is ever complete
before that verdict: a corrupt blob ends every answer short, and the stock registry stores nothing.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry_mirror.blobs.route import BlobRoute

NOTIFY_BYTES = 1024 * 1024  # readers wake per MiB, not per socket read: fewer wake-ups and sendfile calls...
NOTIFY_SECONDS = 0.5  # ...and no byte waits longer than this for them, however slow or stalled the upstream


class TransferFailed(Exception):
    """The shared fetch failed; its message carries no secret."""


@dataclass
class UpstreamHead:
    """The answer every request of a transfer gives: status and headers (lengths are set per request)."""
    status: int
    headers: dict[str, str]
    body: bytes = b""  # for error answers only
    scheme: str = ""  # the credential scheme the upstream was asked with, for the flow's redaction marker


@dataclass
class Transfer:
    digest: str
    name: str  # the repository of the request that started it: its credentials fetch the blob
    path: Path
    route: BlobRoute | None = None  # the route of the request that started it: its upstream fills the transfer
    origin: str = ""  # where the bytes come from when not from the upstream (another replica)
    ended_at: float = 0.0  # the coalescer's timer when the transfer was verified or failed
    head: asyncio.Future[UpstreamHead] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    size: int | None = None
    written: int = 0
    verified: bool = False
    error: str | None = None
    readers: int = 0  # requests joined and not yet left: while any, the spool stays
    served: int = 0  # requests served from this transfer, the first included
    held: bool = False  # started ahead of any request (a prefetch): counts as one reader until a request joins
    queued: bool = False  # waiting for one of the upstream's transfer slots: its head is not late yet
    admitted_at: float | None = None  # the loop's time it got its slot (None: it never waited for one)
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

    def fail(self, error: str) -> None:
        """Every reader and waiter fails with `error`; the spool goes (readers keep their open descriptors)."""
        self.error = error
        if not self.head.done():
            self.head.set_exception(TransferFailed(error))
        self.path.unlink(missing_ok=True)

    async def wait_for_progress(self, seen: int) -> None:
        if self.written == seen and not self.finished:
            await self._progress.wait()

    async def admitted(self) -> None:
        """Return once the transfer is no longer waiting for an upstream transfer slot."""
        while self.queued and not self.finished:
            await self._progress.wait()

    async def verdict(self) -> None:
        """Return once the bytes were checked against the digest; TransferFailed if they failed (or never came)."""
        while not self.finished:
            await self._progress.wait()
        if self.error is not None:
            raise TransferFailed(self.error)

    async def spans(self, first: int, last: int) -> AsyncIterator[tuple[int, int]]:
        """Yield (offset, count) spans of the spool's bytes first..last (inclusive) as they arrive.

        The last byte asked for (and, for a blob of unknown size, the newest byte) is held back until the
        verdict, and the spans end only after it. An empty range has no byte to hold back, so its answer must
        wait for the verdict before it is begun (blobs/answer.py)."""
        position = first
        while position <= last and not (self.verified and position >= self.written):
            if self.error:
                raise TransferFailed(self.error)
            written = self.written
            available = self._readable(written, last)
            if position < available:
                yield position, available - position
                position = available
            else:
                await self.wait_for_progress(written)
        await self.verdict()

    def _readable(self, written: int, last: int) -> int:
        """The end (exclusive) of the bytes up to `last` a reader may have of `written`."""
        if self.verified:
            return min(written, last + 1)
        return max(0, min(last, written if self.size is not None else written - 1))
