"""Bounded waits for the few tests whose event has nothing to await: they poll state, and their bound only
ends a broken test; no passing run comes near it, however slow the machine."""
import asyncio
import time

BOUND = 30.0  # seconds; never a measure of speed


async def until(condition, what: str, bound: float = BOUND) -> None:
    deadline = asyncio.get_running_loop().time() + bound
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not {what} within {bound:.0f} s")
        await asyncio.sleep(0.01)


def until_sync(condition, what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {bound:.0f} s")
        time.sleep(0.01)
