"""A tag removed from the registry's storage (its image stays, by digest): the upstream deleted the tag."""
from __future__ import annotations

import shutil
from pathlib import Path

from registry_mirror.storage.layout import tag_folder


def drop_tag(root: Path, repository: str, tag: str, digest: str | None = None) -> bool:
    """Removes the tag's links; with `digest`, only while the tag still names it (a tag deleted and pushed again
    keeps its new image). Whether it went."""
    folder = tag_folder(root, repository, tag)
    try:
        if digest is not None and (folder / "current" / "link").read_text().strip() != digest:
            return False
    except OSError:
        return False
    if not folder.is_dir():
        return False
    shutil.rmtree(folder, ignore_errors=True)  # a single tag: no pass need wait for it, nor it for a pass
    return True
