"""Folders of the registry's storage that expiry emptied: removed once nothing has changed in them for
QUIET_SECONDS. Never at once: the registry makes a link's or a blob's folder, then opens the file in it, and a
folder removed between the two fails that write (a pull by tag answered 500, seen under load). A folder
untouched for a minute is no write in progress. Partial uploads (`_uploads`) are storage/uploads.py's."""
from __future__ import annotations

import os
from pathlib import Path

from registry_mirror.storage.layout import V2

QUIET_SECONDS = 60.0


def remove_empty_folders(root: Path, now: float, quiet: float = QUIET_SECONDS) -> int:
    """Removes the empty folders under the storage's repositories and blobs unchanged for `quiet` seconds, a chain
    of them at once (each judged by its time before this began); how many went."""
    removed = 0
    for top in (root / V2 / "repositories", root / V2 / "blobs"):
        changed = {}
        for folder, subfolders, _ in os.walk(top):
            subfolders[:] = [name for name in subfolders if name != "_uploads"]
            try:
                changed[folder] = os.stat(folder).st_mtime
            except OSError:
                pass
        for folder in sorted(changed, key=len, reverse=True):  # the deepest first
            if folder == str(top) or now - changed[folder] < quiet:
                continue
            try:
                os.rmdir(folder)
                removed += 1
            except OSError:  # not empty, or gone
                pass
    return removed
