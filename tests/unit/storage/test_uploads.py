"""Partial uploads the registry leaves: found in any repository, judged stale only when unchanged for a while,
removed with the bytes they held."""
import os

import pytest

from registry_mirror.storage.layout import V2
from registry_mirror.storage.uploads import QUIET_SECONDS, remove, stale, uploads

NOW = 1_800_000_000.0


def upload(root, repository: str, uuid: str, size: int, changed_at: float):
    folder = root / V2 / "repositories" / repository / "_uploads" / uuid
    (folder / "hashstates" / "sha256").mkdir(parents=True)
    for path, data in ((folder / "data", b"x" * size), (folder / "startedat", b"2026-12-07T00:00:00Z")):
        path.write_bytes(data)
        os.utime(path, (changed_at, changed_at))
    return folder


def test_uploads_are_found_in_nested_repositories_and_never_taken_for_repositories(tmp_path):
    upload(tmp_path, "team/app", "u1", 100, NOW)
    upload(tmp_path, "team/app/sub", "u2", 50, NOW)
    (tmp_path / V2 / "repositories" / "team/app/_layers").mkdir(parents=True)
    found = sorted((u.repository, u.path.name, u.bytes) for u in uploads(tmp_path))
    assert found == [("team/app", "u1", 100 + 20), ("team/app/sub", "u2", 50 + 20)]


@pytest.mark.parametrize("age,is_stale", [(0, False), (QUIET_SECONDS - 1, False), (QUIET_SECONDS, True),
                                          (86400, True)])
def test_an_upload_is_stale_only_when_unchanged_for_the_quiet_period(tmp_path, age, is_stale):
    upload(tmp_path, "team/app", "u1", 10, NOW - age)
    assert bool(stale(uploads(tmp_path), NOW)) is is_stale


def test_an_upload_still_written_is_not_stale_whatever_its_age(tmp_path):
    folder = upload(tmp_path, "team/app", "u1", 10, NOW - 86400)
    os.utime(folder / "data", (NOW - 5, NOW - 5))  # its data grew a moment ago
    assert stale(uploads(tmp_path), NOW) == []


def test_remove_frees_the_bytes_and_keeps_the_repository(tmp_path):
    folder = upload(tmp_path, "team/app", "u1", 1000, NOW - 86400)
    (found,) = stale(uploads(tmp_path), NOW)
    assert remove(found) == 1020 and not folder.exists() and folder.parent.exists()
    assert remove(found) == 0  # gone already


def test_no_storage_yet_has_no_uploads(tmp_path):
    assert list(uploads(tmp_path / "nothing")) == []
