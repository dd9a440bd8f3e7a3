"""Partial uploads the stock registry leaves in its storage: `repositories/<name>/_uploads/<uuid>/`.

Every cold fetch the registry does not finish (wrong or short bytes, a full disk, a crash, a stop) leaves one,
and the registry's own purger keeps them for days. An upload being written grows as its bytes arrive; one whose
files have not changed for QUIET_SECONDS is no transfer's any more (a stalled upstream is cut long before:
`upstream.blob_stall_timeout`, `upstream.blob_queue_timeout`) and is removed by the expiry's pass. Raising
those timeouts far above their defaults, or a forward clock step, can make a live upload look stale: its pull
fails and the client tries again.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from registry_mirror.storage.layout import V2, subdirs

log = logging.getLogger(__name__)

# an upload unchanged this long is a leftover: above the defaults' longest silence of a live one (a transfer in
# line for upstream.blob_queue_timeout, 300 s, then stalled blob_stall_timeout, 60 s, per resume)
QUIET_SECONDS = 3600.0
UPLOADS = "_uploads"
# the registry's own purger removes an upload this old even while written (cli/registry_config.py): a backstop far
# above any fetch; on a bucket, incomplete multipart uploads this old are aborted (storage/bucket_uploads.py)
PURGE_AGE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Upload:
    repository: str
    path: Path  # the upload's folder
    bytes: int
    changed_at: float  # the newest modification time of its files (epoch)


def uploads(root: Path) -> Iterator[Upload]:
    """Every partial upload under the registry's `rootdirectory`; what vanishes while read is skipped."""
    top = root / V2 / "repositories"
    for folder, names, _ in os.walk(top):
        if UPLOADS not in names:
            continue
        names.remove(UPLOADS)  # a repository's uploads are not repositories
        repository = os.path.relpath(folder, top)
        base = Path(folder, UPLOADS)
        for entry in subdirs(base):
            upload = _measure(repository, base / entry)
            if upload is not None:
                yield upload


def stale(found: Iterator[Upload] | list[Upload], now: float, quiet: float = QUIET_SECONDS) -> list[Upload]:
    """The uploads no transfer is writing any more: unchanged for `quiet` seconds before `now`."""
    return [u for u in found if now - u.changed_at >= quiet]


def remove(upload: Upload) -> int:
    """Removes a leftover upload; the bytes freed (0 when it was gone already or could not go)."""
    try:
        shutil.rmtree(upload.path)
    except FileNotFoundError:
        return 0
    except OSError as e:
        log.warning("could not remove the leftover upload %s: %s", upload.path, e)
        return 0
    log.info("removed a leftover upload of %s (%d bytes, unchanged since %.0f)", upload.repository, upload.bytes,
             upload.changed_at)
    return upload.bytes


def _measure(repository: str, path: Path) -> Upload | None:
    size, newest, seen = 0, 0.0, False
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            seen = True
            size += st.st_size
            newest = max(newest, st.st_mtime)
    if not seen:  # an empty folder: its own time says when it was made
        try:
            newest = path.lstat().st_mtime
        except OSError:
            return None
    return Upload(repository, path, size, newest)
