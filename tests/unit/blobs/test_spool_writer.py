"""The spool writer tees a transfer's bytes into its spool as they come and checks them against the digest at the
end: a transfer is verified only with the digest's bytes, in full."""
import builtins
import errno
import hashlib

import pytest

import registry_mirror.blobs.spool_writer as spool_writer
from registry_mirror.blobs.spool_writer import write_verified
from registry_mirror.blobs.transfers import Transfer, TransferFailed

DATA = bytes(range(256)) * 1024  # 256 KiB


def new_transfer(tmp_path, digest: str, size: int | None = None) -> Transfer:
    path = tmp_path / "blob-spool"
    path.write_bytes(b"")  # the coalescer makes the spool file; the writer opens it without truncating
    return Transfer(digest, "team/app", path, size=size)


class Chunks:
    """An upstream's body in chunks; knows whether the writer closed it (and with it the upstream response)."""

    def __init__(self, data: bytes, size: int = 65536):
        self.parts = [data[i:i + size] for i in range(0, len(data), size)]
        self.closed = False

    async def generate(self):
        try:
            for part in self.parts:
                yield part
        finally:
            self.closed = True


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
async def test_the_digests_bytes_are_spooled_and_verified(tmp_path, algorithm):
    digest = f"{algorithm}:{hashlib.new(algorithm, DATA).hexdigest()}"
    transfer = new_transfer(tmp_path, digest, size=len(DATA))
    await write_verified(transfer, Chunks(DATA).generate())
    assert transfer.verified and transfer.written == len(DATA)
    assert transfer.path.read_bytes() == DATA


async def test_bytes_of_unknown_size_are_verified_by_their_digest_alone(tmp_path):
    transfer = new_transfer(tmp_path, "sha256:" + hashlib.sha256(DATA).hexdigest(), size=None)
    await write_verified(transfer, Chunks(DATA).generate())
    assert transfer.verified and transfer.path.read_bytes() == DATA


async def test_other_bytes_are_refused_naming_both_digests(tmp_path):
    digest = "sha256:" + hashlib.sha256(DATA).hexdigest()
    corrupt = bytes([DATA[0] ^ 1]) + DATA[1:]
    transfer = new_transfer(tmp_path, digest, size=len(DATA))
    with pytest.raises(TransferFailed, match="do not match") as failed:
        await write_verified(transfer, Chunks(corrupt).generate())
    assert digest in str(failed.value) and hashlib.sha256(corrupt).hexdigest() in str(failed.value)
    assert not transfer.verified


async def test_a_body_short_of_its_size_is_refused_with_the_counts(tmp_path):
    transfer = new_transfer(tmp_path, "sha256:" + hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    with pytest.raises(TransferFailed, match=f"upstream sent {len(DATA) - 1} of {len(DATA)} bytes"):
        await write_verified(transfer, Chunks(DATA[:-1]).generate())
    assert not transfer.verified


async def test_a_digest_it_cannot_hash_fails_before_any_byte_is_asked_for(tmp_path):
    chunks = Chunks(DATA)
    transfer = new_transfer(tmp_path, "md5:" + hashlib.md5(DATA).hexdigest())
    with pytest.raises(TransferFailed, match="md5"):
        await write_verified(transfer, chunks.generate())
    assert transfer.written == 0 and not transfer.verified


class ShortWrites:
    """A spool file whose writes take at most `most` bytes at a time (as a signal or a nearly full disk can)."""

    def __init__(self, file, most: int):
        self.file, self.most = file, most

    def write(self, data) -> int:
        return self.file.write(bytes(data[:self.most]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


async def test_short_writes_are_completed(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_writer, "open", lambda *a, **kw: ShortWrites(builtins.open(*a, **kw), 1000),
                        raising=False)
    transfer = new_transfer(tmp_path, "sha256:" + hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    await write_verified(transfer, Chunks(DATA).generate())
    assert transfer.verified and transfer.path.read_bytes() == DATA


class FullDisk(ShortWrites):
    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_full_spool_disk_ends_the_fill_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_writer, "open", lambda *a, **kw: FullDisk(builtins.open(*a, **kw), 0), raising=False)
    chunks = Chunks(DATA)
    transfer = new_transfer(tmp_path, "sha256:" + hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    with pytest.raises(OSError, match="No space left"):
        await write_verified(transfer, chunks.generate())
    assert chunks.closed  # the upstream response (and its transfer slot) closed with it, not left to the GC
    assert transfer.written == 0 and not transfer.verified
