"""The chat writer's own SQLite engine: it never blocks the loop on another connection's
lock, it waits for the lock and loses nothing, and its WAL is checkpointed off the loop."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.db import checkpoint_forever
from backend.models import Conversation, OutboxMessage, ProcessedUpdate, utcnow
from backend.services.units import WardIndex
from bot.dispatcher import Dispatcher
from handlers.events import Incoming
from handlers.turn import Services
from tests.conftest import PG_URL

pytestmark = pytest.mark.skipif(PG_URL is not None, reason="SQLite's write lock and WAL")


def _start(update_id: str, chat: str = "77") -> Incoming:
    return Incoming(
        channel="telegram",
        chat_id=chat,
        update_id=update_id,
        kind="command",
        command="start",
        text="/start",
    )


def _size(path: Path) -> int:
    return path.stat().st_size


def _path(database_url: str) -> str:
    return str(make_url(database_url).database)


async def test_a_held_write_lock_delays_the_batch_without_blocking_the_loop(
    database_url: str, writer: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    other = sqlite3.connect(_path(database_url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    dispatcher = Dispatcher(writer, Services(WardIndex([])), {})
    dispatcher.start()
    try:
        handled = dispatcher.submit(_start("1"))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1  # the loop keeps running while the batch waits for the lock
        assert not handled.done()
        other.execute("COMMIT")
        await asyncio.wait_for(handled, 5)
    finally:
        other.close()
        await dispatcher.stop()
    assert ticks == 20
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedUpdate)) == 1
        assert await session.scalar(select(Conversation.state)) == "consent"
        # The welcome and the consent question, as one message.
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


async def test_the_writer_leaves_checkpoints_to_the_background_task(
    database_url: str, writer: AsyncEngine, engine: AsyncEngine
) -> None:
    wal = Path(_path(database_url) + "-wal")
    dispatcher = Dispatcher(writer, Services(WardIndex([])), {})
    dispatcher.start()
    try:
        for n in range(1, 401):  # one commit each, several pages per commit
            await dispatcher.handle(_start(str(n), chat=str(n)))
        # SQLite's own checkpoint would have restarted the WAL after 1,000 pages.
        assert _size(wal) > 2000 * 4096
        task = asyncio.create_task(checkpoint_forever(engine, interval=0.05))
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Everything was copied into the database, so the next commit starts the WAL over.
        await dispatcher.handle(_start("401", chat="401"))
    finally:
        await dispatcher.stop()
    probe = sqlite3.connect(_path(database_url))
    try:
        busy, frames, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        probe.close()
    assert busy == 0
    assert 0 < frames < 100


async def test_the_writers_rows_read_back_as_sqlalchemy_wrote_them(
    writer: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert writer.dialect.driver == "inline"  # the plain sqlite3 path is the one in use
    before = utcnow()
    dispatcher = Dispatcher(writer, Services(WardIndex([])), {})
    dispatcher.start()
    try:
        await dispatcher.handle(_start("1", chat="55"))
        await dispatcher.handle(_start("1", chat="55"))  # the same update again: skipped
    finally:
        await dispatcher.stop()
    async with sessions() as session:
        conv = (await session.scalars(select(Conversation))).one()
        rows = list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        processed = (await session.scalars(select(ProcessedUpdate))).one()
        # The outbox worker's own query finds them due.
        due = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= utcnow())
        )
    assert (conv.state, conv.language, conv.reporter_id is not None) == ("consent", "vi", True)
    assert before <= conv.updated_at <= utcnow() and conv.updated_at.tzinfo is not None
    assert [r.payload["type"] for r in rows] == ["reply"]
    assert "91/2025/QH15" in rows[0].payload["text"]
    assert due == 1 and before <= processed.processed_at <= utcnow()
