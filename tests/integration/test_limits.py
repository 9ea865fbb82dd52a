"""The shared limits: a count every process sees, taken atomically."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.db import create_engine, session_factory, write_retrying
from backend.models import RateCount
from backend.services.limits import DAY, HOUR, Limit, sweep, take, take_all, window_start

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC).timestamp()


async def _take(sessions: async_sessionmaker[AsyncSession], name: str, limit: Limit) -> bool:
    async def attempt() -> bool:
        async with sessions() as session, session.begin():
            return await take(session, name, limit, NOW)

    return await write_retrying(attempt)


async def test_a_limit_allows_its_count_in_a_window_and_refuses_the_next(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    limit = Limit(3, HOUR)
    taken = [await _take(sessions, "reporter:1", limit) for _ in range(4)]
    assert taken == [True, True, True, False]
    # Another name has its own count.
    assert await _take(sessions, "reporter:2", limit)


async def test_a_new_window_starts_a_new_count(sessions: async_sessionmaker[AsyncSession]) -> None:
    limit = Limit(1, HOUR)
    async with sessions() as session, session.begin():
        assert await take(session, "k", limit, NOW)
        assert not await take(session, "k", limit, NOW + 60)
        assert await take(session, "k", limit, NOW + HOUR)


async def test_a_rolled_back_attempt_is_not_counted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    limit = Limit(1, HOUR)
    async with sessions() as session:
        transaction = await session.begin()
        assert await take(session, "k", limit, NOW)
        await transaction.rollback()
    assert await _take(sessions, "k", limit)


async def test_a_day_starts_at_midnight_in_vietnam() -> None:
    # 16:59 UTC is 23:59 in Vietnam; 17:00 UTC is the next day there.
    before = datetime(2026, 12, 2, 16, 59, tzinfo=UTC).timestamp()
    after = datetime(2026, 12, 2, 17, 0, tzinfo=UTC).timestamp()
    assert window_start(before, DAY) != window_start(after, DAY)
    assert window_start(after, DAY) == after


async def test_take_all_counts_the_hour_and_the_day(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    limits = [Limit(2, HOUR), Limit(3, DAY)]
    async with sessions() as session, session.begin():
        results = [await take_all(session, "r", limits, NOW + i * HOUR / 2) for i in range(5)]
    # Two in the first hour, then the second hour's first; the day's three are used up.
    assert results == [True, True, True, False, False]


async def test_connections_racing_for_the_last_slots_get_exactly_the_limit(
    database_url: str,
) -> None:
    """Separate engines stand for separate processes: 30 racing takes of a limit of 10
    succeed 10 times, and the count says 30."""
    engines: list[AsyncEngine] = [create_engine(database_url) for _ in range(3)]
    try:
        makers = [session_factory(e) for e in engines]
        limit = Limit(10, HOUR)
        results = await asyncio.gather(*(_take(makers[i % 3], "race", limit) for i in range(30)))
        assert sum(results) == 10
        async with makers[0]() as session:
            assert await session.scalar(select(func.sum(RateCount.count))) == 30
    finally:
        for e in engines:
            await e.dispose()


async def test_ended_windows_are_swept(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        await take(session, "old", Limit(5, HOUR), NOW - 2 * HOUR)
        await take(session, "current", Limit(5, HOUR), NOW)
        assert await sweep(session, datetime.fromtimestamp(NOW, UTC)) == 1
        names = (await session.scalars(select(RateCount.name))).all()
    assert names == ["current"]
