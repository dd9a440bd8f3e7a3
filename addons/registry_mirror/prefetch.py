"""An image's blobs fetched ahead of the registry's requests for them.

When the stock registry asks for an image manifest, it holds the image only in part or not at all, and its
clients ask for the config and the layers next. A client that fetches one layer at a time (containers/image
into some destinations, any client with fewer parallel downloads than layers) leaves the WAN idle between
layers until the fastest of its machines has read the last one to its end and asks for the next: on the bench's
shaped link, a second of an idle link per layer with 10 machines pulling at once. So the config and layers
are fetched one after another, in the manifest's order, each as soon as the one before it has crossed the WAN,
into shared transfers (coalesce.py) the registry's requests then join; a blob asked for out of order starts
its own transfer at once, as before. Only blobs the registry's storage lacks; none while the upstream is down.
"""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .coalesce import BlobCoalescer
from .manifest_body import IMAGE_TYPES
from .requests import SHA256_RE
from .storage_layout import V2, blob_data
from .transfers import TransferFailed

if TYPE_CHECKING:
    from .routing import Route

log = logging.getLogger(__name__)


def image_blobs(body: bytes, content_type: str) -> list[str]:
    """The config's and the layers' digests of an image manifest, in its order; [] for anything else (an index,
    schema1, a body that does not parse). Foreign layers (with `urls`) are left to the client."""
    if content_type not in IMAGE_TYPES:
        return []
    try:
        data = json.loads(body)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    entries = [data.get("config")] + (data.get("layers") if isinstance(data.get("layers"), list) else [])
    digests = []
    for entry in entries:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if isinstance(digest, str) and SHA256_RE.fullmatch(digest) and not entry.get("urls") \
                and digest not in digests:
            digests.append(digest)
    return digests


class Prefetcher:
    def __init__(self, coalescer: BlobCoalescer, storage: str | None):
        self.coalescer = coalescer
        self.storage = Path(storage) if storage else None
        self._tasks: set[asyncio.Task] = set()

    def manifest_served(self, name: str, route: Route, body: bytes, content_type: str) -> None:
        """The registry was handed this manifest: fetch what it will ask for next."""
        digests = image_blobs(body, content_type)
        if digests and not route.health.down:
            task = asyncio.create_task(self._fetch_in_order(name, route, digests))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fetch_in_order(self, name: str, route: Route, digests: list[str]) -> None:
        for digest in digests:
            if self._stored(digest):
                continue
            if self.coalescer.spooled_bytes() >= self.coalescer.max_spool_bytes:
                return  # the spool is for what clients read now
            try:
                await self.coalescer.hold(digest, name, route).verdict()
            except TransferFailed as e:  # the registry's own request tries again, and reports it
                log.info("prefetch of blob %s@%s stopped: %s", name, digest, e)
                return

    def _stored(self, digest: str) -> bool:
        return self.storage is not None and (self.storage / V2 / blob_data(digest)).exists()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
