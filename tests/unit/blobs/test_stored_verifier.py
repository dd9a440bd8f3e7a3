"""Data files the registry served itself are checked after its pull notifications: once per digest per
interval (a fake clock), one at a time; a corrupt one is moved aside and counted."""
import pytest

from registry_mirror.blobs import stored_verifier as blob_verifier
from registry_mirror.blobs.stored_verifier import BlobVerifier, pulled_digests
from registry_mirror.storage.store import FolderStore
from tests.unit.storage.test_verify import flip_bit
from tests.unit.support.clocks import Clock
from tests.unit.support.storage import Storage

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
WALL = 1_800_000_000.0


def event(digest, action="pull", method="GET", media_type="application/octet-stream"):
    return {"action": action, "target": {"digest": digest, "mediaType": media_type, "repository": "team/app"},
            "request": {"method": method}}


@pytest.mark.parametrize("envelope,digests", [
    ({"events": [event(D1), event(D2, media_type="application/vnd.oci.image.manifest.v1+json")]}, [D1, D2]),
    ({"events": [event(D1, method="HEAD")]}, []),
    ({"events": [event(D1, action="push")]}, []),
    ({"events": [{"action": "pull", "target": {"digest": D1}}]}, [D1]),  # no request record: a GET
    ({"events": [event("sha256:short"), event("../../etc/passwd"), event(7)]}, []),
    ({"events": [None, "x", {"action": "pull", "target": "x"}]}, []),
    ({"events": "nope"}, []),
    ([], []),
    (None, []),
])
def test_pulled_digests_are_the_gets_of_an_envelope(envelope, digests):
    assert pulled_digests(envelope) == digests


def verifier(tmp_path, clock, interval=3600.0):
    return BlobVerifier(tmp_path, interval=interval, clock=clock, wall=lambda: WALL)


async def test_a_digest_is_checked_at_most_once_per_interval(tmp_path):
    storage, clock = Storage(FolderStore(tmp_path)), Clock(1000.0)
    digest = storage.blob(3000)

    v = verifier(tmp_path, clock)
    queued = [v.pulled([digest, digest])]
    await v.idle()
    clock.now += 3599
    queued.append(v.notified({"events": [event(digest)]}))
    await v.idle()
    first = v.snapshot()
    clock.now += 1
    queued.append(v.pulled([digest]))
    await v.idle()
    await v.close()
    after = v.snapshot()
    assert queued == [1, 0, 1]
    assert (first["verified"], first["verified_bytes"], first["mismatches"]) == (1, 3000, 0)
    assert (after["verified"], after["verified_bytes"], after["queued"]) == (2, 6000, 0)
    assert storage.data_file(digest).exists()


async def test_a_corrupt_file_is_moved_aside_counted_and_the_next_pull_finds_nothing_to_check(tmp_path):
    storage, clock = Storage(FolderStore(tmp_path)), Clock(1000.0)
    good, bad = storage.blob(100), storage.blob(200)
    flip_bit(storage.data_file(bad), 10)

    v = verifier(tmp_path, clock)
    v.pulled([good, bad])
    await v.idle()
    first = v.snapshot()
    clock.now += 7200  # the interval has passed: checked again, but not stored any more
    v.pulled([bad])
    await v.idle()
    again = v.snapshot()
    assert (first["verified"], first["mismatches"], first["quarantined"]) == (1, 1, 1)
    last = first["last_mismatch"]
    assert (last["digest"], last["at"], last["by"]) == (bad, WALL, "pulled")
    assert last["found"] != bad and last["moved_to"].startswith(str(tmp_path / "docker/registry/v2/quarantine/"))
    assert not storage.data_file(bad).exists() and storage.data_file(good).exists()
    assert again == first


async def test_digests_not_stored_are_not_counted_and_queued_again_by_the_next_pull(tmp_path):
    """A cold pull's notification can come before the registry has stored the blob."""
    v = verifier(tmp_path, Clock(1000.0))
    v.pulled([D1, D2])
    await v.idle()
    again = v.pulled([D1, D2])
    await v.idle()
    snap = v.snapshot()
    assert again == 2 and (snap["verified"], snap["mismatches"], snap["quarantined"]) == (0, 0, 0)


async def test_without_storage_nothing_is_queued():
    assert BlobVerifier(None, 3600).pulled([D1]) == 0


async def test_files_are_checked_one_at_a_time(tmp_path, monkeypatch):
    storage, running, most = Storage(FolderStore(tmp_path)), [0], [0]
    digests = [storage.blob(10) for _ in range(5)]
    real = blob_verifier.verify_stored

    def counting(*args):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return real(*args)
        finally:
            running[0] -= 1
    monkeypatch.setattr(blob_verifier, "verify_stored", counting)

    v = verifier(tmp_path, Clock(1000.0))
    for digest in digests:
        v.pulled([digest])
    await v.idle()
    assert v.snapshot()["verified"] == 5 and most[0] == 1


async def test_a_full_queue_skips_and_counts_and_the_next_pull_queues_again(tmp_path, monkeypatch):
    monkeypatch.setattr(blob_verifier, "MAX_QUEUED", 2)
    storage = Storage(FolderStore(tmp_path))
    digests = [storage.blob(10) for _ in range(3)]

    v = verifier(tmp_path, Clock(1000.0))
    first = v.pulled(digests)
    await v.idle()
    second = v.pulled(digests)  # the two checked are within the interval; the skipped one is not
    await v.idle()
    snap = v.snapshot()
    assert (first, second, snap["skipped"], snap["verified"]) == (2, 1, 1, 3)


async def test_the_digests_remembered_are_bounded_oldest_forgotten_first(tmp_path, monkeypatch):
    monkeypatch.setattr(blob_verifier, "MAX_REMEMBERED", 2)
    storage, clock = Storage(FolderStore(tmp_path)), Clock(1000.0)
    first, second, third = (storage.blob(10) for _ in range(3))

    v = verifier(tmp_path, clock)
    for digest in (first, second, third):
        clock.now += 1
        v.pulled([digest])
        await v.idle()
    assert (v.pulled([second]), v.pulled([first])) == (0, 1)


async def test_close_stops_the_checks_and_later_pulls_queue_nothing(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    digests = [storage.blob(10) for _ in range(50)]

    v = verifier(tmp_path, Clock(1000.0))
    v.pulled(digests)
    await v.close()
    queued, snap = v.pulled([storage.blob(10)]), v.snapshot()
    assert queued == 0 and snap["queued"] == 0 and snap["verified"] < 50

