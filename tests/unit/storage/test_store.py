"""The storage seam's contract (storage/store.py), one suite for a folder and a bucket (a real S3-compatible store):
what the expiry, `forget`, the scrub and the last pulls count on, whichever holds the registry's storage."""
import time

import pytest

FILES = {"a/b/c/deep": b"deep", "a/top": b"top", "a/.hidden": b"dot", "a/empty": b"", "ab/sibling": b"sib"}


@pytest.fixture
def filled(store):
    for path, data in FILES.items():
        store.write(path, data)
    return store


def listed(store, folder: str = "") -> dict[str, int]:
    return {entry.path: entry.size for entry in store.files(folder)}


def test_files_lists_every_file_under_a_folder_at_any_depth_with_its_size(filled):
    assert listed(filled) == {path: len(data) for path, data in FILES.items()}  # dotfiles and empty ones too
    assert listed(filled, "a") == {"a/b/c/deep": 4, "a/top": 3, "a/.hidden": 3, "a/empty": 0}  # not `ab`
    assert listed(filled, "a/") == listed(filled, "a") and listed(filled, "a/b") == {"a/b/c/deep": 4}
    assert listed(filled, "nowhere") == {} and listed(filled, "a/top") == {}  # a file is no folder


def test_a_files_change_is_its_writes_wall_clock_time(store):
    before = time.time()
    store.write("f", b"x")
    (entry,) = store.files("")
    assert before - 2 <= entry.changed <= time.time() + 2  # a bucket's times are whole seconds


def test_read_gives_up_to_limit_bytes_none_when_missing_and_empty_bytes_for_an_empty_file(filled):
    assert filled.read("a/top", 2) == b"to" and filled.read("a/top", 1000) == b"top"
    assert filled.read("a/empty", 10) == b""
    assert filled.read("a/missing", 10) is None and filled.read("a/b", 10) is None  # a folder is no file


def test_read_many_reads_each_path(filled):
    paths = ["a/top", "a/empty", "a/missing", "a/b/c/deep"]
    assert filled.read_many(paths, 3) == {"a/top": b"top", "a/empty": b"", "a/missing": None, "a/b/c/deep": b"dee"}
    assert filled.read_many(["a/top"], 10) == {"a/top": b"top"} and filled.read_many([], 10) == {}


def test_exists_is_true_of_files_only(filled):
    assert filled.exists("a/top") and filled.exists("a/empty")
    assert not filled.exists("a/missing") and not filled.exists("a/b") and not filled.exists("a")


def test_write_replaces_the_whole_file_and_leaves_nothing_else(store):
    store.write("x/y/file", b"a longer first version")
    store.write("x/y/file", b"short")
    assert store.read("x/y/file", 1000) == b"short" and listed(store) == {"x/y/file": 5}


def test_delete_says_whether_the_file_was_there(filled):
    assert filled.delete("a/top") is True and filled.read("a/top", 10) is None
    assert filled.delete("a/top") is False and filled.delete("a/missing") is False
    assert set(listed(filled)) == set(FILES) - {"a/top"}


def test_delete_folder_removes_every_file_under_it_and_counts_them(filled):
    assert filled.delete_folder("a") == 4
    assert listed(filled) == {"ab/sibling": 3}  # a folder whose name begins the same stays
    assert filled.delete_folder("a") == 0 and filled.delete_folder("nowhere") == 0


def test_copy_replaces_the_target_keeps_the_source_and_is_false_without_one(filled):
    assert filled.copy("a/top", "a/b/c/deep") is True
    assert filled.read("a/b/c/deep", 10) == b"top" and filled.read("a/top", 10) == b"top"
    assert filled.copy("a/b/c/deep", "new/folder/copied") is True  # a folder it lacks is made
    assert filled.read("new/folder/copied", 10) == b"top"
    assert filled.copy("a/missing", "a/empty") is False and filled.read("a/empty", 10) == b""
    assert not [path for path in listed(filled) if path.endswith(".tmp")]


def test_put_back_never_overwrites_the_target_and_removes_the_source(filled):
    assert filled.put_back("a/top", "a/back") is True  # no target: the source goes there
    assert filled.read("a/back", 10) == b"top" and not filled.exists("a/top")
    assert filled.put_back("a/.hidden", "a/back") is True  # a target there stays as it is; the source goes
    assert filled.read("a/back", 10) == b"top" and not filled.exists("a/.hidden")
    assert filled.put_back("a/missing", "a/back") is False and filled.read("a/back", 10) == b"top"
    assert filled.put_back("a/missing", "a/nothing") is False and not filled.exists("a/nothing")


def test_every_operation_is_counted_in_requests(filled):
    operations = [lambda: list(filled.files("a")), lambda: filled.read("a/top", 10),
                  lambda: filled.read_many(["a/top", "a/empty"], 10), lambda: filled.exists("a/top"),
                  lambda: filled.write("w", b"w"), lambda: filled.delete("w"), lambda: filled.delete("w"),
                  lambda: filled.copy("a/top", "copied"), lambda: filled.put_back("copied", "a/top"),
                  lambda: filled.delete_folder("ab")]
    for operation in operations:
        before = filled.requests.total()
        operation()
        assert filled.requests.total() > before
    assert isinstance(filled.name, str) and filled.name
