"""The registry's blob data files checked against their digests, in bounded memory: one CHUNK at a time.

A data file is named by its digest, so its bytes are right or it is corrupt (a bad sector, a flipped bit, a
file torn by a crash). A corrupt one is moved aside (storage/quarantine.py). Used by the background checks after the
registry's pulls (blobs/stored_verifier.py) and by `artifactory-mirror verify` (one pass over the whole storage); the
blob endpoint hashes what it sends as it sends it (blobs/stored.py). Blocking: call it from a thread.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from registry_mirror.oci.digests import digest_hasher
from registry_mirror.oci.registry_requests import DIGEST_HEX_LENGTHS
from registry_mirror.storage import layout as storage_layout
from registry_mirror.storage import quarantine
from registry_mirror.storage.layout import V2, blob_data

CHUNK = 1 << 20


@dataclass(frozen=True)
class Checked:
    """One data file read to its end (or as far as it could be read)."""
    digest: str
    size: int  # bytes read
    actual: str  # the digest of those bytes, or why they could not be read or checked
    moved_to: Path | str | None = None  # where a mismatch went, a path or a bucket's key (None: it matched, or was
    # gone or replaced)

    @property
    def ok(self) -> bool:
        return self.actual == self.digest


def hash_chunk(fd: int, hasher, buffer: bytearray, offset: int) -> int:
    """Read up to len(buffer) bytes at `offset` (never moving the file's position: sendfile uses it) into the
    hash; the count read, 0 at the end."""
    count = os.preadv(fd, [buffer], offset)
    hasher.update(memoryview(buffer)[:count])
    return count


def file_digest(fd: int, digest: str) -> tuple[str, int]:
    """(the digest of the file's bytes, in `digest`'s algorithm; their count)."""
    hasher, buffer, offset = digest_hasher(digest), bytearray(CHUNK), 0
    while count := hash_chunk(fd, hasher, buffer, offset):
        offset += count
    return f"{hasher.name}:{hasher.hexdigest()}", offset


def verify_stored(root: Path, digest: str, now: float) -> Checked | None:
    """Hash the blob's data file; a mismatch, or a file that cannot be read (EIO), is moved aside. None when the
    storage holds no such file (never stored, or removed by an expiry pass), or when it changed while it was
    read: the registry writes a manifest's data in place (once, when it first stores it), and a file being
    written is no verdict. UncheckableDigest for an algorithm the mirror does not hash with."""
    path = root / V2 / blob_data(digest)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        hashed = os.fstat(fd)
        if hashed.st_size == 0:  # created and not written yet, or torn by a full disk: storage/torn_files.py judges it
            return None
        try:
            actual, size = file_digest(fd, digest)
        except OSError as e:  # a bad sector: it never serves the digest's bytes
            actual, size = f"unreadable: {e.strerror or e}", 0
        if actual == digest:
            return Checked(digest, size, actual)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (hashed.st_size, hashed.st_mtime_ns):
            return None
        return Checked(digest, size, actual, quarantine.move_aside(root, digest, hashed, now))
    finally:
        os.close(fd)


def checkable(digest: str) -> bool:
    """Whether the mirror hashes with the digest's algorithm (Distribution stores sha256 alone)."""
    return digest.partition(":")[0] in DIGEST_HEX_LENGTHS


def stored_digests(root: Path) -> Iterator[str]:
    """The stored digests the mirror can check."""
    return filter(checkable, storage_layout.stored_digests(root))


def verify_storage(root: Path, clock) -> Iterator[Checked]:
    """One pass over every data file of the storage (`clock()`: wall-clock time, for quarantine names); files
    removed during the pass are skipped."""
    for digest in stored_digests(root):
        if (checked := verify_stored(root, digest, clock())) is not None:
            yield checked
