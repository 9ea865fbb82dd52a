"""Limits on abuse from the chats: how many reports (and additions to them) one reporter
may send on one channel per hour and per day, and reporters an operator muted.

The counts are backend.services.limits' shared counters, taken in the transaction that
stores the report: two processes on one database together allow no more than the limit.
A refused attempt is given back at once, so that it does not use up the day's count and
the time the reporter is told they can send again stays true.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import keys
from backend.models import Conversation, RateCount, Reporter, ReporterMute
from backend.services.additions import open_reports
from backend.services.limits import DAY, HOUR, Limit, next_allowed, take_all, window_start
from backend.services.reporters import has_consent

if TYPE_CHECKING:
    from backend.config import Settings

REPORTS = "report"
ADDITIONS = "addition"
# The periods an operator may mute a reporter for, in days.
MUTE_DAYS = (1, 7, 30)


@dataclass(frozen=True, slots=True)
class ReporterLimits:
    """A reporter's allowance on one channel: new reports, and additions to them (more
    generous: a photo sent later is common, a flood of notices to a ward is not)."""

    reports: tuple[Limit, ...] = (Limit(5, HOUR), Limit(20, DAY))
    additions: tuple[Limit, ...] = (Limit(20, HOUR), Limit(60, DAY))

    @classmethod
    def from_settings(cls, settings: Settings) -> ReporterLimits:
        return cls(
            reports=(
                Limit(settings.reports_per_hour, HOUR),
                Limit(settings.reports_per_day, DAY),
            ),
            additions=(
                Limit(settings.additions_per_hour, HOUR),
                Limit(settings.additions_per_day, DAY),
            ),
        )

    def of(self, kind: str) -> tuple[Limit, ...]:
        return self.reports if kind == REPORTS else self.additions


def counter(kind: str, channel: str, chat_key: str) -> str:
    """The counter's name: per kind, channel and chat, by the chat's keyed look-up (not
    the reporter's number, which /forgetme replaces: erasing oneself does not refill the
    allowance). The row goes when its window ends."""
    return f"{kind}:{channel}:{chat_key}"


async def take_or_refuse(
    session: AsyncSession, name: str, limits: Sequence[Limit], now: float
) -> datetime | None:
    """Count one more under every limit: None when that stays within them; else the
    count is given back (in this transaction, whose counter rows stay locked) and the
    answer is when one more will be allowed."""
    if await take_all(session, name, list(limits), now):
        return None
    await give_back(session, name, limits, now)
    return await next_allowed(session, name, limits, now)


async def give_back(session: AsyncSession, name: str, limits: Sequence[Limit], now: float) -> None:
    """Undo this transaction's take under every limit (what was counted did not happen)."""
    for lim in limits:
        await session.execute(
            update(RateCount)
            .where(
                RateCount.name == f"{name}:{lim.window}",
                RateCount.window == window_start(now, lim.window),
            )
            .values(count=RateCount.count - 1)
        )


async def takes_photo(
    session: AsyncSession,
    channel: str,
    chat_id: str,
    limits: ReporterLimits,
    now: datetime,
    photo_steps: Collection[str],
) -> bool:
    """Whether a photo from this chat can be taken now, asked before it is downloaded, as
    the dialogue (handlers.report) would take it: not when the chat's reporter is muted;
    at a step of a draft that takes photos (`photo_steps`), always, and at the other
    steps never; offered as an addition (idle, with a report of theirs open and consent
    given) or added (the addition step) only within the allowance of additions; else it
    would begin a report, so only within the allowance of reports. A photo not taken is
    never fetched from the platform, and nothing of it is stored. Reads only."""
    chat_key = keys().chat_key(channel, chat_id)
    found = (
        await session.execute(
            select(Conversation.state, Conversation.reporter_id).where(
                Conversation.channel == channel, Conversation.chat_key == chat_key
            )
        )
    ).first()
    state, reporter_id = found if found is not None else ("idle", None)
    if reporter_id is not None and await muted_until(session, reporter_id, now) is not None:
        return False
    if state in photo_steps:
        return True
    if state not in ("idle", "addition"):
        return False
    stamp = now.timestamp()
    additions = counter(ADDITIONS, channel, chat_key)
    may_add = (
        reporter_id is not None
        and await next_allowed(session, additions, limits.additions, stamp) is None
    )
    if state == "addition":
        return may_add
    if (
        may_add
        and reporter_id is not None
        and await has_consent(session, reporter_id)
        and await open_reports(session, reporter_id)
    ):
        return True
    reports = counter(REPORTS, channel, chat_key)
    return await next_allowed(session, reports, limits.reports, stamp) is None


# --- muting ------------------------------------------------------------------------------


def _active(now: datetime) -> ColumnElement[bool]:
    return and_(ReporterMute.lifted_at.is_(None), ReporterMute.until > now)


async def muted_until(session: AsyncSession, reporter_id: int, now: datetime) -> datetime | None:
    """When the reporter's mute ends, if they are muted now."""
    until: datetime | None = await session.scalar(
        select(func.max(ReporterMute.until)).where(
            ReporterMute.reporter_id == reporter_id, _active(now)
        )
    )
    return until


class MutedReporters:
    """The reporters muted now, as one process knows them: reloaded with one query at
    most every `refresh` seconds, so that a chat's every message does not cost a query.
    A mute reaches a chat in the middle of a draft within that long; beginning a report,
    sending one and adding to one ask the database itself (muted_until)."""

    def __init__(self, refresh: float = 5.0) -> None:
        self.refresh = refresh
        self._until: dict[int, datetime] = {}
        self._loaded = -math.inf

    async def until(
        self, session: AsyncSession, reporter_id: int, now: datetime
    ) -> datetime | None:
        if time.monotonic() - self._loaded >= self.refresh:
            rows = await session.execute(
                select(ReporterMute.reporter_id, func.max(ReporterMute.until))
                .where(_active(now))
                .group_by(ReporterMute.reporter_id)
            )
            self._until = {reporter: until for reporter, until in rows.all()}
            self._loaded = time.monotonic()
        until = self._until.get(reporter_id)
        return until if until is not None and until > now else None


async def active_mutes(
    session: AsyncSession, now: datetime, reporter_ids: Sequence[int] | None = None
) -> list[tuple[ReporterMute, str]]:
    """Mutes in force, with the reporter's pseudonym, the soonest to end first; of these
    reporters only, when given."""
    query = (
        select(ReporterMute, Reporter.pseudonym)
        .join(Reporter, Reporter.id == ReporterMute.reporter_id)
        .where(_active(now))
        .order_by(ReporterMute.until, ReporterMute.id)
    )
    if reporter_ids is not None:
        query = query.where(ReporterMute.reporter_id.in_(reporter_ids))
    return [(mute, pseudonym) for mute, pseudonym in (await session.execute(query)).all()]


async def mute(
    session: AsyncSession,
    reporter_id: int,
    days: int,
    reason: str,
    muted_by: int | None,
    now: datetime,
) -> ReporterMute:
    """Mute the reporter for `days` from now; a mute in force is replaced (lifted now)."""
    if days not in MUTE_DAYS:
        raise ValueError(f"a mute lasts one of {MUTE_DAYS} days")
    await lift(session, reporter_id, now)
    row = ReporterMute(
        reporter_id=reporter_id,
        until=now + timedelta(days=days),
        reason=reason,
        muted_by=muted_by,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def lift(session: AsyncSession, reporter_id: int, now: datetime) -> int:
    """End the reporter's mutes in force now; how many there were."""
    result = await session.execute(
        update(ReporterMute)
        .where(ReporterMute.reporter_id == reporter_id, _active(now))
        .values(lifted_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
