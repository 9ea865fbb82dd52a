"""The outbox shared by several processes on one database: one sender per channel, limits
for all together, fair across chats, and a dead sender's work taken over within seconds."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Duty, OutboxMessage
from handlers.events import Ack, Reply
from tests.fakes.telegram_api import FakeTelegram, Sent
from tests.integration.outbox_process import Process, start_outbox

Start = Callable[[], Awaitable[Process]]


@pytest.fixture
async def start_process(
    api: FakeTelegram,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> AsyncIterator[Start]:
    started: list[Process] = []
    tg_settings = settings.model_copy(
        update={
            "telegram_token": SecretStr(api.token),
            "telegram_api_url": api.url,
            "telegram_rate_global": 10.0,
        }
    )

    async def start() -> Process:
        process = await start_outbox(tg_settings, engine, sessions, poll_interval=0.2, alone=False)
        process.outbox.start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.presence._task is not None:
            await process.stop()


async def enqueue(sessions: async_sessionmaker[AsyncSession], chats: range, per_chat: int) -> None:
    """per_chat messages to each chat, queued round-robin as a busy hour would."""
    async with sessions() as session, session.begin():
        for n in range(per_chat):
            for chat in chats:
                session.add(
                    OutboxMessage.to(
                        "telegram",
                        str(chat),
                        Reply(f"{chat}:{n}").to_payload(),
                    )
                )


async def wait_all_sent(sessions: async_sessionmaker[AsyncSession], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        async with sessions() as session:
            pending = await session.scalar(
                select(func.count()).where(OutboxMessage.status == "pending")
            )
        if pending == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending} messages still pending")
        await asyncio.sleep(0.2)


def most_in_a_second(sent: list[Sent]) -> int:
    times = sorted(s.at for s in sent)
    return max(
        (sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)), default=0
    )


def check_per_chat(sent: list[Sent], chats: range, per_chat: int) -> Counter[str]:
    """Every chat got its messages in order, paced one a second; returns the repeats."""
    repeats: Counter[str] = Counter()
    for chat in chats:
        mine = [s for s in sent if s.chat_id == str(chat)]
        texts = [s.text for s in mine]
        unique = [t for t, _ in itertools.groupby(texts)]
        assert unique == [f"{chat}:{n}" for n in range(per_chat)], texts
        repeats[str(chat)] = len(texts) - len(unique)
        gaps = [b.at - a.at for a, b in itertools.pairwise(mine)]
        assert all(g >= 0.95 for g in gaps), (chat, gaps)
    return repeats


async def test_one_busy_chat_does_not_delay_the_others(
    api: FakeTelegram, start_process: Start, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await enqueue(sessions, range(1, 2), 600)
    await enqueue(sessions, range(100, 150), 1)
    began = time.monotonic()
    await start_process()
    for chat in range(100, 150):
        await api.wait_sent(chat, 1, timeout=15)
    # 50 chats at 10 a second overall, besides the busy chat's one a second.
    latest = max(api.sent_to(chat)[0].at for chat in range(100, 150)) - began
    assert latest < 8.0, latest


async def test_a_button_answer_overtakes_a_backlog(
    api: FakeTelegram, start_process: Start, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await enqueue(sessions, range(1, 80), 1)
    await start_process()
    await api.wait_sent(1, 1)
    async with sessions() as session, session.begin():
        session.add(OutboxMessage.to("telegram", "5000", Ack("cb-1").to_payload()))
    asked = time.monotonic()
    while not api.answered_callbacks:
        assert time.monotonic() - asked < 2.5, "the button answer waited behind the backlog"
        await asyncio.sleep(0.05)
    # The backlog of 79 messages at 10 a second is far from done by then.
    assert len(api.sent) < 60


async def test_two_processes_share_the_limits_and_send_each_message_once(
    api: FakeTelegram, start_process: Start, sessions: async_sessionmaker[AsyncSession]
) -> None:
    chats = range(1, 21)
    await enqueue(sessions, chats, 4)
    first, second = await start_process(), await start_process()
    await wait_all_sent(sessions, timeout=30)
    repeats = check_per_chat(api.sent, chats, 4)
    assert sum(repeats.values()) == 0
    assert len(api.sent) == 80
    # 10 a second for the channel, whichever process sends (two processes sending on
    # their own would reach 20); one more for a send at each end of the window, and one
    # for a request held up on a loaded machine.
    assert most_in_a_second(api.sent) <= 12, most_in_a_second(api.sent)
    async with sessions() as session:
        owner = await session.scalar(select(Duty.owner).where(Duty.name == "outbox:telegram"))
    assert owner in (first.presence.id, second.presence.id)


async def test_a_killed_sender_is_replaced_within_seconds(
    api: FakeTelegram, start_process: Start, sessions: async_sessionmaker[AsyncSession]
) -> None:
    chats = range(1, 21)
    await enqueue(sessions, chats, 5)
    first, second = await start_process(), await start_process()
    sender, standby = (
        (first, second) if first.presence.holds("outbox:telegram") else (second, first)
    )
    assert standby.presence.holds("outbox:telegram") is False
    await api.wait_total(25)
    await sender.kill()
    killed_at = time.monotonic()
    sent_before = len(api.sent)
    while len(api.sent) == sent_before:
        assert time.monotonic() - killed_at < 10.0, "nothing was sent for 10 s after the crash"
        await asyncio.sleep(0.05)
    await wait_all_sent(sessions, timeout=30)
    repeats = check_per_chat(api.sent, chats, 5)
    # Only a message under way at the kill can go twice: one per chat at most.
    assert all(n <= 1 for n in repeats.values()), repeats
    assert len(api.sent) - 100 == sum(repeats.values())
    assert standby.presence.holds("outbox:telegram")


async def test_each_send_is_recorded_when_the_platform_answers(
    api: FakeTelegram, start_process: Start, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await enqueue(sessions, range(1, 31), 1)
    process = await start_process()
    await api.wait_total(12)
    await process.kill()
    async with sessions() as session:
        recorded = await session.scalar(select(func.count()).where(OutboxMessage.status == "sent"))
    # What the platform answered before the kill is recorded, but for the sends under way.
    assert recorded is not None and len(api.sent) - recorded <= 1
