"""Where the mirror finds the registry's storage and its own shared state, a folder or a bucket alike
(storage/store.py), and how each is tidied of what interrupted writes leave.

On a folder: the storage at `mirror.storage`, the last pulls beside it (`<storage>.pulls/`). On a bucket: the
storage under `mirror.s3.prefix`, the last pulls beside it (`<prefix>/artifactory-mirror/pulls/`), so that a
replica needs no local path that outlives it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry_mirror.storage import torn_files, uploads
from registry_mirror.storage.bucket import Bucket
from registry_mirror.storage.empty_folders import remove_empty_folders
from registry_mirror.storage.layout import REPOSITORIES, in_repository, pulls_folder
from registry_mirror.storage.store import FolderStore, Store

log = logging.getLogger(__name__)

MIRROR_FOLDER = "artifactory-mirror"  # the mirror's own objects in a bucket, beside the registry's `docker/`


@dataclass
class Tidied:
    uploads: int = 0  # partial uploads removed
    upload_bytes: int = 0
    empty_files: int = 0  # blob data files a full disk left empty


@dataclass(frozen=True)
class Stores:
    registry: Store  # the registry's storage
    pulls: Store  # every replica's last pulls (expiry/last_pulls.py)
    tidy: Callable[[float], Tidied]  # removes the leftovers of interrupted writes, given the wall clock's now


def open_stores(storage: str, bucket: Bucket | None) -> Stores:
    """The folder `storage` (`mirror.storage`), or the bucket's when there is one (`mirror.s3`)."""
    if bucket is not None:
        registry = bucket.store()
        return Stores(registry, bucket.store(f"{MIRROR_FOLDER}/pulls"), lambda now: tidy_bucket(registry, now))
    root = Path(storage)
    return Stores(FolderStore(root), FolderStore(pulls_folder(storage)), lambda now: tidy_folder(root, now))


def tidy_folder(root: Path, now: float) -> Tidied:
    """Uploads no transfer writes any more, data files a full disk left empty, folders emptied a while ago."""
    tidied = Tidied()
    for upload in uploads.stale(uploads.uploads(root), now):
        if freed := uploads.remove(upload):
            tidied.uploads += 1
            tidied.upload_bytes += freed
    tidied.empty_files = torn_files.remove_empty_blobs(root, now)
    remove_empty_folders(root, now)
    return tidied


def tidy_bucket(store: Store, now: float, older_than: float = uploads.PURGE_AGE_SECONDS) -> Tidied:
    """The objects of uploads begun `older_than` ago and unchanged since: what the registry's purger removes on a
    folder (it is off on a bucket: cli/registry_config.py). Their data, a multipart upload, is invisible to a
    listing; storage/bucket_uploads.py aborts those. No folders and no torn files on a bucket: a PUT is whole."""
    newest: dict[str, tuple[float, int]] = {}  # the upload's folder -> (its newest change, its bytes)
    for entry in store.files(REPOSITORIES):
        found = in_repository(entry.path)
        if found is None or not found[1].startswith(uploads.UPLOADS + "/") or found[1].count("/") < 2:
            continue
        folder = entry.path.rsplit("/", found[1].count("/") - 1)[0]  # .../_uploads/<id>
        at, size = newest.get(folder, (0.0, 0))
        newest[folder] = (max(at, entry.changed), size + entry.size)
    tidied = Tidied()
    for folder, (at, size) in sorted(newest.items()):
        if now - at >= older_than and store.delete_folder(folder):
            tidied.uploads += 1
            tidied.upload_bytes += size
            log.info("removed a leftover upload %s (%d bytes)", folder, size)
    return tidied
