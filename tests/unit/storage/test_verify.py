"""Data files hashed in chunks against their digests; `artifactory-mirror verify` over a whole storage."""
import errno
import hashlib
import os

import pytest

from registry_mirror.cli.commands import main
from registry_mirror.storage import quarantine, verify
from registry_mirror.storage.store import FolderStore
from tests.unit.storage.test_quarantine import usage
from tests.unit.support.storage import Storage

NOW = 1_800_000_000.0


def flip_bit(path, offset: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("size", [0, 1, verify.CHUNK - 1, verify.CHUNK, 3 * verify.CHUNK + 17])
def test_a_file_is_hashed_whole_a_chunk_at_a_time(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "data"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert verify.file_digest(fd, "sha256:x") == ("sha256:" + hashlib.sha256(data).hexdigest(), size)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # by offset: the position sendfile uses is left alone
    finally:
        os.close(fd)


def test_a_good_file_stays(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob(5000)
    checked = verify.verify_stored(tmp_path, digest, NOW)
    assert checked == verify.Checked(digest, 5000, digest) and checked.ok
    assert storage.data_file(digest).exists()


def test_an_empty_file_gets_no_verdict_here(tmp_path):
    """One just created (two repositories storing one manifest) or torn by a full disk: storage/torn_files.py removes
    those that stay empty; moving one aside at once could take a good file being written."""
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob(5000)
    os.truncate(storage.data_file(digest), 0)
    assert verify.verify_stored(tmp_path, digest, NOW) is None and storage.data_file(digest).exists()


@pytest.mark.parametrize("damage", ["flipped bit", "truncated"])
def test_a_damaged_file_is_moved_aside(tmp_path, damage):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob(5000)
    path = storage.data_file(digest)
    if damage == "flipped bit":
        flip_bit(path, 4321)
    else:
        os.truncate(path, 2500 if damage == "truncated" else 0)
    checked = verify.verify_stored(tmp_path, digest, NOW)
    assert not checked.ok and checked.actual.startswith("sha256:")
    assert checked.moved_to.parent == quarantine.folder(tmp_path) and not path.exists()


def test_an_unreadable_file_is_moved_aside(tmp_path, monkeypatch):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob(5000)

    def bad_sector(fd, buffers, offset):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "preadv", bad_sector)
    checked = verify.verify_stored(tmp_path, digest, NOW)
    assert checked.actual == "unreadable: Input/output error" and checked.moved_to is not None


def test_a_digest_not_stored_is_nothing_to_check(tmp_path):
    assert verify.verify_stored(tmp_path, "sha256:" + "ab" * 32, NOW) is None


def test_only_data_folders_named_by_a_digest_are_walked(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    digests = {storage.blob() for _ in range(5)}
    blobs = storage.v2 / "blobs"
    for junk in ("sha256/zz/nothex", f"sha256/00/{'11' * 32}", f"md5/ab/{'ab' * 16}", "sha256/ab"):
        (blobs / junk).mkdir(parents=True, exist_ok=True)
    quarantine.folder(tmp_path).mkdir(parents=True)
    assert set(verify.stored_digests(tmp_path)) == digests


def config(tmp_path):
    path = tmp_path / "mirror.yaml"
    path.write_text(f"upstream:\n  url: https://art.example.com\n  repository: docker-local\n  anonymous: true\n"
                    f"mirror:\n  storage: {tmp_path / 'storage'}\n")
    return str(path)


def test_the_verify_command_moves_corrupt_blobs_aside_and_exits_1_then_0(tmp_path, capsys):
    storage = Storage(FolderStore(tmp_path / "storage"))
    good = [storage.blob(1000) for _ in range(3)]
    bad = storage.blob(2000)
    flip_bit(storage.data_file(bad), 1999)
    assert main(["verify", "--config", config(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"MISMATCH {bad}: 2000 bytes read as sha256:") and "moved to" in out[0]
    assert out[-1].startswith("4 blobs (5.0 KB) checked in") and "3 good, 1 corrupt, moved to" in out[-1]
    assert not storage.data_file(bad).exists() and all(storage.data_file(d).exists() for d in good)
    assert main(["verify", "--config", config(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("3 good, 0 corrupt")


def test_the_verify_command_on_an_empty_storage_exits_0(tmp_path, capsys):
    assert main(["--config", config(tmp_path), "verify"]) == 0
    assert "0 blobs (0 B) checked" in capsys.readouterr().out


def test_a_file_written_while_it_is_read_is_no_verdict(tmp_path, monkeypatch):
    """The registry writes a manifest's data in place when it first stores it."""
    storage = Storage(FolderStore(tmp_path))
    digest = storage.put(b'{"schemaVersion": 2}')
    path = storage.data_file(digest)
    path.write_bytes(b'{"schema')
    real = verify.file_digest

    def written_meanwhile(fd, digest):
        found = real(fd, digest)
        path.write_bytes(b'{"schemaVersion": 2}')  # in place: the same file, longer
        return found
    monkeypatch.setattr(verify, "file_digest", written_meanwhile)
    assert verify.verify_stored(tmp_path, digest, NOW) is None
    assert path.exists() and usage(tmp_path) == (0, 0)
