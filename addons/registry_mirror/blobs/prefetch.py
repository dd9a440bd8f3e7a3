"""An image's layers fetched ahead of the registry's requests for them.

A client that fetches one layer at a time (containers/image into some destinations, any client with fewer
parallel downloads than layers) leaves the WAN idle between layers until the fastest of its machines has read
the last one to its end and asks for the next: on the bench's shaped link, a second of an idle link per layer
with 10 machines pulling at once. So once the registry, having fetched an image manifest, asks for one of the
image's blobs (a pull has begun: `docker manifest inspect` and `skopeo inspect --raw` ask for none), the
image's blobs are fetched one after another in the manifest's order (the one asked for is waited on), each
as soon as the one before it has crossed the WAN, into shared transfers (blobs/coalesce.py) the registry's requests
then join. A blob asked for out of order starts its own transfer at once, as before. Only blobs the
registry's storage lacks, one image at a time, within the spool's bound; none while the upstream is down.
Off by default (`cache.prefetch`): the stock registry 2.8 writes a layer's link in place, and a pull that asks
for a layer as a prefetched copy of it is committed can read the link empty and get a 500.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from registry_mirror.blobs.coalesce import BlobCoalescer
from registry_mirror.blobs.stored import stored_path
from registry_mirror.blobs.transfers import TransferFailed
from registry_mirror.free_space import DiskWatch
from registry_mirror.oci.manifest_body import IMAGE_TYPES
from registry_mirror.oci.registry_requests import SHA256_RE
from registry_mirror.storage.bucket import Bucket

if TYPE_CHECKING:
    from registry_mirror.blobs.route import BlobRoute

log = logging.getLogger(__name__)


def image_blobs(body: bytes, content_type: str) -> list[tuple[str, int]]:
    """The config's and the layers' digests and sizes of an image manifest, in its order; [] for anything else
    (an index, schema1, a body that does not parse). Foreign layers (with `urls`) are left to the client."""
    if content_type.split(";")[0].strip() not in IMAGE_TYPES:
        return []
    try:
        data = json.loads(body)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    entries = [data.get("config"), *(layers if isinstance(layers := data.get("layers"), list) else [])]
    blobs: dict[str, int] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        digest, size = entry.get("digest"), entry.get("size")
        if isinstance(digest, str) and SHA256_RE.fullmatch(digest) and not entry.get("urls"):
            blobs.setdefault(digest, size if isinstance(size, int) and not isinstance(size, bool) else 0)
    return list(blobs.items())


class Prefetcher:
    MAX_PENDING = 256  # images whose manifest the registry fetched and of which it has not asked for a blob yet

    def __init__(self, coalescer: BlobCoalescer, storage: Path | None, disk: DiskWatch | None = None,
                 bucket: Bucket | None = None):
        self.coalescer = coalescer
        self.storage, self.bucket = storage, bucket  # the registry's storage: a folder, or a bucket (mirror.s3)
        self.disk = disk  # nothing is fetched ahead under the free-space reserve
        self._pending: OrderedDict[str, tuple[str, BlobRoute, list[tuple[str, int]]]] = OrderedDict()  # by manifest
        self._image_of: dict[str, str] = {}  # a pending image's blob -> its manifest's key in _pending
        self._one_image = asyncio.Lock()  # one image's blobs at a time: the WAN is shared, the spool bounded
        self._tasks: set[asyncio.Task] = set()

    def manifest_served(self, name: str, route: BlobRoute, body: bytes, content_type: str) -> None:
        """The registry was handed this manifest: its blobs are fetched once it asks for one of them."""
        blobs = image_blobs(body, content_type)
        if len(blobs) < 2:
            return  # nothing to fetch ahead of the one it asks for
        key = "|".join(digest for digest, _ in blobs)
        self._pending[key] = (name, route, blobs)
        self._image_of.update((digest, key) for digest, _ in blobs)
        while len(self._pending) > self.MAX_PENDING:
            self._forget(next(iter(self._pending)))

    def blob_requested(self, digest: str) -> None:
        """The registry asks for a blob: if it is one of an image it fetched the manifest of, a pull has begun,
        and the image's other blobs come next."""
        key = self._image_of.get(digest)
        if key is None:
            return
        name, route, blobs = self._forget(key)
        if not route.health.down and not self.coalescer.closed:
            task = asyncio.create_task(self._fetch_in_order(name, route, blobs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _forget(self, key: str) -> tuple[str, BlobRoute, list[tuple[str, int]]]:
        pending = self._pending.pop(key)
        for digest, _ in pending[2]:
            if self._image_of.get(digest) == key:
                del self._image_of[digest]
        return pending

    async def _fetch_in_order(self, name: str, route: BlobRoute, blobs: list[tuple[str, int]]) -> None:
        async with self._one_image:
            for digest, size in blobs:
                current = self.coalescer.transfers.get(digest)
                if current is None and await self._stored(digest):
                    continue
                if current is None and self.coalescer.spooled_bytes() + size > self.coalescer.max_spool_bytes:
                    return  # the spool is for what clients read now
                if current is None and self.disk and self.disk.refusal(self.coalescer.incoming_bytes() + size):
                    return  # short of space: what clients ask for is refused, and nothing more is fetched
                try:  # in the manifest's order, one at a time: a blob under way (the one asked for) is waited for
                    await (current or self.coalescer.hold(digest, name, route)).verdict()
                except (TransferFailed, OSError) as e:  # the registry's own request tries again, and reports it
                    log.info("prefetch of blob %s@%s stopped: %s", name, digest, e)
                    return

    async def _stored(self, digest: str) -> bool:
        if self.bucket is not None:
            return await asyncio.to_thread(self.bucket.blob_size, digest) is not None
        path = stored_path(self.storage, digest)
        return path is not None and path.exists()

    async def close(self) -> None:
        self._pending.clear()
        self._image_of.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
