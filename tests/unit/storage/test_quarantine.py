"""A corrupt data file is moved aside where neither the registry nor the storage inventory looks, only if it is
still the file that was hashed, and the folder keeps the newest few."""
import os

from registry_mirror.storage import quarantine
from registry_mirror.storage.inventory import inventory
from registry_mirror.storage.store import FolderStore
from registry_mirror.storage.verify import verify_storage
from tests.unit.support.storage import Storage


def usage(root) -> tuple[int, int]:
    """(files, bytes) in the quarantine folder."""
    files = [p for p in quarantine.folder(root).glob("*") if p.is_file()] if quarantine.folder(root).exists() else []
    return len(files), sum(p.stat().st_size for p in files)

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def test_the_hashed_file_is_moved_aside_out_of_the_registrys_and_the_inventorys_sight(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob(100)
    other = storage.image("team/a", [digest], tag="1.0")
    hashed = os.stat(storage.data_file(digest))
    moved = quarantine.move_aside(tmp_path, digest, hashed, NOW)
    assert moved == quarantine.folder(tmp_path) / f"20270115T080000Z-sha256-{digest[7:]}"
    assert moved.stat().st_size == 100 and not storage.data_file(digest).exists()
    assert quarantine.folder(tmp_path) == tmp_path / "docker/registry/v2/quarantine"
    inv = inventory(FolderStore(tmp_path))
    assert digest not in inv.blob_sizes and other in inv.blob_sizes and list(inv.repositories) == ["team/a"]
    assert digest not in {checked.digest for checked in verify_storage(tmp_path, lambda: NOW)}
    assert usage(tmp_path) == (1, 100)


def test_a_file_the_registry_replaced_since_it_was_hashed_stays(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob(100)
    path = storage.data_file(digest)
    hashed = os.stat(path)
    good = path.with_name("upload")
    good.write_bytes(path.read_bytes())
    os.rename(good, path)  # a good copy committed by the registry meanwhile
    assert quarantine.move_aside(tmp_path, digest, hashed, NOW) is None
    assert path.exists() and usage(tmp_path) == (0, 0)


def test_a_file_gone_since_it_was_hashed_is_nothing_to_move(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob()
    hashed = os.stat(storage.data_file(digest))
    storage.data_file(digest).unlink()  # an expiry pass
    assert quarantine.move_aside(tmp_path, digest, hashed, NOW) is None


def test_the_same_digest_twice_in_one_second_keeps_both_copies(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    data = b"x" * 10
    first = storage.put(data)
    moved = quarantine.move_aside(tmp_path, first, os.stat(storage.data_file(first)), NOW)
    storage.put(data)
    again = quarantine.move_aside(tmp_path, first, os.stat(storage.data_file(first)), NOW)
    assert again == moved.with_name(moved.name + "-2") and moved.exists() and again.exists()


def test_the_folder_keeps_the_newest_files(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    moved = []
    for i in range(quarantine.KEEP + 3):
        digest = storage.blob()
        moved.append(quarantine.move_aside(tmp_path, digest, os.stat(storage.data_file(digest)), NOW + i))
    assert sorted(p.name for p in quarantine.folder(tmp_path).iterdir()) == [p.name for p in moved[3:]]


def test_a_file_that_cannot_be_moved_stays_and_says_so(tmp_path, caplog):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob()
    quarantine.folder(tmp_path).write_text("a file where the folder goes")
    assert quarantine.move_aside(tmp_path, digest, os.stat(storage.data_file(digest)), NOW) is None
    assert storage.data_file(digest).exists()
    assert any("cannot move the corrupt" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
