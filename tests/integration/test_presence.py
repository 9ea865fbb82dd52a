"""Processes' beats and duties: one holder per duty, taken over only from the dead, and
only by a process that has itself beaten steadily for as long."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Duty, ProcessBeat, utcnow
from backend.services.presence import BEAT, DEAD_AFTER, Presence


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def beat_steadily(clock: Clock, presence: Presence, seconds: float) -> None:
    """Let seconds pass with presence beating every BEAT seconds as it does."""
    for _ in range(int(seconds // BEAT) + 1):
        clock.now += BEAT
        await presence.beat()


async def age_beat(sessions: async_sessionmaker[AsyncSession], presence: Presence) -> None:
    """Make a process's last beat look DEAD_AFTER old, as after it died."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(ProcessBeat)
            .where(ProcessBeat.id == presence.id)
            .values(seen_at=utcnow() - timedelta(seconds=DEAD_AFTER + 1))
        )


async def test_a_duty_has_one_holder_and_passes_on_only_from_the_dead(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = Clock()
    first, second = (
        Presence(sessions, clock=clock, alone=False),
        Presence(sessions, clock=clock, alone=False),
    )
    for p in (first, second):
        p.want("poll")
    await first.beat()
    await second.beat()
    assert first.holds("poll") and not second.holds("poll")
    # The holder goes quiet; the other has not beaten long enough to judge it dead.
    await age_beat(sessions, first)
    clock.now += BEAT
    await second.beat()
    assert not second.holds("poll")
    await beat_steadily(clock, second, DEAD_AFTER)
    assert second.holds("poll")
    # The old holder learns it at its next beat.
    await first.beat()
    assert not first.holds("poll")


async def test_after_an_outage_no_one_takes_over_at_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = Clock()
    holder, other = (
        Presence(sessions, clock=clock, alone=False),
        Presence(sessions, clock=clock, alone=False),
    )
    holder.want("poll")
    other.want("poll")
    await holder.beat()
    await other.beat()
    await beat_steadily(clock, other, DEAD_AFTER)
    assert other.may_take_over()
    # The database was away for 10 s: every beat is old, the holder's too.
    clock.now += 10
    await age_beat(sessions, holder)
    assert not other.alive() and not holder.holds("poll")
    await other.beat()
    assert not other.may_take_over() and not other.holds("poll")
    await holder.beat()
    assert holder.holds("poll")


async def test_a_process_that_stops_hands_its_duties_back(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first, second = Presence(sessions, alone=False), Presence(sessions, alone=False)
    first.want("poll")
    second.want("poll")
    await first.beat()
    await second.beat()
    await first.stop()
    async with sessions() as session:
        assert await session.scalar(select(Duty.owner).where(Duty.name == "poll")) is None
        assert await session.get(ProcessBeat, first.id) is None
    await second.beat()
    assert second.holds("poll")
