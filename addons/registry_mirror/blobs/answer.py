"""One answer of the blob endpoint: a transfer's bytes, whole or one Range, sent from its spool with sendfile.

The headers go out once the transfer's head has come; the body follows the spool as it grows, and is finished
only after the digest's verdict (blobs/transfers.py), so a corrupt blob ends the answer short.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO

from aiohttp import web

from registry_mirror.blobs.bucket_fill import FROM_STORAGE
from registry_mirror.blobs.transfers import Transfer, TransferFailed, UpstreamHead
from registry_mirror.outcomes import Outcome
from registry_mirror.responses import CACHE_HEADER, error_body, upstream_status_error
from registry_mirror.stats.counters import Stats

log = logging.getLogger(__name__)

UPSTREAM_AUTH_HEADER = "X-Mirror-Upstream-Auth"  # the credential scheme used, for the flow's redaction marker


@dataclass(frozen=True)
class Share:
    """One request's share of a transfer: the spool it reads, open (a spool unlinked later, failed or expired,
    stays readable through it), and how the request came to it."""
    transfer: Transfer
    spool: BinaryIO
    stored: bool = False  # the blob is in the mirror's storage: the transfer is that file
    following: bool = False  # joined a transfer another request had started

    @property
    def outcome(self) -> Outcome:
        """Known once the head has come: only then is it known whether another replica sends the bytes."""
        if self.stored or self.transfer.origin == FROM_STORAGE:
            return Outcome.HIT
        if self.following:
            return Outcome.COALESCED
        return Outcome.PEER if self.transfer.origin else Outcome.MISS


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


def error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(code, message), content_type="application/json")


async def send(request: web.Request, share: Share, stats: Stats, head_within: float,
               what: str) -> web.StreamResponse:
    """Answer `request` from `share` if its head comes within `head_within` seconds; every answer is counted in
    `stats`, an error as Outcome.ERROR."""
    transfer = share.transfer
    head = await _head(transfer, head_within, what)
    if isinstance(head, web.Response):
        stats.served("blob", Outcome.ERROR, 0)
        return head
    size = transfer.size
    wanted = parse_range(request.headers.get("Range"), size) if size is not None else None
    first, last = wanted or (0, size - 1 if size is not None else sys.maxsize)
    outcome = share.outcome
    out = web.StreamResponse(status=206 if wanted else 200, headers=_headers(head, outcome, size, wanted))
    await out.prepare(request)
    sent, started = 0, time.monotonic()
    try:
        async for offset, count in transfer.spans(first, last):
            await _sendfile(request, share.spool, offset, count)
            sent += count
        await out.write_eof()  # the spans end only after the verdict: only then is the answer finished
    except (TransferFailed, ConnectionError) as e:
        stats.served("blob", Outcome.ERROR, sent)
        log.warning("%s %s ended after %d bytes: %s", outcome, what, sent, e)
        return _cut_short(request, out)
    stats.served("blob", outcome, sent)
    source = "from the mirror's storage, none from the upstream" if outcome is Outcome.HIT else "to the registry"
    log.info("blob %s %s: %d bytes %s (%.0f ms)", outcome, what, sent, source, (time.monotonic() - started) * 1000)
    return out


def _headers(head: UpstreamHead, outcome: Outcome, size: int | None,
             wanted: tuple[int, int] | None) -> dict[str, str]:
    """The head's headers, how the answer came about, and the length of what it sends (unknown: chunked)."""
    headers = {**head.headers, CACHE_HEADER: outcome, UPSTREAM_AUTH_HEADER: head.scheme}
    if size is not None:
        first, last = wanted or (0, size - 1)
        headers["Content-Length"] = str(last - first + 1)
    if wanted:
        headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
    return headers


async def _head(transfer: Transfer, within: float, what: str) -> UpstreamHead | web.Response:
    """The transfer's 200 head, or the error answer the registry gets instead."""
    try:
        head = await _wait_for_head(transfer, within)
        if head.status == 200 and transfer.size == 0:
            # no last byte to hold back, and a Content-Length: 0 answer is complete with its headers: they
            # wait for the verdict instead, so that an empty body for a non-empty digest is still refused
            await asyncio.wait_for(transfer.verdict(), within)
    except TimeoutError:
        return error(504, "UNAVAILABLE", f"the upstream did not answer for {what} within {within:g} s")
    except TransferFailed as e:
        return error(503, "UNAVAILABLE", str(e))
    if head.status == 200:
        return head
    mapped = upstream_status_error(head.status, what)
    return error(*mapped) if mapped else web.Response(status=head.status, body=head.body, headers=head.headers)


async def _wait_for_head(transfer: Transfer, within: float) -> UpstreamHead:
    """The head, `within` seconds after the transfer got an upstream slot: a wait in line is not the upstream's
    (upstream/slots.py bounds it, and fails the transfer when it runs out)."""
    loop = asyncio.get_running_loop()
    wait = within
    while True:
        try:
            return await asyncio.wait_for(asyncio.shield(transfer.head), wait)
        except TimeoutError:
            await transfer.admitted()
            if transfer.admitted_at is None or (wait := transfer.admitted_at + within - loop.time()) <= 0:
                raise


async def _sendfile(request: web.Request, spool: BinaryIO, offset: int, count: int) -> None:
    """Zero-copy from the spool file to the socket (a plain read/write loop where unsupported)."""
    if request.transport is None:
        raise ConnectionResetError("the registry closed the connection")
    await asyncio.get_running_loop().sendfile(request.transport, spool, offset, count)


def _cut_short(request: web.Request, out: web.StreamResponse) -> web.StreamResponse:
    """Headers are out: dropping the connection tells the client the body is short. (Returning, not raising:
    the server would log a routine disconnect as an error with a traceback.)"""
    if request.transport is not None:
        request.transport.close()
    return out
