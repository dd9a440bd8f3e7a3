"""A tag removed from the registry's storage (its image stays, by digest): the upstream deleted the tag."""
from __future__ import annotations

from registry_mirror.storage.layout import repository_path, tag_current_link, tag_path
from registry_mirror.storage.store import Store


def drop_tag(store: Store, repository: str, tag: str, digest: str | None = None) -> bool:
    """Removes the tag's links; with `digest`, only while the tag still names it (a tag deleted and pushed again
    keeps its new image). Whether it went."""
    if digest is not None:
        current = store.read(repository_path(repository, tag_current_link(tag)), 256)
        if current is None or current.decode("ascii", "replace").strip() != digest:
            return False
    # a single tag: no pass need wait for it, nor it for a pass
    return store.delete_folder(tag_path(repository, tag)) > 0
