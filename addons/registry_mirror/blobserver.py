"""A loopback endpoint inside the addon's process that streams blobs from the upstream.

mitmproxy routes blob GETs here (so the flow still shows in mitmweb) and streams the answer on. Every
request is served from a shared transfer (coalesce.py): one upstream fetch per digest in flight, teed into
a spool file, so bytes pass in chunks, never whole, and memory stays flat whatever the blob's size.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from .blob_access import TICKET_PARAM, Tickets, allowed
from .blob_fill import BlobFill
from .coalesce import BlobCoalescer, parse_range
from .config import CacheConfig, any_address
from .peers import PeerCoordinator
from .requests import SHA256_RE, Kind, RegistryRequest, classify
from .responses import CACHE_HEADER, error_body, upstream_status_error
from .routing import Route, Router
from .stats import Stats
from .transfers import Transfer, TransferFailed, UpstreamHead

log = logging.getLogger(__name__)

AUTH_HEADER = "X-Mirror-Upstream-Auth"  # the credential scheme used, for the flow's redaction marker


class BlobServer:
    def __init__(self, router: Router, cache: CacheConfig, stats: Stats, storage: str | None = None):
        self.router, self.stats = router, stats
        self.storage = Path(storage) if storage else None  # the stock registry's filesystem storage
        self.fill = BlobFill(router, stats)
        self.coalescer = BlobCoalescer(self.fill.fill, cache.spool_dir, cache.spool_max_bytes, cache.spool_keep,
                                       on_verified=self.fill.verified)
        self.down_wait = cache.stale_budget  # how long an uncached blob waits for a down upstream
        self.key = secrets.token_urlsafe(16)
        self.tickets = Tickets()
        self.host, self.port = "127.0.0.1", 0
        self._runner: web.AppRunner | None = None

    @property
    def on_stored(self) -> Callable[[int], None]:
        """Told of every verified transfer's size (the expiry's cap)."""
        return self.fill.on_stored

    @on_stored.setter
    def on_stored(self, told: Callable[[int], None]) -> None:
        self.fill.on_stored = told

    @property
    def peers(self) -> PeerCoordinator | None:
        return self.fill.peers

    def share_with_peers(self, peers: PeerCoordinator) -> None:
        """Scale-out: coalesce with the other replicas through `peers` (call after start)."""
        peers.announce(self.port, self.key)
        self.fill.share_with_peers(peers)

    def address_for(self, reached_at: str) -> str:
        """The host a local client dials for this endpoint: where it reached the addon, when the endpoint
        listens on every address, else the one address it listens on."""
        return reached_at if any_address(self.host) else self.host

    def redirect_url(self, host: str, req: RegistryRequest) -> str:
        """Where the registry fetches a blob itself: this endpoint, with a new ticket for that one blob."""
        host = self.address_for(host)
        host = f"[{host}]" if ":" in host else host
        ns = f"&ns={quote(req.ns, safe='')}" if req.ns else ""  # the route is chosen again here, the same way
        return f"http://{host}:{self.port}{req.v2_path}?{TICKET_PARAM}={self.tickets.issue(req)}{ns}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host, self.port = host, site._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        # the transfers first: their readers end at once, so the server's shutdown waits for no handler
        await self.coalescer.close()
        await self.fill.close()
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        req = classify("GET", request.path)  # the path alone: the key or ticket in the query never goes upstream
        blob = replace(req, ns=request.query.get("ns", "").lower()) \
            if isinstance(req, RegistryRequest) and req.kind is Kind.BLOB else None
        if not allowed(request.headers, request.query, self.key, self.tickets, blob):
            return _error(403, "DENIED", "this endpoint serves only the mirror's own addon, its other replicas and "
                                         f"requests it redirected here (a ticket is good for one request for its "
                                         f"blob, within {self.tickets.seconds:g} s); ask the mirror again")
        if blob is None:
            return _error(400, "BLOB_UNKNOWN", "only blob GETs are served here")
        return await self._stream(request, blob)

    async def _stream(self, request: web.Request, req: RegistryRequest) -> web.StreamResponse:
        what = f"blob {req.name}@{req.reference}"
        route = self.router.for_request(req)
        stored = self._open_stored(req.reference)
        if stored is not None:
            with stored:
                return await self._send(request, _stored_transfer(req, stored), stored, route, what, stored=True)
        refusal = await self._refusal(req, route, what)
        if refusal is not None:
            self.stats.served("blob", "error", 0)
            return refusal
        try:
            transfer, following = self.coalescer.join(req.reference, req.name, route)
        except TransferFailed as e:  # shutting down
            return _error(503, "UNAVAILABLE", str(e))
        try:
            # opened before any wait: a spool unlinked later (failed, expired) stays readable through it
            spool = open(transfer.path, "rb")  # noqa: ASYNC230 - a local spool file: opens at once
        except FileNotFoundError:  # mitmproxy starts tasks eagerly: the transfer can fail inside join
            self.coalescer.leave(transfer)
            self.stats.served("blob", "error", 0)
            return _error(503, "UNAVAILABLE", f"{what}: {transfer.error or 'its transfer ended'}")
        try:
            with spool:
                return await self._send(request, transfer, spool, route, what, following=following)
        finally:
            self.coalescer.leave(transfer)

    async def _send(self, request: web.Request, transfer: Transfer, spool, route: Route, what: str,
                    following: bool = False, stored: bool = False) -> web.StreamResponse:
        timeout = route.cfg.request_timeout
        try:
            head = await asyncio.wait_for(asyncio.shield(transfer.head), timeout)
            if head.status == 200 and transfer.size == 0:
                # no last byte to hold back, and a Content-Length: 0 answer is complete with its headers: they
                # wait for the verdict instead, so that an empty body for a non-empty digest is still refused
                await asyncio.wait_for(transfer.verdict(), timeout)
        except TimeoutError:
            self.stats.served("blob", "error", 0)
            return _error(504, "UNAVAILABLE", f"the upstream did not answer for {what} within {timeout:g} s")
        except TransferFailed as e:
            self.stats.served("blob", "error", 0)
            return _error(503, "UNAVAILABLE", str(e))
        if head.status != 200:
            self.stats.served("blob", "error", 0)
            mapped = upstream_status_error(head.status, what)
            return _error(*mapped) if mapped else web.Response(status=head.status, body=head.body,
                                                              headers=head.headers)
        size = transfer.size
        wanted = parse_range(request.headers.get("Range"), size) if size is not None else None
        first, last = wanted or (0, size - 1 if size is not None else sys.maxsize)
        # after the head: only then is it known whether another replica sends the bytes
        outcome = "HIT" if stored else "COALESCED" if following else "PEER" if transfer.origin else "MISS"
        headers = {**head.headers, CACHE_HEADER: outcome, AUTH_HEADER: head.scheme}
        if size is not None:
            headers["Content-Length"] = str(last - first + 1)
        if wanted:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        out = web.StreamResponse(status=206 if wanted else 200, headers=headers)
        await out.prepare(request)
        sent, started = 0, time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            async for offset, count in transfer.spans(first, last):
                if request.transport is None:
                    raise ConnectionResetError("the registry closed the connection")
                # zero-copy from the spool file to the socket (a plain read/write loop where unsupported)
                await loop.sendfile(request.transport, spool, offset, count)
                sent += count
            # spans ends only after the transfer's verdict: only then is the answer finished
            await out.write_eof()
        except (TransferFailed, ConnectionError) as e:
            self.stats.served("blob", "error", sent)
            log.warning("%s %s ended after %d bytes: %s", outcome, what, sent, e)
            return _cut_short(request, out)
        self.stats.served("blob", outcome, sent)
        source = "from the mirror's storage, none from the upstream" if outcome == "HIT" else "to the registry"
        log.info("blob %s %s: %d bytes %s (%.0f ms)", outcome, what, sent, source, _ms(started))
        return out

    def _open_stored(self, digest: str):
        """The blob's file in the mirror's own storage, open, or None.

        The stock registry looks blobs up per repository, so a base layer it stored for one repository is
        asked for again when another repository's image uses it; the bytes are here already. They were checked
        against their digest when the registry stored them (it commits a blob by renaming it into place, so a
        file here is whole), and the registry checks them again as it links them to the new repository. The
        registry asked the upstream for the blob's HEAD in that repository first, so the upstream still decides
        which repositories have it."""
        if self.storage is None or not SHA256_RE.fullmatch(digest):  # the only layout looked up: sha256/<hex>
            return None
        algorithm, _, hex_digest = digest.partition(":")
        path = self.storage / "docker/registry/v2/blobs" / algorithm / hex_digest[:2] / hex_digest / "data"
        try:
            return open(path, "rb")
        except OSError:  # not stored (or being removed by the registry's expiry): from the upstream
            return None

    async def _refusal(self, req: RegistryRequest, route: Route, what: str) -> web.Response | None:
        """An uncached blob while its upstream is down waits up to the stale budget for it, then is refused."""
        health = route.health
        if req.reference in self.coalescer.transfers or await health.wait_until_up(self.down_wait):
            return None
        return _error(503, "UNAVAILABLE", f"the upstream is assumed down (retrying in {health.retry_in():.0f} s;"
                                          f" last error: {health.last_error}); {what} is not cached")


def _stored_transfer(req: RegistryRequest, stored) -> Transfer:
    """A blob in the registry's storage as a finished, verified transfer: served like any spool."""
    size = os.fstat(stored.fileno()).st_size
    transfer = Transfer(req.reference, req.name, Path(stored.name), size=size, written=size, verified=True)
    transfer.head.set_result(UpstreamHead(200, {"Content-Type": "application/octet-stream",
                                                "Docker-Content-Digest": req.reference, "Accept-Ranges": "bytes"}))
    return transfer


def _cut_short(request: web.Request, out: web.StreamResponse) -> web.StreamResponse:
    """Headers are out: dropping the connection tells the client the body is short. (Returning, not raising:
    the server would log a routine disconnect as an error with a traceback.)"""
    if request.transport is not None:
        request.transport.close()
    return out


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(code, message), content_type="application/json")


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
