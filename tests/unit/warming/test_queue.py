"""The warm queue: duplicates coalesce, it is bounded, failures are retried with a doubling backoff; time
comes from a fake clock, so nothing sleeps."""
import asyncio

from registry_mirror.warming.queue import Warmer, WarmJob, WarmQueue
from tests.unit.support.clocks import Clock
from tests.unit.support.waits import until

A = WarmJob("sha256:" + "a" * 64, ("team/app",), "1.0")
B = WarmJob("sha256:" + "b" * 64, ("team/app",), "1.1")


def test_duplicates_coalesce_while_queued_or_running_and_a_replay_warms_once_more():
    queue = WarmQueue(clock=Clock(100.0))
    assert [queue.submit(A) for _ in range(5)] == ["queued"] + ["coalesced"] * 4
    job = queue.take()
    assert job == A and queue.submit(A) == "coalesced"  # running: the warm under way covers it
    queue.finished(job, nbytes=10, blobs=2)
    assert queue.submit(A) == "queued"  # a replay after the warm: one more
    t = queue.totals
    assert (t.done, t.coalesced, t.bytes, t.blobs, t.queued, t.running) == (1, 5, 10, 2, 1, 0)


def test_the_same_digest_under_other_names_is_another_warm():
    queue = WarmQueue(clock=Clock(100.0))
    assert queue.submit(A) == "queued"
    assert queue.submit(WarmJob(A.digest, ("docker-local/team/app",), "1.0")) == "queued"


def test_bounded():
    queue = WarmQueue(bound=2, clock=Clock(100.0))
    assert queue.submit(A) == "queued" and queue.submit(B) == "queued"
    assert queue.submit(WarmJob("sha256:" + "c" * 64, ("x",))) == "full"
    assert queue.totals.refused == 1
    queue.take()  # a running warm still counts against the bound
    assert queue.submit(WarmJob("sha256:" + "c" * 64, ("x",))) == "full"


def test_retries_with_a_doubling_backoff_then_gives_up():
    clock = Clock(100.0)
    queue = WarmQueue(attempts=3, backoff=2.0, clock=clock)
    queue.submit(A)
    job = queue.take()
    queue.finished(job, error="the mirror answered 503")
    assert queue.take() is None and queue.next_due() == 102.0  # not before its backoff
    clock.now = 102.0
    queue.finished(queue.take(), error="again")
    assert queue.next_due() == 106.0  # doubled
    clock.now = 105.9
    assert queue.take() is None
    clock.now = 106.0
    queue.finished(queue.take(), error="a third time")
    t = queue.totals
    assert (t.failed, t.retries, t.queued, t.last_error) == (1, 2, 0, "a third time")
    assert queue.next_due() is None


def test_a_retried_warm_that_succeeds_counts_its_time_from_the_event():
    clock = Clock(100.0)
    queue = WarmQueue(backoff=1.0, clock=clock)
    queue.submit(A)
    queue.finished(queue.take(), error="once")
    clock.now = 103.0
    queue.finished(queue.take(), nbytes=5)
    assert (queue.totals.done, queue.totals.last_seconds, queue.totals.failed) == (1, 3.0, 0)


async def test_the_warmer_runs_queued_warms_one_at_a_time_and_survives_a_failure():
    running, ran = 0, []

    async def warm(job):
        nonlocal running
        running += 1
        assert running == 1
        await asyncio.sleep(0)
        running -= 1
        ran.append(job)
        if job is B:
            raise OSError("connection refused")
        return 100, 3
    warmer = Warmer(WarmQueue(attempts=1), warm)
    warmer.start()
    assert warmer.submit(A) == "queued" and warmer.submit(B) == "queued"
    await until(lambda: warmer.queue.totals.done + warmer.queue.totals.failed == 2, "both warms ended")
    await warmer.stop()
    totals = warmer.queue.totals
    assert ran == [A, B] and (totals.done, totals.failed, totals.bytes) == (1, 1, 100)
    assert totals.last_error == "connection refused"
