"""What the platform stand-ins share: serving on 127.0.0.1, and waiting for messages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import aiohttp
from aiohttp import web

T = TypeVar("T")


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Run app on host (a free port unless given); the runner (to clean up) and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}"


class StandIn:
    """A stand-in server on 127.0.0.1, with a client of its own to call our webhooks."""

    url = ""
    _runner: web.AppRunner | None = None
    _client: aiohttp.ClientSession | None = None

    async def _serve(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner, self.url = await serve(app, host, port)
        self._client = aiohttp.ClientSession()
        return self.url

    @property
    def client(self) -> aiohttp.ClientSession:
        assert self._client is not None, "the stand-in is not started"
        return self._client

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()


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
