"""A loop a part of the mirror runs beside the requests (the scrub, the upload sweep, the warm queue): started
with the mirror, cancelled and awaited at its stop."""
from __future__ import annotations

import asyncio


class BackgroundLoop:
    _task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        raise NotImplementedError
