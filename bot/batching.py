"""Group commit: one task per process takes whatever was submitted while the previous
batch was being written, and writes it all in one transaction.

Each submitter waits on its own future, which the batch's work resolves once the batch
is durable, so "persist, then acknowledge" holds while the commit's cost is shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bot.tasks import cancel

T = TypeVar("T")

# Turns of the event loop a batch waits for more items, while more keep arriving.
LINGER_TURNS = 4


@dataclass(slots=True)
class Pending(Generic[T]):
    item: T
    done: asyncio.Future[Any]


class Batches(Generic[T]):
    """Feeds submitted items to `work` in batches of at most `max_batch`. `work` resolves
    each item's future; one it leaves unresolved fails with the exception `work` raised."""

    def __init__(
        self,
        name: str,
        work: Callable[[Sequence[Pending[T]]], Awaitable[None]],
        max_batch: int = 256,
    ) -> None:
        self._name = name
        self._work = work
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Pending[T]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def submit(self, item: T) -> asyncio.Future[Any]:
        if self._task is None or self._task.done():
            raise RuntimeError(f"{self._name} is not running")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Pending(item, done))
        return done

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(RuntimeError(f"{self._name} stopped"))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # Let the loop read the requests already waiting on their sockets first: one
            # commit then serves them all. Idle, this costs one turn of the loop.
            waiting = -1
            for _ in range(LINGER_TURNS):
                if self._queue.qsize() == waiting:
                    break
                waiting = self._queue.qsize()
                await asyncio.sleep(0)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._work(batch)
            except asyncio.CancelledError:
                _fail(batch, RuntimeError(f"{self._name} stopped"))
                raise
            except Exception as exc:
                _fail(batch, exc)


def _fail(batch: Sequence[Pending[Any]], exc: BaseException) -> None:
    for p in batch:
        if not p.done.done():
            p.done.set_exception(exc)
