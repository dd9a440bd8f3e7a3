"""Fills a transfer from the bucket that holds the registry's storage (`mirror.s3`): a layer another repository
brought in is read from there instead of fetched from the upstream again (blobs/stored.py does this for a storage
folder). The registry still asked the upstream for the blob's HEAD in this repository, so the upstream decides
which repositories have it.

An object is whole (the registry commits a blob by copying it into place) but not necessarily right: the bytes are
checked as every fill's are (blobs/spool_writer.py, the last byte held back until the verdict), and a mismatch
fails the transfer, so the registry stores nothing; blobs/fill.py then moves the object aside, so the next pull
fetches a good copy from the upstream. A read that fails (the store away, the object gone meanwhile) is no
mismatch: blobs/fill.py has the upstream send the rest.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from registry_mirror.blobs.transfers import Transfer, TransferFailed, UpstreamHead
from registry_mirror.redact import error_text
from registry_mirror.storage.bucket import Bucket, BucketError
from registry_mirror.storage.verify import CHUNK

FROM_STORAGE = "storage"  # a transfer's origin when its bytes come from the mirror's own storage


class BucketReadFailed(TransferFailed):
    """The bucket could not be read (the bytes read so far are right): the upstream can send the rest."""


async def from_bucket(transfer: Transfer, bucket: Bucket, size: int) -> AsyncGenerator[bytes, None]:
    """The blob's `size` bytes from the bucket, as read."""
    digest = transfer.digest
    try:
        body = await asyncio.to_thread(bucket.open_blob, digest)
    except BucketError as e:
        raise BucketReadFailed(str(e)) from e
    transfer.origin, transfer.size = FROM_STORAGE, size
    transfer.head.set_result(UpstreamHead(200, {"Content-Type": "application/octet-stream",
                                                "Docker-Content-Digest": digest}))
    read = 0
    try:
        while chunk := await asyncio.to_thread(body.read, CHUNK):
            read += len(chunk)
            yield chunk
    except Exception as e:  # the store's or the connection's (botocore's are not all OSErrors)
        raise BucketReadFailed(f"reading {digest} from bucket {bucket.name!r} failed after {read} bytes: "
                               f"{error_text(e)}") from e
    finally:
        with contextlib.suppress(Exception):
            body.close()  # never blocks: it drops the connection
