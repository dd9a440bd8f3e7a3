"""Distribution 2.8's filesystem layout: the paths of links and data files, their inverses, and the listing of
the digests a storage holds, as the running registry leaves it."""
import os

import pytest

from registry_mirror.storage.layout import (
    V2,
    blob_aside,
    blob_data,
    is_digest,
    layer_link,
    layer_link_digest,
    linked_digest,
    revision_link,
    stored_digests,
    subdirs,
    tag_current_link,
    tag_index_link,
)

HEX = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
SHA = f"sha256:{HEX}"
SHA512 = "sha512:" + "cd" * 64


def test_paths_follow_the_registrys_layout():
    assert revision_link(SHA) == f"_manifests/revisions/sha256/{HEX}/link"
    assert layer_link(SHA) == f"_layers/sha256/{HEX}/link"
    assert tag_current_link("1.0") == "_manifests/tags/1.0/current/link"
    assert tag_index_link("1.0", SHA) == f"_manifests/tags/1.0/index/sha256/{HEX}/link"
    assert blob_data(SHA) == f"blobs/sha256/ab/{HEX}/data"
    assert blob_data(SHA512) == f"blobs/sha512/cd/{'cd' * 64}/data"
    assert blob_aside(SHA) == f"blobs/sha256/ab/{HEX}/data.evicting"  # beside the data: the registry never reads it
    assert V2.as_posix() == "docker/registry/v2"


@pytest.mark.parametrize("text,ok", [
    (SHA, True),
    (SHA512, True),
    ("sha256:" + "a" * 63, False),  # a known algorithm's length is enforced...
    ("sha512:" + "a" * 64, False),
    ("blake3:" + "a" * 64, True),  # ...an unknown one is read (skipping its folder could lose what it links)
    ("sha256:" + "A" * 64, False),
    ("sha256:" + "a" * 31, False),
    ("sha256" + "a" * 64, False),
    ("sha256:" + "a" * 64 + "/", False),
    ("", False),
])
def test_is_digest(text, ok):
    assert is_digest(text) is ok


@pytest.mark.parametrize("digest", [SHA, SHA512])
def test_a_link_path_names_the_digest_it_was_made_for(digest):
    assert linked_digest(layer_link(digest)) == digest
    assert linked_digest(revision_link(digest)) == digest
    assert layer_link_digest(layer_link(digest)) == digest
    assert layer_link_digest(revision_link(digest)) is None  # a manifest, not a layer


@pytest.mark.parametrize("link", [
    tag_current_link("1.0"),
    tag_index_link("1.0", SHA),
    f"_layers/sha256/{HEX}/data",
    f"_layers/sha256/{HEX}/extra/link",
    f"_layers/sha256/{HEX[:-1]}/link",
    "_layers/sha256/../link",
    f"_uploads/sha256/{HEX}/link",
])
def test_other_paths_name_no_digest(link):
    assert linked_digest(link) is None and layer_link_digest(link) is None


def put_data(root, digest: str) -> None:
    path = root / V2 / blob_data(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")


def test_stored_digests_lists_each_data_folder_and_skips_what_is_not_one(tmp_path):
    other = "sha256:" + "0f" * 32
    for digest in (SHA, other, SHA512):
        put_data(tmp_path, digest)
    blobs = tmp_path / V2 / "blobs"
    (blobs / "sha256" / "ab" / ("cd" + HEX[2:])).mkdir()  # under the wrong two-character folder
    (blobs / "sha256" / "ab" / "not-a-digest").mkdir()
    (blobs / "sha256" / "ab" / ("ab" + "0" * 62 + ".tmp")).write_bytes(b"a file, not a folder")
    (blobs / "sha256" / "ee").mkdir()  # emptied by a delete
    os.symlink(blobs / "sha256" / "ab" / HEX, blobs / "sha256" / "ab" / ("ab" + "1" * 62))
    assert list(stored_digests(tmp_path)) == [other, SHA, SHA512]  # sorted, one folder listing at a time


def test_a_storage_not_yet_written_has_no_digests(tmp_path):
    assert list(stored_digests(tmp_path)) == []
    assert subdirs(tmp_path / "missing") == []
    (tmp_path / "file").write_text("not a folder")
    assert subdirs(tmp_path / "file") == []
