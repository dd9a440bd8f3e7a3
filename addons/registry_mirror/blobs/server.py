"""A loopback endpoint inside the addon's process that the stock registry fetches blobs from.

The addon redirects blob GETs here (or, without redirects, mitmproxy routes them here and streams the answer
on). Every request is served from a shared transfer (blobs/coalesce.py): one fetch per digest in flight, teed into a
spool file, so bytes pass in chunks, never whole, and memory stays flat whatever the blob's size. Where the
bytes come from is the fill's business (blobs/fill.py); how an answer is sent, blobs/answer.py's.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from aiohttp import web

from registry_mirror.blobs.access import KEY_PARAM, TICKET_PARAM, Tickets, allowed
from registry_mirror.blobs.answer import Share, error, send
from registry_mirror.blobs.coalesce import BlobCoalescer
from registry_mirror.blobs.fill import BlobFill
from registry_mirror.blobs.peers import PeerCoordinator
from registry_mirror.blobs.prefetch import Prefetcher
from registry_mirror.blobs.route import BlobRoute
from registry_mirror.blobs.stored import open_stored, stored_transfer
from registry_mirror.blobs.stored_verifier import BlobVerifier
from registry_mirror.blobs.transfers import TransferFailed
from registry_mirror.config.load import CacheConfig, any_address
from registry_mirror.free_space import DiskWatch
from registry_mirror.oci.registry_requests import Kind, RegistryRequest, classify
from registry_mirror.outcomes import Outcome
from registry_mirror.routes.routing import Router
from registry_mirror.stats.counters import Stats
from registry_mirror.storage.bucket import Bucket

log = logging.getLogger(__name__)

# seconds after a blob's answer ends in which the registry may still be linking it; short, since what it protects
# stays above max_bytes (eviction also sets data aside and reads the links again before deleting it)
COMMIT_GRACE = 2.0


class BlobServer:
    def __init__(self, router: Router, cache: CacheConfig, stats: Stats, verify_interval: float,
                 storage: str | None = None, disk: DiskWatch | None = None, bucket: Bucket | None = None):
        """`disk`: refuses cold fetches when the storage's or the spool's filesystem runs low; `bucket`: the
        registry's storage when it is in one (mirror.s3), read before the upstream."""
        self.router, self.stats, self.disk = router, stats, disk
        self.storage = Path(storage) if storage else None  # the stock registry's filesystem storage
        # checks stored blobs: as this endpoint sends them, and after the registry's own pulls
        self.verifier = BlobVerifier(self.storage, verify_interval)
        self.bucket = bucket
        self.fill = BlobFill(router, stats, bucket, self.verifier.record_served)
        self.coalescer = BlobCoalescer(self.fill.fill, cache.spool_dir, cache.spool_max_bytes, cache.spool_keep,
                                       on_verified=self.fill.verified, on_mismatch=self.fill.mismatched)
        self.prefetch = Prefetcher(self.coalescer, self.storage, disk, bucket) if cache.prefetch else None
        self.down_wait = cache.stale_budget  # how long an uncached blob waits for a down upstream
        self._answered: dict[str, float] = {}  # digest -> when its last answer ended (monotonic)
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
        self.host, self.port = host, self._runner.addresses[0][1]

    async def close(self) -> None:
        # the transfers first: their readers end at once, so the server's shutdown waits for no handler
        if self.prefetch:
            await self.prefetch.close()
        await self.coalescer.close()
        await self.fill.close()
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        req = classify("GET", request.path)  # the path alone: the key or ticket in the query never goes upstream
        blob = replace(req, ns=request.query.get("ns", "").lower()) \
            if isinstance(req, RegistryRequest) and req.kind is Kind.BLOB else None
        if not allowed(request.headers, request.query, self.key, self.tickets, blob):
            return error(403, "DENIED", "this endpoint serves only the mirror's own addon, its other replicas and "
                                        f"requests it redirected here (a ticket is good for one request for its "
                                        f"blob, within {self.tickets.seconds:g} s); ask the mirror again")
        if blob is None:
            return error(400, "BLOB_UNKNOWN", "only blob GETs are served here")
        return await self._serve(request, blob)

    async def _serve(self, request: web.Request, req: RegistryRequest) -> web.StreamResponse:
        """From the mirror's storage if it has the blob, else from a shared transfer unless the upstream is down."""
        what = f"blob {req.name}@{req.reference}"
        route = self.router.for_request(req)
        peer = KEY_PARAM in request.query  # another replica's fill, not this registry's request
        if self.prefetch and not peer:
            self.prefetch.blob_requested(req.reference)
        try:
            stored = open_stored(self.storage, req.reference)
            if stored is not None:
                with stored:
                    return await self._from_storage(request, req, route, stored, what)
            refusal = await self._refusal(req, route, what)
            if refusal is not None:
                self.stats.served("blob", Outcome.ERROR, 0)
                return refusal
            return await self._shared(request, req, route, what, peer)
        finally:  # the registry links the blob after its last byte: it is in use until then
            self._answered[req.reference] = time.monotonic()

    def in_use(self) -> frozenset[str]:
        """Blobs an expiry pass or a forget must not delete: in flight, read, or answered within COMMIT_GRACE
        (the registry commits and links a blob after the answer ends, from a spool or from its storage)."""
        now = time.monotonic()
        for digest in [d for d, at in self._answered.items() if now - at >= COMMIT_GRACE]:
            del self._answered[digest]
        return self.coalescer.in_use() | frozenset(self._answered)

    async def _from_storage(self, request: web.Request, req: RegistryRequest, route: BlobRoute, stored: BinaryIO,
                            what: str) -> web.StreamResponse:
        """The stored blob, hashed as it is sent: a mismatch ends the answer short and moves the file aside, so
        the registry stores nothing and its next request is fetched from the upstream."""
        transfer = stored_transfer(req, stored)
        check = asyncio.create_task(self.verifier.check_served(transfer, stored))
        try:
            return await send(request, Share(transfer, stored, stored=True), self.stats, route.cfg.request_timeout,
                              what)
        finally:  # the answer ended before the verdict (the registry hung up): the check ends too
            check.cancel()
            await asyncio.gather(check, return_exceptions=True)

    def _incoming(self, route: BlobRoute, req: RegistryRequest) -> int:
        """Bytes still to be written for this blob (its size, as its HEAD gave it) and the transfers in flight."""
        return self.coalescer.incoming_bytes() + (route.blob_heads.size(req.name, req.reference) or 0)

    async def _shared(self, request: web.Request, req: RegistryRequest, route: BlobRoute, what: str,
                      peer: bool) -> web.StreamResponse:
        """The answer from the transfer of `req`'s blob, joined (or started) for this request."""
        try:
            transfer, following = self.coalescer.join(req.reference, req.name, route, take_hold=not peer)
        except TransferFailed as e:  # shutting down
            return error(503, "UNAVAILABLE", str(e))
        if peer and transfer.queued:  # its readers would time out waiting: the other replica fetches it itself
            self.coalescer.leave(transfer)
            return error(503, "UNAVAILABLE", f"{what} is waiting for an upstream transfer slot here")
        try:
            spool = open(transfer.path, "rb")  # noqa: ASYNC230 - a local spool file: opens at once
        except FileNotFoundError:  # mitmproxy starts tasks eagerly: the transfer can fail inside join
            self.coalescer.leave(transfer)
            self.stats.served("blob", Outcome.ERROR, 0)
            return error(503, "UNAVAILABLE", f"{what}: {transfer.error or 'its transfer ended'}")
        try:
            with spool:
                return await send(request, Share(transfer, spool, following=following), self.stats,
                                  route.cfg.request_timeout, what)
        finally:
            self.coalescer.leave(transfer)

    async def _refusal(self, req: RegistryRequest, route: BlobRoute, what: str) -> web.Response | None:
        """An uncached blob is refused at once while its filesystems are short of space; while its upstream is
        down it waits up to the stale budget for it, then is refused."""
        if (current := self.coalescer.transfers.get(req.reference)) and current.error is None:
            return None  # joined: no new fetch
        if self.disk and (short := self.disk.refusal(self._incoming(route, req))):
            log.warning("refused %s: %s", what, short)
            return error(503, "UNAVAILABLE", f"{what} is not cached, and {short}")
        health = route.health
        if health.down and self.bucket is not None and \
                await asyncio.to_thread(self.bucket.blob_size, req.reference) is not None:
            return None  # in the registry's storage (another repository's): no upstream needed
        if await health.wait_until_up(self.down_wait):
            return None
        return error(503, "UNAVAILABLE", f"the upstream is assumed down (retrying in {health.retry_in():.0f} s;"
                                         f" last error: {health.last_error}); {what} is not cached")
