"""The platforms' side of the webhooks: each update posted to one of the server
processes, and posted again (to another, after a pause) until one answers 200, as
Telegram does with whatever is not answered 2xx."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from backend.crypto import keys
from bot.zalo_oa import SIGNATURE_HEADER, expected_signature
from tests.e2e.webhooks import PATHS, TELEGRAM, TELEGRAM_SECRET_HEADER, ZALO_OA
from tests.fakes.zalo_oa import FakeZaloOA

# How long a platform keeps sending one update again before it gives up on it.
GIVE_UP = 120.0
# Telegram waits about this long for a webhook's answer.
ANSWER_TIMEOUT = 30.0
# Zalo counts a webhook that has not answered in 2 s as failed.
ZALO_PATIENCE = 2.0


@dataclass
class Delivery:
    """One update and every attempt to hand it over: (server, outcome, when it began,
    seconds it took)."""

    channel: str
    key: str
    chat_id: str
    attempts: list[tuple[int, str, float, float]] = field(default_factory=list)
    acked_at: float | None = None

    @property
    def acked(self) -> bool:
        return self.acked_at is not None


class Platform:
    """Posts updates to the servers, round robin, each until it is answered 200."""

    def __init__(
        self,
        urls: list[str],
        http: aiohttp.ClientSession,
        *,
        telegram_secret: str,
        oa: FakeZaloOA | None = None,
    ) -> None:
        self.urls = urls
        self.http = http
        self.telegram_secret = telegram_secret
        self.oa = oa
        self.deliveries: list[Delivery] = []
        self._turn = itertools.count()
        self._update_ids = itertools.count(500_000)

    def next_update_id(self) -> int:
        return next(self._update_ids)

    async def telegram(self, update: dict[str, Any], chat_id: str) -> Delivery:
        body = json.dumps(update, ensure_ascii=False).encode()
        headers = {
            TELEGRAM_SECRET_HEADER: self.telegram_secret,
            "Content-Type": "application/json",
        }
        delivery = Delivery(TELEGRAM, str(update["update_id"]), chat_id)
        await self._post(delivery, PATHS[TELEGRAM], body, headers)
        return delivery

    async def zalo(self, event: dict[str, Any], chat_id: str) -> Delivery:
        """A signed OA event. Zalo itself does not send an event again: a failed one is
        posted again here as the resident would send the message again."""
        assert self.oa is not None
        body = json.dumps(event, ensure_ascii=False).encode()
        mac = expected_signature(
            self.oa.app_id, body, str(event["timestamp"]), self.oa.oa_secret_key
        )
        headers = {SIGNATURE_HEADER: f"mac={mac}", "Content-Type": "application/json"}
        message = event.get("message") or {}
        follow = keys().lookup("follow", f"{chat_id}:{event['timestamp']}")
        key = str(message.get("msg_id") or f"follow:{follow}")
        delivery = Delivery(ZALO_OA, key, chat_id)
        await self._post(delivery, PATHS[ZALO_OA], body, headers)
        return delivery

    async def _post(
        self, delivery: Delivery, path: str, body: bytes, headers: dict[str, str]
    ) -> None:
        self.deliveries.append(delivery)
        server = next(self._turn) % len(self.urls)
        began = time.monotonic()
        pause = 0.5
        while True:
            t0 = time.monotonic()
            try:
                async with self.http.post(
                    self.urls[server] + path,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT),
                ) as response:
                    await response.read()
                    outcome = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            delivery.attempts.append((server, outcome, t0, time.monotonic() - t0))
            if outcome == "200":
                delivery.acked_at = time.monotonic()
                return
            if time.monotonic() - began > GIVE_UP:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 4.0)
            server = (server + 1) % len(self.urls)

    def outcomes(self, channel: str | None = None) -> Counter[str]:
        """How the attempts ended, by HTTP status or error."""
        return Counter(
            outcome
            for d in self.deliveries
            if channel is None or d.channel == channel
            for _, outcome, _, _ in d.attempts
        )
