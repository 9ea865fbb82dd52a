"""The platforms' stand-ins as recorders: what each chat was sent and when, every call
that the outbox's limits govern, and faults on demand."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from bot.standin import BotApiStandIn, Sent
from tests.fakes.zalo_oa import FakeZaloOA, OAMessage

T = TypeVar("T")

# The Bot API methods the outbox calls, which Telegram's limits govern.
SENDING = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "answerCallbackQuery",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
    }
)


@dataclass(frozen=True, slots=True)
class Received(Generic[T]):
    """One message as a chat received it: when, and what."""

    at: float
    item: T
    identity: Hashable


class Mailboxes(Generic[T]):
    """Each chat's messages in arrival order, stamped when this process's loop got to
    them; and waiting until a chat's messages are what a resident expects.

    A message sent twice in a row (the same text and buttons) counts once as distinct:
    a platform that heard a send whose answer the sender never recorded gets it again.
    """

    def __init__(self, identity: Callable[[T], Hashable]) -> None:
        self._identity = identity
        self.chats: dict[str, list[Received[T]]] = defaultdict(list)
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def add(self, chat_id: str, item: T) -> None:
        self.chats[chat_id].append(Received(time.monotonic(), item, self._identity(item)))
        self._events[chat_id].set()

    def distinct(self, chat_id: str) -> list[Received[T]]:
        out: list[Received[T]] = []
        for got in self.chats.get(chat_id, []):
            if not out or out[-1].identity != got.identity:
                out.append(got)
        return out

    async def wait(
        self, chat_id: str, done: Callable[[list[Received[T]]], bool], timeout: float
    ) -> list[Received[T]]:
        """The chat's distinct messages once `done` says they are all there; TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.distinct(chat_id)
            if done(got):
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(got)} messages, not what was expected")
            event = self._events[chat_id]
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def all(self) -> list[Received[T]]:
        return sorted((r for rs in self.chats.values() for r in rs), key=lambda r: r.at)


def _sent_identity(sent: Sent) -> Hashable:
    return (sent.method, sent.text, json.dumps(sent.reply_markup, sort_keys=True, default=str))


# A fault: for a sending method, None to answer normally, or (HTTP status, body).
Fault = Callable[[str], tuple[int, dict[str, Any]] | None]


@dataclass
class TelegramRecorder(BotApiStandIn):
    """The Bot API stand-in, recording each governed call's time, and refusing calls as
    `fault` decides."""

    fault: Fault | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.messages: Mailboxes[Sent] = Mailboxes(_sent_identity)
        # Every governed call that was served: (monotonic time, method).
        self.served: list[tuple[float, str]] = []
        # Callback query id → times it was answered.
        self.acks: dict[str, list[float]] = defaultdict(list)
        self.refused: Counter[str] = Counter()
        # When each 429 was answered, and the retry_after it asked for.
        self.retry_afters: list[tuple[float, float]] = []

    async def _method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if self.fault is not None and method in SENDING:
            refusal = self.fault(method)
            if refusal is not None:
                await request.read()
                status, body = refusal
                self.refused[f"{method} → {status}"] += 1
                if status == 429:
                    wait = float(body.get("parameters", {}).get("retry_after", 0))
                    self.retry_afters.append((time.monotonic(), wait))
                return web.json_response(body, status=status)
        return await super()._method(request)

    def _record(self, method: str, params: dict[str, Any], msg: dict[str, Any]) -> None:
        super()._record(method, params, msg)
        sent = self.sent[-1]
        self.served.append((sent.at, method))
        self.messages.add(sent.chat_id, sent)

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        now = time.monotonic()
        self.served.append((now, "answerCallbackQuery"))
        self.acks[str(params.get("callback_query_id"))].append(now)
        return await super()._m_answerCallbackQuery(params)


def storm(
    began: float, retry_phase: float, error_phase: float, share: float = 0.5, seed: int = 7
) -> Fault:
    """Telegram under strain: from `began` (monotonic), `share` of the sends answered 429
    with retry_after 3 for `retry_phase` seconds, then that share answered 500 for
    `error_phase` seconds; then every send goes through."""
    dice = random.Random(seed)

    def fault(method: str) -> tuple[int, dict[str, Any]] | None:
        t = time.monotonic() - began
        if t < 0 or t >= retry_phase + error_phase or dice.random() >= share:
            return None
        if t < retry_phase:
            return 429, {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 3",
                "parameters": {"retry_after": 3},
            }
        return 500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}

    return fault


def _oa_identity(message: OAMessage) -> Hashable:
    return (message.text, message.image is not None)


@dataclass
class ZaloRecorder(FakeZaloOA):
    """The Zalo OA stand-in, recording when each consultation message was sent."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.messages: Mailboxes[OAMessage] = Mailboxes(_oa_identity)
        log = self.sent
        original = log.add

        def add(item: OAMessage) -> None:
            original(item)
            self.messages.add(item.user_id, item)

        log.add = add  # type: ignore[method-assign]
