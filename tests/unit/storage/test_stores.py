"""Where the storage and the last pulls are found, a folder or a bucket, and what each is tidied of: a folder's
stale uploads, torn files and emptied folders; a bucket's stale upload objects (a bucket's times cannot be set: an
upload is made old by a `now` far ahead)."""
import os
import time
import uuid

import pytest

from registry_mirror.config.keys import S3Config
from registry_mirror.config.kinds import Secret
from registry_mirror.storage.bucket import Bucket
from registry_mirror.storage.bucket_store import BucketStore
from registry_mirror.storage.layout import REPOSITORIES, V2, blob_data, data_path, repository_path
from registry_mirror.storage.store import Entry, FolderStore
from registry_mirror.storage.stores import MIRROR_FOLDER, Tidied, open_stores, tidy_bucket, tidy_folder
from registry_mirror.storage.uploads import PURGE_AGE_SECONDS, QUIET_SECONDS

DAY = 86400.0
UPLOADS = {"team/app": {"u1/data": 1000, "u1/startedat": 20, "u1/hashstates/sha256/0": 100},
           "team/app/sub": {"u2/startedat": 20}}  # a nested repository's, its data a multipart upload yet


def write_uploads(store) -> None:
    for repository, files in UPLOADS.items():
        for path, size in files.items():
            store.write(repository_path(repository, f"_uploads/{path}"), b"x" * size)


def test_upload_objects_older_than_the_purge_age_go_and_are_counted(storage):
    """What the registry's purger would remove on a folder; on a bucket it is off, and the pass does it."""
    layer = storage.blob()
    storage.image("team/app", [layer], tag="1.0")
    write_uploads(storage.store)
    before = storage.tree()
    assert tidy_bucket(storage.store, time.time()) == Tidied()  # just written
    assert storage.tree() == before
    later = time.time() + PURGE_AGE_SECONDS + 60
    assert tidy_bucket(storage.store, later) == Tidied(uploads=2, upload_bytes=1140)
    assert storage.tree() == {path: data for path, data in before.items() if "/_uploads/" not in path}
    assert tidy_bucket(storage.store, later) == Tidied()


class Listed:
    """A storage's listing as given, every file changed at a time the test chooses."""

    def __init__(self, entries: list[Entry]):
        self.entries, self.deleted = entries, []

    def files(self, folder: str):
        return iter([e for e in self.entries if e.path.startswith(folder.rstrip("/") + "/")])

    def delete_folder(self, folder: str) -> int:
        self.deleted.append(folder)
        return sum(1 for e in self.entries if e.path.startswith(folder + "/"))


def test_an_upload_is_as_old_as_its_newest_object():
    now = 10 * DAY
    upload = repository_path("team/app", "_uploads/u1")
    listed = Listed([
        Entry(f"{upload}/startedat", 20, now - 2 * DAY),
        Entry(f"{upload}/hashstates/sha256/0", 100, now - 60),  # a chunk a minute ago: still written
        Entry(repository_path("team/app", "_uploads/u2/startedat"), 20, now - 2 * DAY),
        Entry(repository_path("team/app", "_uploads/stray"), 5, now - 2 * DAY),  # in no upload's folder
        Entry(repository_path("team/app", "_layers/sha256/aa/link"), 71, now - 2 * DAY)])
    assert tidy_bucket(listed, now) == Tidied(uploads=1, upload_bytes=20)
    assert listed.deleted == [repository_path("team/app", "_uploads/u2")]
    assert tidy_bucket(Listed(listed.entries), now, older_than=30) == Tidied(uploads=2, upload_bytes=140)


def test_a_folder_is_tidied_of_stale_uploads_torn_files_and_emptied_folders(folder_storage):
    storage, now = folder_storage, time.time()
    layer = storage.blob(100)
    storage.image("team/app", [layer], tag="1.0")
    uploads = storage.v2 / "repositories/team/app/_uploads"
    for name, changed_at in (("stale", now - QUIET_SECONDS - 60), ("written", now)):
        (uploads / name).mkdir(parents=True)
        (uploads / name / "data").write_bytes(b"x" * 1000)
        os.utime(uploads / name / "data", (changed_at, changed_at))
    torn = storage.root / V2 / blob_data("sha256:" + "a" * 64)
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"")
    os.utime(torn, (now - 3600, now - 3600))
    emptied = storage.v2 / "repositories/gone/_layers/sha256"
    emptied.mkdir(parents=True)
    os.utime(emptied, (now - 3600, now - 3600))
    os.utime(emptied.parent, (now - 3600, now - 3600))
    os.utime(emptied.parent.parent, (now - 3600, now - 3600))
    assert tidy_folder(storage.root, now) == Tidied(uploads=1, upload_bytes=1000, empty_files=1)
    assert not (uploads / "stale").exists() and (uploads / "written").exists() and not torn.exists()
    assert not (storage.v2 / "repositories/gone").exists() and storage.has(layer)


def test_on_a_folder_the_last_pulls_are_beside_the_storage(tmp_path):
    stores = open_stores(str(tmp_path / "storage"), None)
    assert isinstance(stores.registry, FolderStore) and stores.registry.root == tmp_path / "storage"
    stores.pulls.write("mirror.json", b"{}")
    assert (tmp_path / "storage.pulls" / "mirror.json").read_bytes() == b"{}"
    assert stores.tidy(time.time()) == Tidied()  # the folder's tidy: no storage yet, nothing to do


@pytest.mark.bucket
def test_on_a_bucket_the_storage_is_under_the_prefix_and_the_last_pulls_beside_it(tmp_path, object_store, s3):
    prefix = f"tests/{uuid.uuid4().hex}"
    keys = object_store.mirror_keys()
    bucket = Bucket(S3Config(bucket=keys["bucket"], endpoint=keys["endpoint"], prefix=prefix,
                             access_key=Secret(keys["access_key"]), secret_key=Secret(keys["secret_key"])))
    try:
        stores = open_stores(str(tmp_path / "storage"), bucket)
        stores.registry.write(data_path("sha256:" + "b" * 64), b"data")
        stores.pulls.write("mirror.json", b"{}")
        under = BucketStore(s3.client, s3.bucket, prefix)
        assert sorted(e.path for e in under.files("")) == [f"{MIRROR_FOLDER}/pulls/mirror.json",
                                                          data_path("sha256:" + "b" * 64)]
        assert stores.registry.name == f"bucket {s3.bucket}/{prefix}/"
        write_uploads(stores.registry)
        assert stores.tidy(time.time() + PURGE_AGE_SECONDS + 60) == Tidied(uploads=2, upload_bytes=1140)
        assert not list(under.files(REPOSITORIES)) and not (tmp_path / "storage").exists()
    finally:
        bucket.close()
