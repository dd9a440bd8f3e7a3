"""A background loop runs from start to stop, and a stop ends it even mid-wait."""
import asyncio

from registry_mirror.background import BackgroundLoop
from tests.unit.support.waits import until


class Ticking(BackgroundLoop):
    def __init__(self):
        self.ticks = 0

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.Event().wait()  # waits for ever: only the stop ends it


async def test_a_loop_runs_once_started_and_a_stop_cancels_its_wait():
    loop = Ticking()
    await loop.stop()  # never started: nothing to stop
    loop.start()
    await until(lambda: loop.ticks == 1, "the loop started")
    await loop.stop()
    assert loop._task is not None and loop._task.cancelled()
