"""Spool folders: a start removes every earlier run's folder whose lock is free, never a running
sibling's; its own folder lives, locked, until close. Siblings and crashes are real processes here: a lock
held in this process would not show that another process's lock is respected."""
import logging
import os
import signal
import subprocess
import sys

import pytest

from registry_mirror.blobs import spool_folder
from registry_mirror.blobs.spool_folder import PREFIX, SpoolFolder, remove_leftovers

# holds an exclusive flock on the folder argv[1] until its stdin closes or it is killed; says "locked" once it does
HOLDER = """
import fcntl, os, sys
lock = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(lock, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""

# a mirror's spool: makes its folder in argv[1], writes a spool file, prints the folder, then runs until killed
MIRROR = """
import sys
from registry_mirror.blobs.spool_folder import SpoolFolder
spool = SpoolFolder(sys.argv[1])
(spool.path / "blob-half").write_bytes(b"x" * 4096)
print(spool.path, flush=True)
sys.stdin.read()
"""


def leftover(parent, name="1234abcd", spooled=b"half a layer"):
    """An earlier run's folder, its lock free (the kernel dropped it with the process): a spool file in it."""
    folder = parent / (PREFIX + name)
    folder.mkdir(parents=True)
    (folder / "blob-abc").write_bytes(spooled)
    return folder


def started(script, *args):
    """A child running `script` and the first line it printed: it has done what the line announces."""
    child = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def stop(child):
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()


def spool_folders(parent):
    return sorted(p.name for p in parent.glob(PREFIX + "*"))


def test_a_leftover_folder_with_a_free_lock_is_removed_and_logged(tmp_path, caplog):
    old = leftover(tmp_path, spooled=b"x" * 5000)
    caplog.set_level(logging.INFO, logger=spool_folder.__name__)
    spool = SpoolFolder(str(tmp_path))
    assert not old.exists() and spool_folders(tmp_path) == [spool.path.name]
    assert f"removed the leftover spool folder {old}: 5.0 KB freed" in caplog.messages
    spool.close()


def test_a_folder_whose_lock_another_process_holds_is_kept(tmp_path):
    running = leftover(tmp_path)
    holder, said = started(HOLDER, running)
    try:
        assert said == "locked"
        spool = SpoolFolder(str(tmp_path))
        assert (running / "blob-abc").read_bytes() == b"half a layer"
        assert spool_folders(tmp_path) == sorted([running.name, spool.path.name])
        spool.close()
    finally:
        stop(holder)


def test_a_killed_mirrors_folder_is_removed_by_the_next_start(tmp_path):
    child, printed = started(MIRROR, tmp_path)
    try:
        crashed = tmp_path / os.path.basename(printed)
        assert crashed.parent == tmp_path and (crashed / "blob-half").exists()
        alive = SpoolFolder(str(tmp_path))  # the child still runs: its folder is a sibling's
        assert crashed.exists()
        alive.close()
    finally:
        stop(child)  # kill -9: nothing of its own clean-up runs
    assert (crashed / "blob-half").exists()
    after = SpoolFolder(str(tmp_path))
    assert not crashed.exists() and spool_folders(tmp_path) == [after.path.name]
    after.close()


def test_a_sibling_in_the_same_parent_keeps_its_folder(tmp_path):
    """Its own folder is never a leftover to the next start, even in one process (flock is per open file)."""
    first = SpoolFolder(str(tmp_path))
    second = SpoolFolder(str(tmp_path))
    assert first.path.exists() and first.path != second.path
    assert remove_leftovers(tmp_path, strays=True) == (0, 0, 0)
    first.close()
    second.close()


def test_stray_spool_files_of_older_versions_are_removed_from_spool_dir(tmp_path, caplog):
    (tmp_path / "blob-a1b2c3d4").write_bytes(b"half a layer")  # as mkstemp named them
    (tmp_path / "blob-of-another-program").write_bytes(b"theirs")
    (tmp_path / "unrelated.txt").write_text("not ours")
    caplog.set_level(logging.INFO, logger=spool_folder.__name__)
    spool = SpoolFolder(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["unrelated.txt", "blob-of-another-program",
                                                                 spool.path.name])
    assert f"removed 1 stray spool files from {tmp_path}: 12 B freed" in caplog.messages
    spool.close()


def test_stray_files_in_the_temporary_folder_are_not_ours(tmp_path):
    (tmp_path / "blob-of-another-program").write_bytes(b"theirs")
    assert remove_leftovers(tmp_path, strays=False) == (0, 0, 0)
    assert (tmp_path / "blob-of-another-program").exists()


def test_close_removes_the_folder_and_a_parent_it_made(tmp_path):
    kept = SpoolFolder(str(tmp_path))
    made = SpoolFolder(str(tmp_path / "spool"))
    (made.path / "blob-x").write_bytes(b"spooled")
    made.close()
    kept.close()
    kept.close()  # twice is harmless
    assert list(tmp_path.iterdir()) == []  # tmp_path was there before: kept; spool/ was not


def test_spool_dir_naming_the_temporary_folder_leaves_its_blob_files_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_folder.tempfile, "tempdir", str(tmp_path))
    (tmp_path / "blob-a1b2c3d4").write_bytes(b"another program's, named as ours were")
    spool = SpoolFolder(str(tmp_path))
    assert (tmp_path / "blob-a1b2c3d4").exists()
    spool.close()


def test_without_spool_dir_the_folder_is_in_the_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_folder.tempfile, "tempdir", str(tmp_path))
    spool = SpoolFolder(None)
    assert spool.path.parent == tmp_path and spool.path.name.startswith(PREFIX)
    spool.close()
    assert tmp_path.exists()


def test_a_leftover_that_cannot_be_removed_is_logged_and_the_start_goes_on(tmp_path, monkeypatch, caplog):
    old = leftover(tmp_path)
    (tmp_path / "blob-stuck_00").write_bytes(b"stuck")
    unlink = os.unlink

    def refusing(path, *args, **kwargs):
        if os.path.basename(path).startswith("blob-"):
            raise PermissionError(1, "Operation not permitted", path)
        return unlink(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", refusing)
    caplog.set_level(logging.INFO, logger=spool_folder.__name__)
    spool = SpoolFolder(str(tmp_path))
    monkeypatch.undo()
    assert (old / "blob-abc").exists() and (tmp_path / "blob-stuck_00").exists() and spool.path.exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(old) in w and "Operation not permitted" in w for w in warnings)
    assert any("blob-stuck" in w for w in warnings)
    spool.close()


@pytest.mark.parametrize("name", [PREFIX + "link", PREFIX + "file"])
def test_only_real_folders_are_candidates(tmp_path, name):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("not a spool")
    if name.endswith("link"):
        (tmp_path / name).symlink_to(target)
    else:
        (tmp_path / name).write_text("a file")
    assert remove_leftovers(tmp_path, strays=True) == (0, 0, 0)
    assert (target / "keep").exists() and (tmp_path / name).exists()
