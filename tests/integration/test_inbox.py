"""The inbox answers a platform in time even when the database fails, and keeps the event."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.models import InboundEvent
from backend.services.units import WardIndex
from bot.dispatcher import Dispatcher
from bot.inbox import Inbox
from handlers.turn import Services


async def test_an_event_the_database_refuses_is_answered_then_stored_once_it_can(
    engine: AsyncEngine, writer: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        wards = await WardIndex.load(session)
    inbox = Inbox(sessions, Dispatcher(writer, Services(wards=wards), {}))
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE inbound_events RENAME TO inbound_events_away"))
    started = time.monotonic()
    stored = await inbox.accept("zalo_oa", "msg-1", "user-1", {"n": 1}, patience=0.5)
    assert not stored and time.monotonic() - started < 1.0
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE inbound_events_away RENAME TO inbound_events"))
    deadline = time.monotonic() + 10
    count = 0
    while count == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        async with sessions() as session:
            count = await session.scalar(select(func.count()).select_from(InboundEvent)) or 0
    assert count == 1
    # The same event again is stored once, and in time now.
    assert await inbox.accept("zalo_oa", "msg-1", "user-1", {"n": 1})
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboundEvent)) == 1
    await inbox.stop()
