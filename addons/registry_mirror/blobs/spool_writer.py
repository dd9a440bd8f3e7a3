"""Writes a transfer's bytes into its spool as they come, and checks them against the digest at the end."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import BinaryIO

from registry_mirror.blobs.transfers import Transfer, TransferFailed
from registry_mirror.oci.digests import UncheckableDigest, digest_hasher


class DigestMismatch(TransferFailed):
    """The bytes, in full, are not the digest's: `actual` is theirs."""

    def __init__(self, message: str, actual: str):
        super().__init__(message)
        self.actual = actual


async def write_verified(transfer: Transfer, chunks: AsyncGenerator[bytes, None]) -> None:
    """Tee `chunks` into the spool, waking its readers; TransferFailed unless they are the digest's bytes, in
    full. On success the transfer is verified."""
    try:
        hasher = digest_hasher(transfer.digest)
    except UncheckableDigest as e:
        raise TransferFailed(str(e)) from e
    # unbuffered: the file always holds `written`. "r+b", not "wb": on ext4 a truncate-to-empty marks the file
    # for a flush on close (auto_da_alloc), which would write the short-lived spool to disk just as the
    # registry and its clients fsync their copies; untruncated, it stays in the page cache
    # aclosing: a failed write (a full spool disk) ends the fill at once, its upstream slot and response with it
    async with contextlib.aclosing(chunks):
        with open(transfer.path, "r+b", buffering=0) as spool:  # noqa: ASYNC230 - local, opens at once
            async for chunk in chunks:
                _write_all(spool, chunk)
                hasher.update(chunk)
                transfer.wrote(len(chunk))
    if transfer.size is not None and transfer.written != transfer.size:
        raise TransferFailed(f"upstream sent {transfer.written} of {transfer.size} bytes")
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    if actual != transfer.digest:
        raise DigestMismatch(f"upstream bytes do not match {transfer.digest} (got {actual}); discarded", actual)
    transfer.verified = True


def _write_all(spool: BinaryIO, data: bytes) -> None:
    written = spool.write(data)  # an unbuffered file writes it whole, all but always
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[spool.write(view):]
