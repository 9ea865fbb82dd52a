"""Delivery from the outbox to the Bot API stand-in: pacing, retry_after, backoff, failure."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

from sqlalchemy import String, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.crypto import keyring_from, keys, new_key
from backend.models import OutboxMessage, utcnow
from bot.outbox import OutboxWorker
from handlers.events import Reply
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.outbox_process import start_outbox, telegram_settings


async def enqueue(sessions: async_sessionmaker[AsyncSession], chat: str, *texts: str) -> None:
    async with sessions() as session, session.begin():
        for text in texts:
            session.add(OutboxMessage.to("telegram", chat, Reply(text).to_payload()))


async def rows(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    async with sessions() as session:
        return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def test_one_message_a_second_per_chat_in_order(
    api: FakeTelegram, worker: OutboxWorker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await enqueue(sessions, "1", "a", "b", "c")
    await enqueue(sessions, "2", "x")
    worker.start()
    try:
        sent = await api.wait_sent(1, 3, timeout=10)
        await api.wait_sent(2, 1)
    finally:
        await worker.stop()
    assert [s.text for s in sent] == ["a", "b", "c"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(sent)]
    assert all(g >= 0.95 for g in gaps), gaps
    # Another chat is not held up behind the first one's pacing.
    assert api.sent_to(2)[0].at - sent[0].at < 0.5
    assert all(r.status == "sent" for r in await rows(sessions))


async def test_retry_after_is_honoured_and_not_a_failure(
    api: FakeTelegram, worker: OutboxWorker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    api.fail_next("sendMessage", 429, retry_after=1)
    await enqueue(sessions, "1", "hello")
    before = utcnow()
    tried, _ = await worker.pump()
    assert tried == 1 and api.sent_to(1) == []
    (row,) = await rows(sessions)
    assert row.status == "pending" and row.attempts == 0
    assert row.next_attempt_at >= before + timedelta(seconds=1)
    assert "retry after 1" in (row.last_error or "")
    worker.start()
    try:
        await api.wait_sent(1, 1, timeout=5)
    finally:
        await worker.stop()
    (row,) = await rows(sessions)
    assert row.status == "sent"


async def test_server_errors_back_off_then_fail(
    api: FakeTelegram, worker: OutboxWorker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    api.fail_next("sendMessage", 500)
    await enqueue(sessions, "1", "hello")
    await worker.pump()
    (row,) = await rows(sessions)
    assert row.status == "pending" and row.attempts == 1
    assert row.next_attempt_at - utcnow() > timedelta(seconds=1)
    # Nothing is due yet: the next pump leaves it alone.
    assert (await worker.pump())[0] == 0


async def test_a_blocked_bot_is_a_permanent_failure(
    api: FakeTelegram, worker: OutboxWorker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    api.fail_next("sendMessage", 403)
    await enqueue(sessions, "1", "hello", "second")
    await worker.pump()
    first, second = await rows(sessions)
    assert first.status == "failed" and "Forbidden" in (first.last_error or "")
    # The next message of the chat still goes out, after the per-chat pause.
    worker.start()
    sent = await api.wait_sent(1, 1, timeout=5)
    await worker.stop()
    assert [s.text for s in sent] == ["second"]
    assert (await rows(sessions))[1].status == "sent" and second.id > first.id


async def _due_now(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Let the waiting time pass: make every pending row due (after the chat's 1 s pause)."""
    await asyncio.sleep(1.05)
    async with sessions() as session, session.begin():
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.status == "pending")
            .values(next_attempt_at=utcnow())
        )


async def test_429_then_500_then_ok_delivers_exactly_once(
    api: FakeTelegram, worker: OutboxWorker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    api.fail_next("sendMessage", 429, retry_after=3)
    api.fail_next("sendMessage", 500)
    await enqueue(sessions, "1", "kết quả")
    await worker.pump()
    (row,) = await rows(sessions)
    assert (row.status, row.attempts) == ("pending", 0)  # 429 is not the message's fault
    assert row.next_attempt_at - utcnow() > timedelta(seconds=2)
    assert (await worker.pump())[0] == 0  # retry_after is honoured
    await _due_now(sessions)
    await worker.pump()
    (row,) = await rows(sessions)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "Internal Server Error" in (row.last_error or "")
    await _due_now(sessions)
    await worker.pump()
    await _due_now(sessions)
    await worker.pump()
    (row,) = await rows(sessions)
    assert row.status == "sent"
    assert [s.text for s in api.sent_to(1)] == ["kết quả"]


async def test_nothing_is_lost_or_repeated_across_a_restart(
    api: FakeTelegram,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    await enqueue(sessions, "1", "một", "hai", "ba")

    async def serve_until(count: int) -> None:
        """One server's life: its own channel and worker, stopped after count messages."""
        process = await start_outbox(
            telegram_settings(settings, api), engine, sessions, max_attempts=3
        )
        process.outbox.start()
        try:
            await api.wait_sent(1, count, timeout=10)
        finally:
            await process.stop()

    await serve_until(1)
    await serve_until(3)  # the restarted server carries on where the first stopped
    assert [s.text for s in api.sent_to(1)] == ["một", "hai", "ba"]
    assert [r.status for r in await rows(sessions)] == ["sent"] * 3


async def test_a_row_sealed_under_a_key_this_process_lacks_holds_up_its_own_chat_only(
    api: FakeTelegram, worker: OutboxWorker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    stranger = keyring_from(new_key())
    async with sessions() as session, session.begin():
        session.add(
            OutboxMessage(
                channel="telegram",
                chat_key=keys().chat_key("telegram", "1"),
                address=None,
                payload={"type": "reply", "text": "x"},
            )
        )
    # What another key sealed (HOTLINE_DATA_KEY_PREVIOUS removed too early, say).
    async with sessions() as session, session.begin():
        await session.execute(
            update(OutboxMessage).values(
                address=type_coerce(stranger.seal("1", "outbox.address"), String),
                payload=type_coerce(
                    stranger.seal_json({"type": "reply"}, "outbox.payload"), String
                ),
            )
        )
    await enqueue(sessions, "2", "hello")
    await worker.pump()
    assert [s.text for s in api.sent_to(2)] == ["hello"]
    assert api.sent_to(1) == []
    async with sessions() as session:
        statuses = list(
            await session.scalars(select(OutboxMessage.status).order_by(OutboxMessage.id))
        )
    assert statuses == ["pending", "sent"], "the unreadable row is kept for the right key"
