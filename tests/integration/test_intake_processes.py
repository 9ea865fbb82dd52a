"""Two server processes taking updates for the same new chats at the same moment: each
update takes effect once, in turn, and no resident gets an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import create_engine, create_writer_engine, session_factory
from backend.models import Conversation, InboundEvent, OutboxMessage
from backend.services.presence import Presence
from backend.services.units import WardIndex
from bot.dispatcher import Dispatcher
from bot.inbox import Inbox
from bot.parsing import text_or_command
from handlers.events import Incoming
from handlers.i18n import translate
from handlers.turn import Services


def incoming(body: Mapping[str, Any]) -> Incoming:
    return text_or_command(
        str(body["text"]),
        channel="telegram",
        chat_id=str(body["chat"]),
        update_id=str(body["id"]),
        language="vi",
    )


async def read(body: Mapping[str, Any]) -> Incoming | None:
    return incoming(body)


@dataclass
class Process:
    engines: list[AsyncEngine]
    presence: Presence
    dispatcher: Dispatcher
    inbox: Inbox

    async def send(self, update_id: int, chat: int, text: str) -> None:
        body = {"id": update_id, "chat": chat, "text": text}
        await self.inbox.accept("telegram", str(update_id), str(chat), body, ready=incoming(body))

    async def stop(self) -> None:
        await self.inbox.stop()
        await self.dispatcher.stop()
        await self.presence.stop()
        for engine in self.engines:
            await engine.dispose()


Start = Callable[[], Awaitable[Process]]


@pytest.fixture
async def start_process(database_url: str) -> AsyncIterator[Start]:
    started: list[Process] = []

    async def start() -> Process:
        """A server process's intake: its own engines, beat, dispatcher and inbox."""
        engine = create_engine(database_url)
        writer = create_writer_engine(database_url)
        presence = Presence(session_factory(engine), alone=False)
        await presence.beat()
        presence.start()
        dispatcher = Dispatcher(writer or engine, Services(wards=WardIndex([])), {})
        inbox = Inbox(writer or engine, presence, dispatcher, poll_interval=0.1)
        dispatcher.on_waiting = inbox.wake
        inbox.add_reader("telegram", read)
        dispatcher.start()
        inbox.start()
        process = Process(
            [e for e in (writer, engine) if e is not None], presence, dispatcher, inbox
        )
        started.append(process)
        return process

    yield start
    for process in started:
        await process.stop()


async def settle(engine: AsyncEngine, expected: int, within: float = 30.0) -> None:
    """Wait until every update is stored and handled."""
    sessions = session_factory(engine)
    deadline = time.monotonic() + within
    while True:
        async with sessions() as session:
            handled = await session.scalar(
                select(func.count()).where(InboundEvent.handled_at.is_not(None))
            )
        if handled == expected:
            return
        assert time.monotonic() < deadline, f"{handled} of {expected} updates handled"
        await asyncio.sleep(0.1)


async def error_replies(engine: AsyncEngine) -> int:
    apologies = {translate(lang, "error.internal") for lang in ("vi", "en")}
    async with session_factory(engine)() as session:
        payloads = await session.scalars(select(OutboxMessage.payload))
        return sum(1 for p in payloads if p.get("text") in apologies)


CHATS = range(7000, 7050)


async def race(start_process: Start, engine: AsyncEngine, first: str, second: str) -> None:
    """Each chat's first update to one process, its second to another, at the same moment;
    wait until all are handled."""
    one, other = await start_process(), await start_process()
    await asyncio.gather(
        *(one.send(2 * chat, chat, first) for chat in CHATS),
        *(other.send(2 * chat + 1, chat, second) for chat in CHATS),
    )
    await settle(engine, 2 * len(CHATS))


async def test_start_and_a_language_change_on_two_processes_both_take_effect(
    start_process: Start, engine: AsyncEngine
) -> None:
    await race(start_process, engine, "/start", "/lang en")
    async with session_factory(engine)() as session:
        languages = list(await session.scalars(select(Conversation.language)))
    assert len(languages) == len(CHATS)
    assert set(languages) == {"en"}, languages
    assert await error_replies(engine) == 0


async def test_two_starts_of_one_new_chat_on_two_processes_give_no_error(
    start_process: Start, engine: AsyncEngine
) -> None:
    await race(start_process, engine, "/start", "/start")
    async with session_factory(engine)() as session:
        chats = await session.scalar(select(func.count()).select_from(Conversation))
    assert chats == len(CHATS)
    assert await error_replies(engine) == 0
