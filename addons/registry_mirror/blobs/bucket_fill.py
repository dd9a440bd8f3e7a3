"""Fills a transfer from the bucket that holds the registry's storage (`mirror.s3`): a layer another repository
brought in is read from there instead of fetched from the upstream again (blobs/stored.py does this for a storage
folder). The registry still asked the upstream for the blob's HEAD in this repository, so the upstream decides
which repositories have it.

An object is whole (the registry commits a blob by copying it into place) but not necessarily right, so it is
hashed as read, the last chunk held back: a mismatch fails the transfer before its end, so the registry stores
nothing, and moves the object aside, so the next pull fetches a good copy from the upstream. A read that fails
(the store away, the object gone meanwhile) is no mismatch: blobs/fill.py has the upstream send the rest.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable

from registry_mirror.blobs.transfers import Transfer, TransferFailed, UpstreamHead
from registry_mirror.oci.digests import digest_hasher
from registry_mirror.redact import error_text
from registry_mirror.storage.bucket import Bucket, BucketError
from registry_mirror.storage.verify import CHUNK, Checked

FROM_STORAGE = "storage"  # a transfer's origin when its bytes come from the mirror's own storage


class BucketReadFailed(TransferFailed):
    """The bucket could not be read (the bytes read so far are right): the upstream can send the rest."""


async def from_bucket(transfer: Transfer, bucket: Bucket, size: int,
                      on_checked: Callable[[Checked], None]) -> AsyncGenerator[bytes, None]:
    """The blob's `size` bytes from the bucket; `on_checked` is told how they compared with the digest."""
    digest = transfer.digest
    try:
        body = await asyncio.to_thread(bucket.open_blob, digest)
    except BucketError as e:
        raise BucketReadFailed(str(e)) from e
    transfer.origin, transfer.size = FROM_STORAGE, size
    transfer.head.set_result(UpstreamHead(200, {"Content-Type": "application/octet-stream",
                                                "Docker-Content-Digest": digest}))
    hasher, held, read = digest_hasher(digest), b"", 0
    try:
        while chunk := await asyncio.to_thread(body.read, CHUNK):
            hasher.update(chunk)
            read += len(chunk)
            if held:
                yield held
            held = chunk
    except Exception as e:  # the store's or the connection's (botocore's are not all OSErrors)
        raise BucketReadFailed(f"reading {digest} from bucket {bucket.name!r} failed after {read} bytes: "
                               f"{error_text(e)}") from e
    finally:
        with contextlib.suppress(Exception):
            body.close()  # never blocks: it drops the connection
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    if actual != digest:
        moved = await asyncio.to_thread(bucket.quarantine, digest)
        on_checked(Checked(digest, read, actual, moved))
        raise TransferFailed(f"{digest} in bucket {bucket.name!r} is corrupt: {read} bytes read as {actual}")
    if read != size:  # the bytes are right, the HEAD before them was not
        raise TransferFailed(f"{digest} in bucket {bucket.name!r}: {read} bytes where its HEAD said {size}")
    on_checked(Checked(digest, read, actual))
    if held:
        yield held
