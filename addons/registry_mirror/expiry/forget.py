"""Forgetting an image: an image deleted in Artifactory (a leaked secret, a vulnerability) stays pullable from the
mirror's storage, by tag too (the stock registry falls back to its own tag on any remote error), until it is
forgotten: removed from the storage and from the addon's caches.

`IMAGE` forgets every image of a repository, `IMAGE:TAG` the image a tag names (with every tag naming it),
`IMAGE@DIGEST` the image of that manifest (or the index holding it). Pure: the storage is read by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass

from registry_mirror.oci.registry_requests import TAG_RE, valid_digest, valid_name
from registry_mirror.storage.inventory import Image, Inventory


class TargetError(ValueError):
    """Not an image reference; the message says what would be right."""


@dataclass(frozen=True)
class Target:
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_target(text: str) -> Target:
    """`team/app`, `team/app:1.0` or `team/app@sha256:<hex>`."""
    name, at, digest = text.partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, _, tag = name.rpartition(":")
    if not valid_name(name) or (tag is not None and not TAG_RE.fullmatch(tag)) or (at and not valid_digest(digest)):
        raise TargetError(f"{text!r} is not an image to forget: team/app (every image of it), team/app:1.0 or "
                          f"team/app@sha256:<64 hex>")
    return Target(name, tag if not at else None, digest or None)


def images_named(inv: Inventory, target: Target) -> frozenset[Image]:
    """The images of the storage `target` names (none when the repository, tag or digest is not there)."""
    repository = inv.repositories.get(target.repository)
    if repository is None:
        return frozenset()
    mine = [image for image in inv.images if image.repository == target.repository]
    wanted = target.digest or (repository.tags.get(target.tag) if target.tag else None)
    if wanted is None:
        return frozenset() if target.tag or target.digest else frozenset(mine)
    manifest = wanted in inv.references  # a child of an index: the index goes with it; a layer names no image
    return frozenset(image for image in mine
                     if image.digest == wanted or (manifest and wanted in inv.image_blobs(image)))
