"""One server process's outbox, as the tests start (and kill) it."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.services.presence import Presence
from backend.services.units import WardIndex
from bot.dispatcher import Dispatcher
from bot.inbox import Inbox
from bot.outbox import OutboxWorker
from bot.tasks import cancel
from bot.telegram import TelegramChannel
from handlers.turn import Services
from tests.fakes.telegram_api import FakeTelegram


@dataclass
class Process:
    """What one server process runs of the outbox: its beat, its worker, its channel."""

    presence: Presence
    outbox: OutboxWorker
    channel: TelegramChannel

    async def stop(self) -> None:
        await self.outbox.stop()
        await self.presence.stop()
        await self.channel.bot.shutdown()

    async def kill(self) -> None:
        """Stop as kill -9 would: mid-send, nothing recorded, no lease handed back."""
        await cancel(self.presence._task)
        await cancel(self.outbox._task)
        for task in list(self.outbox._flying.values()):
            await cancel(task)
        await self.channel.bot.shutdown()


async def start_outbox(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    *,
    max_attempts: int = 8,
    poll_interval: float = 1.0,
    alone: bool | None = None,
) -> Process:
    """A process's Telegram sender, beating, its worker not started yet. alone=False: one
    of several processes, as on PostgreSQL, whatever the database."""
    presence = Presence(sessions, alone=alone)
    dispatcher = Dispatcher(engine, Services(WardIndex([])), {})
    channel = TelegramChannel(settings, Inbox(engine, presence, dispatcher), presence)
    await channel.bot.initialize()
    outbox = OutboxWorker(
        sessions, presence, max_attempts=max_attempts, poll_interval=poll_interval
    )
    outbox.add_sender(channel)
    await presence.beat()
    presence.start()
    return Process(presence, outbox, channel)


def telegram_settings(settings: Settings, api: FakeTelegram) -> Settings:
    """The settings with Telegram on, at the stand-in."""
    return settings.model_copy(
        update={"telegram_token": SecretStr(api.token), "telegram_api_url": api.url}
    )
