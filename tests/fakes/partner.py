"""A partner system receiving our webhooks on 127.0.0.1: it records every delivery as it
arrives, checks its signature as the README tells partners to, and answers as a test
scripts it (a status after a delay: a 500, a slow answer, a redirect)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.server import StandIn

PATH = "/hook"


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300) -> bool:
    """The README's receiver check, word for word: the signature over the timestamp and
    the raw body, compared in constant time, and a timestamp at most 5 minutes old."""
    timestamp = headers.get("X-Hotline-Timestamp", "")
    signature = headers.get("X-Hotline-Signature", "")
    if not re.fullmatch(r"[0-9]{1,12}", timestamp, re.ASCII):
        return False  # missing or malformed
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # too old: a replay
    signed = timestamp.encode() + b"." + body
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    # Compared as bytes: a header of any characters is refused, never an error.
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


@dataclass
class Received:
    """One request as the partner got it."""

    headers: dict[str, str]
    raw: bytes
    at: float
    path: str

    @property
    def body(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.raw)
        return value

    @property
    def event_id(self) -> str:
        return self.headers.get("X-Hotline-Delivery", "")


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] | None = None
    body: str = "ok"


class Partner(StandIn):
    """The partner's receiving end: POST /hook."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        # Answers in order, then `default` for every later request.
        self.script: list[Answer] = []
        self.default = Answer()
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        await self._serve(app)

    @property
    def hook_url(self) -> str:
        return self.url + PATH

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append(Received(dict(request.headers), raw, time.time(), request.path))
        self._arrived.set()
        answer = self.script.pop(0) if self.script else self.default
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(status=answer.status, text=answer.body, headers=answer.headers)

    def hooks(self) -> list[Received]:
        return [r for r in self.received if r.path == PATH]

    async def wait(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until at least count requests arrived at the hook."""
        deadline = time.monotonic() + timeout
        while len(self.hooks()) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {count} deliveries, got {len(self.hooks())}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass
        return self.hooks()
