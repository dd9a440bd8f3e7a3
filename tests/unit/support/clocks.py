"""A fake clock for unit tests: time moves only when a test moves it, so TTLs, ages and backoffs are checked to
the second and no test waits for real time to pass."""


class Clock:
    """Stands in for `time.time` or `time.monotonic` wherever the code takes a clock: a call reads `now`, which
    the test sets or adds to. A test that needs a wall and a monotonic clock makes two."""

    def __init__(self, now: float = 0.0):
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """For code that takes a sleep as well: returns at once, noting the wait and moving the clock past it."""
        self.slept.append(seconds)
        self.now += seconds
