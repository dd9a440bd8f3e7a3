"""The background scrub hashes every stored blob once per interval, paced over half of it, and moves a corrupt
one aside; a file checked after a pull within verify_interval is skipped. No time passes: sleep and clock are
fakes."""
from registry_mirror.blobs.stored_verifier import BlobVerifier
from registry_mirror.storage.layout import aside_path, data_path
from registry_mirror.storage.quarantine import folder
from registry_mirror.storage.scrub import MIN_RATE, Scrub
from registry_mirror.storage.store import FolderStore
from registry_mirror.storage.verify import Checked
from tests.unit.storage.test_verify import flip_bit
from tests.unit.support.clocks import Clock
from tests.unit.support.storage import Storage

HOUR = 3600.0


async def test_a_pass_hashes_every_blob_moves_the_corrupt_one_and_is_paced(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    good, bad = storage.blob(MIN_RATE), storage.blob(MIN_RATE)
    flip_bit(storage.data_file(bad), 100)
    clock = Clock()
    verifier = BlobVerifier(tmp_path, HOUR, clock=clock)
    # an interval that paces the pass at the minimum rate: one second of reading per MiB
    scrub = Scrub(storage.store, 4.0, verifier.check_now, sleep=clock.sleep, clock=clock)
    await scrub.run_pass()
    assert scrub.state.passes == 1 and scrub.state.checked == 2
    assert verifier.state.verified == 1 and verifier.state.mismatches == 1
    assert verifier.state.last_mismatch.by == "scrub" and not storage.data_file(bad).exists()
    assert any(folder(tmp_path).iterdir()) and storage.data_file(good).exists()
    assert sum(clock.slept) == 2.0  # 2 MiB at 1 MiB/s: the reads were spread, not run back to back


async def test_a_blob_checked_after_a_pull_within_verify_interval_is_skipped(tmp_path):
    storage = Storage(FolderStore(tmp_path))
    digest = storage.blob(5000)
    clock = Clock()
    verifier = BlobVerifier(tmp_path, HOUR, clock=clock)
    scrub = Scrub(storage.store, 7 * 24 * HOUR, verifier.check_now, sleep=clock.sleep, clock=clock)
    await scrub.run_pass()
    assert scrub.state.checked == 1
    await scrub.run_pass()  # at once: checked within the hour
    assert scrub.state.checked == 1 and scrub.state.passes == 2
    clock.now += HOUR
    await scrub.run_pass()
    assert scrub.state.checked == 2 and verifier.state.verified == 2 and storage.data_file(digest).exists()


async def test_a_pass_checks_each_blob_the_store_holds_and_not_data_set_aside(storage):
    """On a folder and on a bucket alike (there the check hashes the object: proxy/services.py)."""
    stored = {storage.blob(100) for _ in range(3)}
    aside = storage.blob(100)
    assert storage.store.copy(data_path(aside), aside_path(aside)) and storage.store.delete(data_path(aside))
    checked = []

    async def check(digest: str) -> Checked:
        checked.append(digest)
        return Checked(digest, 100, digest)
    clock = Clock()
    scrub = Scrub(storage.store, 7 * 24 * HOUR, check, sleep=clock.sleep, clock=clock)
    await scrub.run_pass()
    assert sorted(checked) == sorted(stored) and scrub.state.checked == 3 and scrub.state.passes == 1
