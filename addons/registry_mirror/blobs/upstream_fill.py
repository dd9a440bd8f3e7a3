"""Fills a transfer from the upstream: the whole blob, so that its digest can be checked, resumed with a Range
request from the last byte received when the stream is interrupted."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING

import aiohttp

from registry_mirror.blobs.transfers import Transfer, TransferFailed, UpstreamHead
from registry_mirror.bodies import BodyError, read_body
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.redact import error_text
from registry_mirror.responses import passed_headers
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.auth import AuthError
from registry_mirror.upstream.client import UpstreamError
from registry_mirror.upstream.slots import SlotTimeout

if TYPE_CHECKING:
    from registry_mirror.blobs.route import BlobRoute

log = logging.getLogger(__name__)

ERROR_BODY_CAP = 64 * 1024  # an upstream's error answer for a blob, passed on to the registry
SKIP_CHUNK = 256 * 1024  # read and dropped at a time where the upstream ignores a resume's Range


def from_upstream(transfer: Transfer, route: BlobRoute, stats: Stats) -> AsyncGenerator[bytes, None]:
    """The blob's bytes from the transfer's `written` on (another replica may have sent some before)."""
    return _UpstreamFill(transfer, route, stats).chunks()


def take_head(transfer: Transfer, answer_headers: Mapping[str, str], scheme: str,
              known_size: int | None = None) -> None:
    """A 200's size and headers for every request of the transfer; lengths are set per request. An answer
    without a length (chunked) takes the size the blob's HEAD gave: the stock registry fails a blob it is
    sent without one, and the transfer is checked against it (and the digest) at its end anyway."""
    length = answer_headers.get("Content-Length")
    transfer.size = int(length) if length and length.isdigit() else known_size
    headers = {k: v for k, v in passed_headers(answer_headers).items() if k not in ("Content-Length", "Content-Range")}
    transfer.head.set_result(UpstreamHead(200, headers, scheme=scheme))


class _UpstreamFill:
    def __init__(self, transfer: Transfer, route: BlobRoute, stats: Stats):
        self.transfer, self.route, self.stats = transfer, route, stats
        self.req = RegistryRequest(Kind.BLOB, transfer.name, transfer.digest)
        self.exchange = f"{transfer.name}@{transfer.digest}"  # as the stats' exchange log names it

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The blob's bytes once one of the upstream's transfer slots is free; a wait that runs out fails the
        transfer before its head, and is no upstream failure."""
        transfer = self.transfer
        transfer.queued = True
        try:
            async with self.route.blob_slots.slot():
                transfer.queued, transfer.admitted_at = False, asyncio.get_running_loop().time()
                transfer.notify()  # its readers' wait for the head starts now
                async for chunk in self._resumed():
                    yield chunk
        except SlotTimeout as e:
            raise TransferFailed(f"blob {self.exchange}: {e}") from e
        finally:
            transfer.queued = False

    async def _resumed(self) -> AsyncIterator[bytes]:
        """An interrupted stream (reset, stall, a body short of its length) resumes from the last byte
        received, up to `upstream.blob_resumes` times."""
        transfer, route, what = self.transfer, self.route, f"blob {self.exchange}"
        started, resumes = time.monotonic(), 0
        from_before = transfer.written  # bytes another replica sent before it failed: not the upstream's
        while True:
            try:
                async for chunk in self._answer(transfer.written):
                    yield chunk
                route.health.success()
                self.stats.upstream("blob", "GET", self.exchange, 200, transfer.written - from_before,
                                    time.monotonic() - started, "miss" if not resumes else f"miss-{resumes}-resumes",
                                    route=route.cfg.label)
                return
            except (UpstreamError, aiohttp.ClientError, TimeoutError, OSError) as e:
                error = str(e) if isinstance(e, UpstreamError) else error_text(e)
                route.health.failure(f"GET {what}: {error}", hung=getattr(e, "timed_out", False))
                if resumes >= route.cfg.blob_resumes or not transfer.head.done():
                    self.stats.upstream("blob", "GET", self.exchange, "error", transfer.written - from_before,
                                        time.monotonic() - started, "error", route=route.cfg.label)
                    raise TransferFailed(f"upstream GET {what} failed after {transfer.written} bytes "
                                         f"and {resumes} resumes: {error}") from e
                resumes += 1
                log.warning("upstream GET %s interrupted at byte %d (%s); resuming (%d of %d)", what,
                            transfer.written, error, resumes, route.cfg.blob_resumes)
            except AuthError as e:
                if e.upstream_failure:
                    route.health.failure(str(e))
                raise TransferFailed(str(e)) from e

    async def _answer(self, offset: int) -> AsyncIterator[bytes]:
        """One GET's bytes from `offset`; the transfer's first answer decides its head."""
        transfer = self.transfer
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self.route.upstream.open("GET", self.req, headers) as (up, scheme):
            if not transfer.head.done():
                await self._first_answer(up, scheme)
            else:
                await _resumed(up, offset)
            async for chunk in up.content.iter_any():  # as received: no re-chunking copies
                yield chunk
            if transfer.size is not None and transfer.written < transfer.size:  # an interruption: resumed
                raise UpstreamError(f"the body ended at byte {transfer.written} of {transfer.size}")

    async def _first_answer(self, up: aiohttp.ClientResponse, scheme: str) -> None:
        """A 200 is every request's head; any other answer is passed on to the registry and fails the transfer."""
        if up.status == 200:
            take_head(self.transfer, up.headers, scheme, self.route.blob_heads.size(self.req.name,
                                                                                        self.req.reference))
            return
        try:  # the upstream's reason, for the registry; a body too long or cut short is dropped
            body = await read_body(up.content, ERROR_BODY_CAP, up.content_length)
        except BodyError:
            body = b""
        headers = {k: v for k, v in passed_headers(up.headers).items() if k != "Content-Length"}
        self.transfer.head.set_result(UpstreamHead(up.status, headers, body))  # its length is the body's
        self.stats.upstream("blob", "GET", self.exchange, up.status, len(body), 0.0, route=self.route.cfg.label)
        if up.status >= 500:
            self.route.health.failure(f"GET blob {self.req.name}: status {up.status}")
        raise TransferFailed(f"upstream answered {up.status} for blob {self.exchange}")


async def _resumed(up: aiohttp.ClientResponse, offset: int) -> None:
    """Check a later answer (a resume at `offset`, or a retry after a replica failed) and skip to `offset`."""
    if offset == 0:  # a replica answered the head, then failed before its first byte
        if up.status != 200:
            raise UpstreamError(f"GET answered {up.status} after another replica failed the blob")
    elif up.status == 200:  # the upstream ignored the Range: skip what the spool has, chunk by chunk
        skip = offset
        while skip:
            skip -= len(await up.content.readexactly(min(SKIP_CHUNK, skip)))
    elif up.status != 206 or not up.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
        raise UpstreamError(f"resume at byte {offset} answered {up.status}")
