"""The monthly duty: remind supervisors before the report is due, then make and keep the
report on the due day. A worker in every server process looks regularly; each duty is
claimed by inserting its row (unique per duty, period and province) with ON CONFLICT DO
NOTHING, in the transaction that does the work, so it runs once however many processes
look, and runs again later if that transaction failed.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import MonthlyRun, Ticket, Unit, User, Ward, utcnow
from backend.services.notify import tell_staff
from backend.services.periodic import Periodic
from backend.services.report_files import to_xlsx
from backend.services.stats import (
    Period,
    PeriodKind,
    Report,
    Scope,
    monthly_report,
    period_due,
)
from backend.services.units import province_unit_code
from backend.services.upsert import insert_for
from backend.timeutil import local

log = logging.getLogger(__name__)


async def _claim(
    session: AsyncSession, duty: str, period: Period, province_code: str, now: datetime
) -> MonthlyRun | None:
    """The duty's row, newly inserted; None when another process (or an earlier pass)
    has it already."""
    inserted = await session.scalar(
        insert_for(session, MonthlyRun)
        .values(
            duty=duty,
            period_kind=period.kind,
            period=period.month,
            province_code=province_code,
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(MonthlyRun.id)
    )
    return None if inserted is None else await session.get(MonthlyRun, inserted)


async def _supervisors(session: AsyncSession, province_code: str) -> list[User]:
    return list(
        await session.scalars(
            select(User)
            .join(Unit, Unit.id == User.unit_id)
            .where(
                User.role == "supervisor",
                User.active.is_(True),
                Unit.code == province_unit_code(province_code),
            )
        )
    )


class MonthlyDuty(Periodic):
    """The reminder (from the reminder day until the report day) and the report (from
    the report day), for each province served, or each with reports in the period."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        super().__init__("monthly duty", settings.stats_interval, self._pass)
        self._sessions = sessions
        self._settings = settings

    def _link(self, path: str) -> str:
        return (self._settings.public_url or "").rstrip("/") + path

    async def _provinces(self, period: Period) -> list[str]:
        if self._settings.served_provinces:
            return sorted(self._settings.served_provinces)
        async with self._sessions() as session:
            found = await session.scalars(
                select(Ward.province_code)
                .join(Ticket, Ticket.ward_code == Ward.code)
                .where(Ticket.created_at >= period.start, Ticket.created_at < period.end)
                .distinct()
            )
            return sorted(found)

    async def run_once(self, now: datetime | None = None) -> list[str]:
        """Do what is due at `now`; returns what was done ("remind 2026-10 38", …)."""
        now = now or utcnow()
        today = local(now).date()
        kind: PeriodKind = self._settings.stats_period
        period = period_due(today, kind)
        done: list[str] = []
        remind_day, report_day = self._settings.stats_reminder_day, self._settings.stats_report_day
        if remind_day <= today.day < report_day:
            for province in await self._provinces(period):
                if await self._remind(period, province, report_day, today, now):
                    done.append(f"remind {period.month} {province}")
        if today.day >= report_day:
            for province in await self._provinces(period):
                if await self._keep_report(period, province, now):
                    done.append(f"report {period.month} {province}")
        return done

    async def _remind(
        self, period: Period, province: str, report_day: int, today: date, now: datetime
    ) -> bool:
        async with self._sessions() as session, session.begin():
            if await _claim(session, "remind", period, province, now) is None:
                return False
            report = await monthly_report(session, period, Scope(province_code=province), now=now)
            await tell_staff(
                session,
                await _supervisors(session, province),
                "stats.reminder",
                {
                    **_words(report),
                    "due": f"{report_day:02d}/{today.month:02d}/{today.year}",
                    "link": self._link(
                        f"/stats?month={period.month}&period={period.kind}&province={province}"
                    ),
                },
            )
        return True

    async def _keep_report(self, period: Period, province: str, now: datetime) -> bool:
        async with self._sessions() as session, session.begin():
            run = await _claim(session, "report", period, province, now)
            if run is None:
                return False
            report = await monthly_report(session, period, Scope(province_code=province), now=now)
            run.xlsx = to_xlsx(report)
            run.figures = report.as_json()
            await tell_staff(
                session,
                await _supervisors(session, province),
                "stats.report_ready",
                {**_words(report), "link": self._link(f"/stats/saved/{run.id}.xlsx")},
            )
        if report.problems:
            log.error("monthly report %s %s: totals check failed", period.month, province)
        return True

    async def _pass(self) -> str | None:
        return ", ".join(await self.run_once()) or None


def _words(report: Report) -> dict[str, Any]:
    """What the notices say about a report."""
    total = report.total
    return {
        "period": f"{report.period.month[5:]}/{report.period.month[:4]}",
        "province": report.scope_name,
        "received": total.received,
        "cases": total.cases,
        "answered": total.answered,
        "in_progress": total.in_progress,
        "overdue": total.overdue,
    }
