"""Limits on how often something is done (reports per reporter, web forms per address,
Open311 requests per key), counted in the database so that every process keeps the
same count.

A limit is fixed windows of `window` seconds: the count of the current window is taken
with one INSERT … ON CONFLICT DO UPDATE … RETURNING, which both backends run atomically.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import RateCount
from backend.services.upsert import insert_for

HOUR = 3600
DAY = 86400


@dataclass(frozen=True)
class Limit:
    """At most `count` times per `window` seconds."""

    count: int
    window: int


def window_start(now: float, window: int) -> int:
    """The start of the window `now` falls in, in epoch seconds. A day's window starts at
    midnight in Vietnam (UTC+7)."""
    offset = 7 * HOUR if window % DAY == 0 else 0
    return int((now + offset) // window * window - offset)


async def take(session: AsyncSession, name: str, limit: Limit, now: float | None = None) -> bool:
    """Count one more under `name`; False (and counted all the same) when that goes over
    the limit. Runs in the caller's transaction: a rolled-back attempt is not counted."""
    now = time.time() if now is None else now
    start = window_start(now, limit.window)
    return await _count(session, name, start, start + limit.window) <= limit.count


async def once(session: AsyncSession, name: str, until: float) -> bool:
    """True the first time `name` is taken, False every time after, until `until` (epoch
    seconds), when its row may go: a one-time use that every process sees."""
    return await _count(session, name, 0, until) == 1


async def _count(session: AsyncSession, name: str, window: int, ends: float) -> int:
    """One more under (name, window), in one atomic upsert; the count now."""
    stmt = insert_for(session, RateCount).values(
        name=name,
        window=window,
        count=1,
        expires_at=datetime.fromtimestamp(ends, UTC),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["name", "window"], set_={"count": RateCount.count + 1}
    ).returning(RateCount.count)
    return int((await session.execute(stmt)).scalar_one())


async def take_all(
    session: AsyncSession, name: str, limits: list[Limit], now: float | None = None
) -> bool:
    """take() under every limit (an hour's and a day's); False when any is exceeded."""
    now = time.time() if now is None else now
    results = [await take(session, f"{name}:{lim.window}", lim, now) for lim in limits]
    return all(results)


async def next_allowed(
    session: AsyncSession, name: str, limits: Sequence[Limit], now: float
) -> datetime | None:
    """None when one more is allowed now; else when it will be: the end of every window
    whose count is full (an hour's, or the day's at midnight in Vietnam). Reads only."""
    windows = {f"{name}:{lim.window}": (window_start(now, lim.window), lim) for lim in limits}
    rows = await session.execute(
        select(RateCount.name, RateCount.window, RateCount.count).where(
            or_(
                *(and_(RateCount.name == n, RateCount.window == w) for n, (w, _) in windows.items())
            )
        )
    )
    used = {n: count for n, window, count in rows.all() if windows[n][0] == window}
    ends = [
        start + lim.window for n, (start, lim) in windows.items() if used.get(n, 0) >= lim.count
    ]
    return datetime.fromtimestamp(max(ends), UTC) if ends else None


async def sweep(session: AsyncSession, now: datetime | None = None) -> int:
    """Delete the counts of windows that have ended; how many were deleted."""
    now = now or datetime.now(UTC)
    result = await session.execute(delete(RateCount).where(RateCount.expires_at < now))
    return int(getattr(result, "rowcount", 0) or 0)
