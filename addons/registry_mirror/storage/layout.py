"""Distribution 2.8's filesystem layout under `<root>/docker/registry/v2` (a link holds the bare digest text):

    repositories/<name>/_layers/<alg>/<hex>/link                        a blob linked to the repository
    repositories/<name>/_manifests/revisions/<alg>/<hex>/link           a manifest the repository has
    repositories/<name>/_manifests/tags/<tag>/current/link              the tag's manifest
    repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link    the tag's history
    blobs/<alg>/<hex[:2]>/<hex>/data                                    the bytes of every blob and manifest
    blobs/<alg>/<hex[:2]>/<hex>/data.evicting                           the mirror's: data an expiry pass set aside

Link paths are relative to a repository's folder, data paths to the v2 folder. The mirror keeps two files of
its own beside the storage: `<storage>.pulls/` (each replica's last pulls) and `<storage>.notify-secret`.
This is the one module that builds paths from `mirror.storage` (tests/unit/test_storage_seam.py checks).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from registry_mirror.oci.registry_requests import DIGEST_HEX_LENGTHS

V2 = Path("docker", "registry", "v2")
# any algorithm folder is read: skipping one would miss the links in it, and then data they name could go
DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-f]{32,}")


def is_digest(text: str) -> bool:
    if not DIGEST.fullmatch(text):
        return False
    algorithm, hex_ = text.split(":")
    return len(hex_) == DIGEST_HEX_LENGTHS.get(algorithm, len(hex_))


def revision_link(digest: str) -> str:
    return "_manifests/revisions/{}/{}/link".format(*digest.split(":"))


def layer_link(digest: str) -> str:
    return "_layers/{}/{}/link".format(*digest.split(":"))


def tag_current_link(tag: str) -> str:
    return f"_manifests/tags/{tag}/current/link"


def tag_index_link(tag: str, digest: str) -> str:
    return "_manifests/tags/{}/index/{}/{}/link".format(tag, *digest.split(":"))


def blob_data(digest: str) -> str:
    """The data file of a blob or manifest, relative to the v2 directory."""
    algorithm, hex_ = digest.split(":")
    return f"blobs/{algorithm}/{hex_[:2]}/{hex_}/data"


def blob_file(root: Path, digest: str) -> Path:
    """The data file of a blob or manifest in the storage under `root`."""
    return root / V2 / blob_data(digest)


def pulls_folder(storage: str) -> Path:
    """Where every replica's file of last pulls lives: next to the storage they share."""
    return Path(storage.rstrip("/") + ".pulls")


def secret_file(storage: str) -> Path:
    """The registry's notification secret, shared by the replicas of one storage."""
    return Path(storage.rstrip("/") + ".notify-secret")


def blob_aside(digest: str) -> str:
    """Where an expiry pass moves blob data it is about to delete (storage/eviction.py); the registry never reads it."""
    return blob_data(digest) + ASIDE_SUFFIX


ASIDE_SUFFIX = ".evicting"
REPOSITORIES = f"{V2.as_posix()}/repositories"  # the store paths (storage/store.py) of the two trees
BLOBS = f"{V2.as_posix()}/blobs"


def data_path(digest: str) -> str:
    """A blob's data file as a store path."""
    return f"{V2.as_posix()}/{blob_data(digest)}"


def aside_path(digest: str) -> str:
    return f"{V2.as_posix()}/{blob_aside(digest)}"


def repository_path(repository: str, link: str) -> str:
    """A file of a repository (`link` relative to its folder) as a store path."""
    return f"{REPOSITORIES}/{repository}/{link}"


def tag_path(repository: str, tag: str) -> str:
    """Everything the registry keeps of a tag, as a store path."""
    return repository_path(repository, f"_manifests/tags/{tag}")


def in_repository(path: str) -> tuple[str, str] | None:
    """(repository, the file's path inside its folder) of a store path under `repositories/`, else None. A name
    has any number of components, none starting with '_': the first that does begins the repository's own files."""
    parts = path.removeprefix(REPOSITORIES + "/").split("/") if path.startswith(REPOSITORIES + "/") else []
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return ("/".join(parts[:i]), "/".join(parts[i:])) if i else None
    return None


def tag_link(link: str) -> tuple[str, str | None] | None:
    """(tag, None) for a tag's current link, (tag, digest) for an entry of its history, else None."""
    parts = link.split("/")
    if parts[:2] != ["_manifests", "tags"] or parts[-1:] != ["link"] or len(parts) < 5:
        return None
    if len(parts) == 5 and parts[3] == "current":
        return parts[2], None
    if len(parts) == 7 and parts[3] == "index" and is_digest(digest := f"{parts[4]}:{parts[5]}"):
        return parts[2], digest
    return None


def stored_file(path: str) -> tuple[str, bool] | None:
    """(digest, whether it is data set aside) of a store path under `blobs/` that is a blob's data, else None."""
    parts = path.removeprefix(BLOBS + "/").split("/") if path.startswith(BLOBS + "/") else []
    if len(parts) != 4 or parts[3] not in ("data", "data" + ASIDE_SUFFIX) or not parts[2].startswith(parts[1]):
        return None
    digest = f"{parts[0]}:{parts[2]}"
    return (digest, parts[3] != "data") if is_digest(digest) else None


def linked_digest(link: str) -> str | None:
    """The digest a layer or revision link's path names (`layer_link`'s and `revision_link`'s inverse), else None."""
    for folder in ("_layers/", "_manifests/revisions/"):
        if link.startswith(folder):
            parts = link.removeprefix(folder).split("/")
            if len(parts) == 3 and parts[2] == "link" and is_digest(f"{parts[0]}:{parts[1]}"):
                return f"{parts[0]}:{parts[1]}"
    return None


def layer_link_digest(link: str) -> str | None:
    """The digest a layer link's path names (`layer_link`'s inverse), else None."""
    return linked_digest(link) if link.startswith("_layers/") else None


def stored_digests(root: Path) -> Iterator[str]:
    """Every digest whose data folder the storage under `root` has, one folder listing at a time (the registry
    keeps writing meanwhile: what vanishes is skipped)."""
    blobs = root / V2 / "blobs"
    for algorithm in subdirs(blobs):
        for prefix in subdirs(blobs / algorithm):
            for hex_ in subdirs(blobs / algorithm / prefix):
                if hex_.startswith(prefix) and is_digest(digest := f"{algorithm}:{hex_}"):
                    yield digest


def subdirs(path: Path) -> list[str]:
    """The folders in `path`, sorted; none when it cannot be read."""
    try:
        with os.scandir(path) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []
