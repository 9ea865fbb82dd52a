"""A pass run every few seconds in a background task, that logs a failure and goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `work` every `interval` seconds until stopped. `work` returns a line for the
    log when it did something, or None."""

    def __init__(
        self, name: str, interval: float, work: Callable[[], Awaitable[str | None]]
    ) -> None:
        self._name = name
        self._interval = interval
        self._work = work
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                said = await self._work()
                if said:
                    log.info("%s: %s", self._name, said)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; trying again later", self._name)
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
