"""Blob data that failed its digest, moved aside: the registry then finds no data for the digest and fetches
it again from its remote on the next pull, in any repository (goharbor/harbor#23600: a cache that keeps bad
bytes serves them for ever). Distribution never replaces a data file that exists ("corruption detection
belongs elsewhere", its `blobWriter.moveBlob`), so moving it is the only way a good copy gets in.

The folder is `<storage>/docker/registry/v2/quarantine/`: on the storage's filesystem, so a move is a rename,
never a copy; beside `blobs/` and `repositories/`, the only folders the registry and storage/inventory.py
walk, so neither sees what is in it. The newest KEEP files stay for whoever investigates; older ones go.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from registry_mirror.storage.layout import V2, blob_data

log = logging.getLogger(__name__)

KEEP = 8  # files kept in the folder; a corrupt base layer is one file, whatever repositories share it


def folder(root: Path) -> Path:
    """The quarantine folder of the storage under the registry's `rootdirectory` `root`."""
    return root / V2 / "quarantine"


def file_name(digest: str, now: float) -> str:
    """`<UTC time>-<algorithm>-<hex>`: the folder lists oldest first."""
    algorithm, hex_ = digest.split(":")
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{algorithm}-{hex_}"


def move_aside(root: Path, digest: str, hashed: os.stat_result, now: float) -> Path | None:
    """Move the blob's data file into the quarantine folder if it is still the file that was hashed (`hashed`:
    its stat); where it went, or None when it is gone, another file is there already (the registry stored a
    good copy meanwhile: that one stays), or it cannot be moved (logged)."""
    source = root / V2 / blob_data(digest)
    try:
        current = os.stat(source)
    except FileNotFoundError:
        return None
    if (current.st_dev, current.st_ino) != (hashed.st_dev, hashed.st_ino):
        return None
    target_folder = folder(root)
    target = target_folder / file_name(digest, now)
    n = 1
    while target.exists():  # the same digest twice within a second: both copies stay
        n += 1
        target = target_folder / f"{file_name(digest, now)}-{n}"
    try:
        target_folder.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
    except FileNotFoundError:  # removed by an expiry pass since the stat
        return None
    except OSError as e:
        log.error("cannot move the corrupt %s aside to %s: %s; it is served until it is removed", source,
                  target, e)
        return None
    prune(target_folder, KEEP)
    return target


def prune(path: Path, keep: int) -> None:
    """Delete all but the newest `keep` files of the folder (by name: the time comes first)."""
    try:
        names = sorted(entry.name for entry in os.scandir(path) if entry.is_file(follow_symlinks=False))
    except OSError:
        return
    for name in names[:max(0, len(names) - keep)]:
        try:
            (path / name).unlink()
        except OSError as e:
            log.warning("cannot delete %s from the quarantine: %s", path / name, e)
