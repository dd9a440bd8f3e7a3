"""Fills a transfer from another replica's growing spool (scale-out), over the data center's network."""
from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp

from registry_mirror.blobs.access import KEY_PARAM
from registry_mirror.blobs.peers import Peer
from registry_mirror.blobs.transfers import Transfer
from registry_mirror.blobs.upstream_fill import take_head
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.redact import error_text
from registry_mirror.stats.counters import Stats

if TYPE_CHECKING:
    from registry_mirror.blobs.route import BlobRoute

log = logging.getLogger(__name__)


class PeerError(Exception):
    """Another replica did not serve a blob; the message never carries its key."""


async def from_peer(session: aiohttp.ClientSession, peer: Peer, transfer: Transfer, route: BlobRoute,
                    stats: Stats) -> AsyncIterator[bytes]:
    """The blob from `peer`'s spool; on a failure it ends early with the transfer's `origin` cleared, for the
    upstream to send the rest. Each byte is counted once, where it came from."""
    req = RegistryRequest(Kind.BLOB, transfer.name, transfer.digest)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=route.cfg.blob_stall_timeout)
    started = time.monotonic()
    try:
        async with session.get(f"{peer.url}{req.v2_path}", params={KEY_PARAM: peer.key}, timeout=timeout,
                               allow_redirects=False) as resp:
            if resp.status != 200:  # (the error names the status only: the URL carries the peer's key)
                raise PeerError(f"answered {resp.status}")
            transfer.origin = peer.url
            if not transfer.head.done():
                take_head(transfer, resp.headers, "")
            async for chunk in resp.content.iter_any():
                yield chunk
        stats.from_peer(transfer.written)
        log.info("blob %s@%s: %d bytes from replica %s, not the upstream (%.0f ms)", req.name, req.reference,
                 transfer.written, peer.url, (time.monotonic() - started) * 1000)
    except (PeerError, aiohttp.ClientError, TimeoutError, OSError) as e:
        transfer.origin = ""
        stats.from_peer(transfer.written)
        log.warning("replica %s failed blob %s@%s after %d bytes (%s); the upstream sends the rest", peer.url,
                    req.name, req.reference, transfer.written, error_text(e))
