"""A resident's chat driven through the real dispatcher and database, with no network:
replies are read back from the outbox."""

from __future__ import annotations

import asyncio
from itertools import count
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Conversation, OutboxMessage
from bot.dispatcher import Dispatcher
from handlers.events import Capabilities, Incoming
from tests.factories import chat_key

TELEGRAM_LIKE = Capabilities(inline_buttons=True, request_location=True, request_contact=True)
# A channel with neither buttons nor location/contact requests.
TEXT_ONLY = Capabilities(inline_buttons=False)
_ids = count(1)


class Chat:
    """One resident's chat, driven through the dispatcher."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        sessions: async_sessionmaker[AsyncSession],
        chat_id: str,
        channel: str = "telegram",
    ) -> None:
        self.dispatcher = dispatcher
        self.sessions = sessions
        self.chat_id = chat_id
        self.channel = channel
        self.read = 0

    async def send(self, kind: str, update_id: str | None = None, **fields: Any) -> str:
        uid = update_id or str(next(_ids))
        await self.dispatcher.handle(
            Incoming(channel=self.channel, chat_id=self.chat_id, update_id=uid, kind=kind, **fields)  # type: ignore[arg-type]
        )
        return uid

    async def say(self, text: str) -> list[dict[str, Any]]:
        if text.startswith("/"):
            command, _, args = text[1:].partition(" ")
            await self.send("command", command=command, args=args, text=text)
        else:
            await self.send("text", text=text)
        return await self.replies()

    async def press(self, data: str) -> list[dict[str, Any]]:
        await self.send("button", button=data, callback_id=f"cb{next(_ids)}")
        return await self.replies()

    async def replies(self) -> list[dict[str, Any]]:
        """Messages (not acks) written to the outbox since the last call."""
        async with self.sessions() as session:
            rows = list(
                await session.scalars(
                    select(OutboxMessage)
                    .where(
                        OutboxMessage.channel == self.channel,
                        OutboxMessage.chat_key == chat_key(self.channel, self.chat_id),
                    )
                    .order_by(OutboxMessage.id)
                )
            )
        new = rows[self.read :]
        self.read = len(rows)
        return [r.payload for r in new if r.payload["type"] == "reply"]

    async def wait_replies(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Replies that come later (after a follow-up such as a geocoder call)."""
        async with asyncio.timeout(timeout):
            while True:
                found = await self.replies()
                if found:
                    return found
                await asyncio.sleep(0.02)

    async def state(self) -> str:
        async with self.sessions() as session:
            conv = await session.scalar(
                select(Conversation).where(
                    Conversation.channel == self.channel,
                    Conversation.chat_key == chat_key(self.channel, self.chat_id),
                )
            )
        return conv.state if conv else "none"


def texts(replies: list[dict[str, Any]]) -> str:
    return "\n".join(r["text"] for r in replies)
