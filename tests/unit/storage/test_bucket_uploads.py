"""Incomplete multipart uploads in the bucket: a sweep at start and every hour aborts the day-old ones, and a
store away for a sweep is tried again at the next."""
from registry_mirror.storage.bucket_uploads import SWEEP_SECONDS, UploadSweep
from registry_mirror.storage.uploads import PURGE_AGE_SECONDS
from tests.unit.support.clocks import Clock
from tests.unit.support.waits import until


class Uploads:
    """The bucket's incomplete uploads, by when each began; `away`: listing them fails."""

    def __init__(self, began: list[float], away: bool = False):
        self.began, self.away, self.name = began, away, "registry"

    def abort_stale_uploads(self, older_than: float, now: float) -> int:
        if self.away:
            raise ConnectionError("the store is away")
        stale = [at for at in self.began if now - at >= older_than]
        self.began = [at for at in self.began if now - at < older_than]
        return len(stale)


async def test_a_sweep_aborts_the_uploads_a_day_old_and_keeps_younger_ones():
    clock = Clock(10 * PURGE_AGE_SECONDS)
    bucket = Uploads([clock.now - PURGE_AGE_SECONDS - 1, clock.now - PURGE_AGE_SECONDS, clock.now - 60])
    sweep = UploadSweep(bucket, clock=clock)
    assert await sweep.sweep() == 2 and bucket.began == [clock.now - 60] and sweep.aborted == 2


async def test_a_store_away_is_logged_and_the_next_sweep_aborts_what_it_missed(caplog):
    clock = Clock(10 * PURGE_AGE_SECONDS)
    bucket = Uploads([0.0], away=True)
    sweep = UploadSweep(bucket, clock=clock)
    assert await sweep.sweep() == 0 and "cannot list the incomplete uploads in bucket registry" in caplog.text
    bucket.away = False
    assert await sweep.sweep() == 1 and sweep.aborted == 1


async def test_sweeps_come_at_start_then_every_hour():
    clock, swept_at = Clock(), []
    bucket = Uploads([])

    def listed(older_than: float, now: float) -> int:
        swept_at.append(now)
        return 0
    bucket.abort_stale_uploads = listed
    sweep = UploadSweep(bucket, clock=clock, sleep=clock.sleep)
    sweep.start()
    try:
        await until(lambda: len(swept_at) >= 3, "three sweeps")
    finally:
        await sweep.stop()
    assert swept_at[:3] == [0.0, SWEEP_SECONDS, 2 * SWEEP_SECONDS]
