"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.config import Settings
from bot.outbox import OutboxWorker
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.outbox_process import start_outbox, telegram_settings


@pytest.fixture
async def worker(
    api: FakeTelegram,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> AsyncIterator[OutboxWorker]:
    """One process's outbox worker on the Telegram stand-in, not started."""
    process = await start_outbox(telegram_settings(settings, api), engine, sessions, max_attempts=3)
    yield process.outbox
    await process.stop()
