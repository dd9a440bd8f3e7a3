"""The fill policy: where a transfer's bytes come from, and what a verified transfer tells the rest of the mirror.

Alone, a replica fetches from the upstream. With replicas (scale-out), the first to claim a digest in redis
fetches it from the upstream; the others read that replica's growing spool, and if it fails them the upstream
sends the rest with a Range resume.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

import aiohttp

from registry_mirror.blobs.bucket_fill import FROM_STORAGE, BucketReadFailed, from_bucket
from registry_mirror.blobs.peer_fill import from_peer
from registry_mirror.blobs.peers import PeerCoordinator
from registry_mirror.blobs.route import BlobRoute
from registry_mirror.blobs.transfers import Transfer
from registry_mirror.blobs.upstream_fill import from_upstream
from registry_mirror.routes.routing import Router
from registry_mirror.stats.counters import Stats
from registry_mirror.storage.bucket import Bucket
from registry_mirror.storage.verify import Checked

log = logging.getLogger(__name__)


class BlobFill:
    def __init__(self, router: Router, stats: Stats, bucket: Bucket | None = None,
                 on_checked: Callable[[Checked], None] = lambda checked: None):
        """`bucket`: the registry's storage, where a blob is looked for first; `on_checked`: told how each blob
        read from it compared with its digest."""
        self.router, self.stats, self.bucket, self.on_checked = router, stats, bucket, on_checked
        self.on_stored: Callable[[int], None] = lambda nbytes: None  # told of every verified transfer's size
        self.peers: PeerCoordinator | None = None
        self._peer_session: aiohttp.ClientSession | None = None  # carries no credential, ever

    def share_with_peers(self, peers: PeerCoordinator) -> None:
        """Coalesce with the other replicas through `peers` (announced already)."""
        self.peers = peers
        # no pool limit: a replica reading as many blobs as the upstream's slots allow never waits on a pool
        self._peer_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                                                   cookie_jar=aiohttp.DummyCookieJar())

    def fill(self, transfer: Transfer) -> AsyncGenerator[bytes, None]:
        """A transfer's bytes: from the bucket holding the registry's storage when it has the blob, else from the
        replica already fetching it, else from the upstream (directly, one generator less per chunk, for a single
        replica)."""
        route = _route_of(transfer)
        if self.bucket is not None:
            return self._fill_stored_first(transfer, route, self.bucket)
        return self._fetched(transfer, route)

    def _fetched(self, transfer: Transfer, route: BlobRoute) -> AsyncGenerator[bytes, None]:
        if self.peers is None or self._peer_session is None:  # one replica (both are set together)
            return from_upstream(transfer, route, self.stats)
        return self._fill_shared(transfer, route, self.peers, self._peer_session)

    async def _fill_stored_first(self, transfer: Transfer, route: BlobRoute,
                                 bucket: Bucket) -> AsyncGenerator[bytes, None]:
        size = await asyncio.to_thread(bucket.blob_size, transfer.digest)
        if size is None:
            async with contextlib.aclosing(self._fetched(transfer, route)) as fetched:
                async for chunk in fetched:
                    yield chunk
            return
        try:
            async with contextlib.aclosing(from_bucket(transfer, bucket, size)) as stored:
                async for chunk in stored:
                    yield chunk
            return
        except BucketReadFailed as e:
            log.warning("%s; the upstream sends it from byte %d", e, transfer.written)
        transfer.origin = ""  # the upstream's from here on: a Range resume when some bytes came already
        async with contextlib.aclosing(from_upstream(transfer, route, self.stats)) as rest:
            async for chunk in rest:
                yield chunk

    async def _fill_shared(self, transfer: Transfer, route: BlobRoute, peers: PeerCoordinator,
                           session: aiohttp.ClientSession) -> AsyncGenerator[bytes, None]:
        peer = await peers.claim(transfer.digest)
        if peer is None:
            async with peers.leading(transfer.digest):
                async for chunk in from_upstream(transfer, route, self.stats):
                    yield chunk
            return
        async for chunk in from_peer(session, peer, transfer, route, self.stats):
            yield chunk
        if not transfer.origin:  # the replica failed it: the upstream sends the rest
            async for chunk in from_upstream(transfer, route, self.stats):
                yield chunk

    async def mismatched(self, transfer: Transfer, actual: str) -> None:
        """A transfer's bytes, in full, were not its digest's: read from the bucket, the object is corrupt and
        goes aside (else every pull needing it would fail), so that the next pull fetches a good copy."""
        if transfer.origin != FROM_STORAGE or self.bucket is None:
            return
        moved = await asyncio.to_thread(self.bucket.quarantine, transfer.digest)
        self.on_checked(Checked(transfer.digest, transfer.written, actual, moved))

    def verified(self, transfer: Transfer) -> None:
        """A cached HEAD that disagrees with the verified size goes, in every route (sizes are per digest), so
        that the next HEAD asks the upstream; and the bytes are about to be stored (the expiry's cap). A blob read
        from the bucket is told as checked."""
        digest, size = transfer.digest, transfer.written
        if transfer.origin == FROM_STORAGE:
            self.on_checked(Checked(digest, size, digest))
        dropped = sum(route.blob_heads.drop_other_sizes(digest, size) for route in self.router.routes.values())
        if dropped:
            log.warning("dropped %d cached HEAD(s) of %s that did not say its verified size %d", dropped, digest,
                        size)
            self.stats.dropped_inconsistent(dropped)
        self.on_stored(size)

    async def close(self) -> None:
        if self._peer_session:
            await self._peer_session.close()
        if self.peers:
            await self.peers.close()


def _route_of(transfer: Transfer) -> BlobRoute:
    if transfer.route is None:
        raise ValueError(f"transfer of {transfer.digest} has no route to fill it from")
    return transfer.route
