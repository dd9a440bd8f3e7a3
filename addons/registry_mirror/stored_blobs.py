"""Blobs the stock registry has stored already, served from its storage instead of fetched again.

The registry looks blobs up per repository, so a base layer it stored for one repository is asked for again
when another repository's image uses it; the bytes are here already. They were checked against their digest
when the registry stored them (it commits a blob by renaming it into place, so a file here is whole), and the
registry checks them again as it links them to the new repository. It asked the upstream for the blob's HEAD
in that repository first, so the upstream still decides which repositories have it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from .requests import SHA256_RE, RegistryRequest
from .storage_layout import V2, blob_data
from .transfers import Transfer, UpstreamHead


def stored_path(storage: Path | None, digest: str) -> Path | None:
    """Where the registry's filesystem storage keeps the blob's bytes (None: no storage, or not sha256)."""
    if storage is None or not SHA256_RE.fullmatch(digest):  # the only layout looked up: sha256/<hex>
        return None
    return storage / V2 / blob_data(digest)


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
    """A stored blob as a finished, verified transfer: served like any spool."""
    size = os.fstat(stored.fileno()).st_size
    transfer = Transfer(req.reference, req.name, Path(stored.name), size=size, written=size, verified=True)
    transfer.head.set_result(UpstreamHead(200, {"Content-Type": "application/octet-stream",
                                                "Docker-Content-Digest": req.reference, "Accept-Ranges": "bytes"}))
    return transfer
