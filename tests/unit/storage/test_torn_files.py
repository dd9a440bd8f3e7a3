"""Blob data files a full disk left empty go once they have stayed empty a while; the empty blob itself stays."""
import os

import pytest

from registry_mirror.storage.layout import V2, blob_data
from registry_mirror.storage.torn_files import EMPTY_DIGESTS, QUIET_SECONDS, empty_blobs, remove_empty_blobs

NOW = 1_800_000_000.0
TORN = "sha256:" + "a" * 64


def data_file(root, digest: str, content: bytes, changed_at: float):
    path = root / V2 / blob_data(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    os.utime(path, (changed_at, changed_at))
    return path


@pytest.mark.parametrize("content,age,found", [
    (b"", QUIET_SECONDS, True),  # torn: empty for a while
    (b"", QUIET_SECONDS - 1, False),  # maybe being written right now
    (b"{}", 86400, False),  # not empty
])
def test_an_empty_data_file_is_torn_once_it_stayed_empty(tmp_path, content, age, found):
    path = data_file(tmp_path, TORN, content, NOW - age)
    assert list(empty_blobs(tmp_path, NOW)) == ([path] if found else [])


def test_the_empty_blob_itself_is_never_torn(tmp_path):
    for digest in EMPTY_DIGESTS:
        data_file(tmp_path, digest, b"", NOW - 86400)
    assert list(empty_blobs(tmp_path, NOW)) == []


def test_removing_torn_files_counts_them_and_keeps_the_rest(tmp_path):
    torn = data_file(tmp_path, TORN, b"", NOW - 86400)
    kept = data_file(tmp_path, "sha256:" + "b" * 64, b"layer", NOW - 86400)
    assert remove_empty_blobs(tmp_path, NOW) == 1
    assert not torn.exists() and kept.exists()
