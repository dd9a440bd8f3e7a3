"""What the blob endpoint sends of a transfer, read as it reads it: the transfer's spans, from its spool."""
import os

from registry_mirror.blobs.transfers import Transfer


async def sent_bytes(transfer: Transfer, first: int, last: int):
    """Yield the bytes first..last (inclusive) of `transfer` as `spans` releases them (the endpoint sends the
    same spans with sendfile)."""
    with open(transfer.path, "rb") as spool:  # noqa: ASYNC230 - a local spool file: opens at once
        async for offset, count in transfer.spans(first, last):
            chunk = os.pread(spool.fileno(), count, offset)
            assert len(chunk) == count, "spool file shorter than its transfer"
            yield chunk
