"""Folders expiry emptied go once nothing has changed in them for a while, never one the registry may be writing
into, never a partial upload's."""
import os
import time

from registry_mirror.storage.empty_folders import QUIET_SECONDS, remove_empty_folders
from registry_mirror.storage.store import FolderStore
from tests.unit.support.storage import Storage


def age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_empty_folders_unchanged_for_a_while_go_a_whole_chain_at_once(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob()
    storage.image("team/app", [digest], tag="1.0")
    tag = storage.v2 / "repositories" / "team" / "app" / "_manifests" / "tags" / "1.0"
    for link in tag.rglob("link"):
        link.unlink()
    for folder in [tag, *tag.rglob("*")]:
        age(folder, QUIET_SECONDS + 1)
    assert remove_empty_folders(storage.root, time.time()) == 5  # index/sha256/<hex>, current and the tag
    assert not tag.exists() and tag.parent.is_dir()  # "tags" changed just now: it stays for another pass


def test_a_folder_just_emptied_or_made_stays(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    fresh = storage.v2 / "repositories" / "team" / "app" / "_layers" / "sha256" / ("ab" * 32)
    fresh.mkdir(parents=True)  # the registry made it and is about to write the link
    emptied = storage.v2 / "blobs" / "sha256" / "cd" / ("cd" * 32)
    emptied.mkdir(parents=True)
    assert remove_empty_folders(storage.root, time.time()) == 0
    assert fresh.is_dir() and emptied.is_dir()


def test_uploads_and_the_tops_are_never_removed(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    upload = storage.v2 / "repositories" / "team" / "app" / "_uploads" / "some-uuid"
    upload.mkdir(parents=True)
    (storage.v2 / "blobs").mkdir(parents=True)
    for folder in [storage.v2 / "blobs", *(storage.v2 / "repositories").rglob("*")]:
        age(folder, QUIET_SECONDS + 1)
    age(storage.v2 / "repositories", QUIET_SECONDS + 1)
    remove_empty_folders(storage.root, time.time())
    assert upload.is_dir() and (storage.v2 / "blobs").is_dir() and (storage.v2 / "repositories").is_dir()
