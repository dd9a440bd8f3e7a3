"""Blob data files a full disk left empty: the registry writes small files (manifests) in place, and a flush that
fails leaves a zero-length file that its next write skips because the file exists. The image then needs the
upstream on every pull, and fails during an outage after a restart. Removing such a file lets the next pull
store it again.

Only files empty for QUIET_SECONDS go: one the registry has just created is still being written.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

from registry_mirror.storage.layout import V2, blob_data, stored_digests

log = logging.getLogger(__name__)

QUIET_SECONDS = 60.0  # an empty data file this old is no write in progress
EMPTY_DIGESTS = frozenset(f"{name}:{hashlib.new(name, b'').hexdigest()}" for name in ("sha256", "sha384", "sha512"))


def empty_blobs(root: Path, now: float, quiet: float = QUIET_SECONDS) -> Iterator[Path]:
    """Zero-length data files of digests whose content is not empty, unchanged for `quiet` seconds."""
    for digest in stored_digests(root):
        if digest in EMPTY_DIGESTS:
            continue
        data = root / V2 / blob_data(digest)
        try:
            st = data.lstat()
        except OSError:
            continue
        if st.st_size == 0 and now - st.st_mtime >= quiet:
            yield data


def remove_empty_blobs(root: Path, now: float) -> int:
    """Removes the torn files `empty_blobs` finds; how many went."""
    removed = 0
    for data in empty_blobs(root, now):
        try:
            data.unlink()
        except OSError as e:
            log.warning("could not remove the empty blob data file %s: %s", data, e)
            continue
        removed += 1
        log.warning("removed %s: empty (a write a full disk cut short); the next pull stores it again", data)
    return removed
