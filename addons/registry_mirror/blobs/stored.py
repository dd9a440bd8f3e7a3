"""Blobs the stock registry has stored already, served from its storage instead of fetched again.

The registry looks blobs up per repository, so a base layer it stored for one repository is asked for again
when another repository's image uses it; the bytes are here already. It asked the upstream for the blob's HEAD
in that repository first, so the upstream still decides which repositories have it.

A stored file is whole (the registry commits a blob by renaming it into place) but not necessarily right: a
flipped bit or a bad sector since. So it is hashed as it is sent, through the transfer mechanism of upstream
fetches (blobs/transfers.py): the bytes hashed so far are readable, the last one is held back until the verdict,
and a mismatch ends the answer short, so the registry stores nothing (blobs/stored_verifier.py then moves the file
aside). The hash reads the file a second time, from the page cache the sends fill, by offset: sendfile moves
the file's position.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import BinaryIO

from registry_mirror.blobs.transfers import Transfer, UpstreamHead
from registry_mirror.oci.digests import digest_hasher
from registry_mirror.oci.registry_requests import SHA256_RE, RegistryRequest
from registry_mirror.storage.layout import blob_file
from registry_mirror.storage.verify import CHUNK, hash_chunk


def stored_path(storage: Path | None, digest: str) -> Path | None:
    """Where the registry's filesystem storage keeps the blob's bytes (None: no storage, or not sha256)."""
    if storage is None or not SHA256_RE.fullmatch(digest):  # the only layout looked up: sha256/<hex>
        return None
    return blob_file(storage, digest)


def open_stored(storage: Path | None, digest: str) -> BinaryIO | None:
    """The blob's file in the registry's filesystem storage, open, or None."""
    path = stored_path(storage, digest)
    if path is None:
        return None
    try:
        return open(path, "rb")
    except OSError:  # not stored (or being removed by the registry's expiry): from the upstream
        return None


def stored_transfer(req: RegistryRequest, stored: BinaryIO) -> Transfer:
    """A stored blob as a transfer whose bytes are all there but not yet checked: `hash_as_sent` checks them.
    Its path is the stored file itself, so it is settled by setting `verified` or `error`, never by
    `Transfer.fail` (which deletes its path)."""
    size = os.fstat(stored.fileno()).st_size
    transfer = Transfer(req.reference, req.name, Path(stored.name), size=size)
    transfer.head.set_result(UpstreamHead(200, {"Content-Type": "application/octet-stream",
                                                "Docker-Content-Digest": req.reference, "Accept-Ranges": "bytes"}))
    return transfer


async def hash_as_sent(transfer: Transfer, stored: BinaryIO) -> str:
    """Hash the stored file into `transfer`, a CHUNK at a time in a thread, making each chunk readable once
    hashed; the digest of the bytes read (the transfer's verdict is the caller's). OSError if the file cannot
    be read."""
    size = transfer.size
    assert size is not None, "a stored blob's transfer has its size (stored_transfer)"
    fd, hasher, buffer = stored.fileno(), digest_hasher(transfer.digest), bytearray(CHUNK)
    while transfer.written < size:
        count = await asyncio.to_thread(hash_chunk, fd, hasher, buffer, transfer.written)
        if count == 0:  # shorter than when it was opened
            break
        transfer.wrote(count)
    return f"{hasher.name}:{hasher.hexdigest()}"
