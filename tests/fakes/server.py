"""What the platform stand-ins share: serving on 127.0.0.1 (the product's own helper, which
the demo's Bot API stand-in uses too), and waiting for messages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from bot.standin import StandIn, serve

__all__ = ["Reader", "SentLog", "StandIn", "serve"]

T = TypeVar("T")


class SentLog(Generic[T]):
    """Messages a stand-in was asked to send, which a test can wait for by chat."""

    def __init__(self, chat_of: Callable[[T], str]) -> None:
        self.items: list[T] = []
        self._chat_of = chat_of
        self._event = asyncio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._event.set()

    def to(self, chat_id: str) -> list[T]:
        return [i for i in self.items if self._chat_of(i) == chat_id]

    async def wait(self, chat_id: str, count: int, timeout: float = 15.0) -> list[T]:
        """Wait until at least count messages went to the chat; returns them all."""
        deadline = time.monotonic() + timeout
        while len(self.to(chat_id)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"expected {count} messages to {chat_id}, got {self.to(chat_id)}"
                )
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                pass
        return self.to(chat_id)


class Reader(Generic[T]):
    """One chat's view of a SentLog: the next messages, in order."""

    def __init__(self, log: SentLog[T], chat_id: str) -> None:
        self._log = log
        self._chat_id = chat_id
        self.seen = 0

    async def replies(self, count: int = 1, timeout: float = 15.0) -> list[T]:
        sent = await self._log.wait(self._chat_id, self.seen + count, timeout)
        new = sent[self.seen : self.seen + count]
        self.seen += count
        return new

    async def reply(self, timeout: float = 15.0) -> T:
        return (await self.replies(1, timeout))[0]
