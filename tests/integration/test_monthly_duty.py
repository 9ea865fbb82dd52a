"""The monthly duty: the reminder on the 20th and the report kept on the 25th, each done
once although two server processes (two engines on one database) look at the same time."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime

from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.db import create_engine, session_factory
from backend.models import MonthlyRun, OutboxMessage
from backend.services.monthly import MonthlyDuty
from tests.factories import make_user
from tests.stats_month import OCT_FIRST, OCT_LAST, at, build_month, chosen, expected


async def _run_together(settings: Settings, when: datetime) -> list[str]:
    """Both "processes" run the duty at the same moment; returns what each did."""
    engines = [create_engine(settings.database_url) for _ in range(2)]
    try:
        duties = [MonthlyDuty(session_factory(e), settings) for e in engines]
        results = await asyncio.gather(*(d.run_once(now=when) for d in duties))
    finally:
        for engine in engines:
            await engine.dispose()
    return sorted(done for result in results for done in result)


async def _notices(sessions: async_sessionmaker[AsyncSession], key: str) -> list[OutboxMessage]:
    async with sessions() as s:
        rows = await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        return [r for r in rows if r.payload.get("key") == key]


async def test_reminder_and_report_run_once(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    settings = settings.model_copy(update={"public_url": "https://hotline.example.vn"})
    async with sessions() as s, s.begin():
        await build_month(s)
        for chat in ("801", "802"):
            await make_user(s, "supervisor", "P38", chat_id=chat)
        await make_user(s, "supervisor", "P38")  # no Telegram chat: nothing to send
        await make_user(s, "supervisor", "P01", chat_id="803")
        await make_user(s, "ward_leader", "W14812", chat_id="804")  # not a supervisor

    # The 19th: nothing yet.
    assert await _run_together(settings, at(11, 19, 23)) == []
    # The 20th: October's report is due on the 25th; one reminder per province.
    assert await _run_together(settings, at(11, 20, 8)) == [
        "remind 2026-10 01",
        "remind 2026-10 38",
    ]
    reminders = await _notices(sessions, "stats.reminder")
    assert sorted(str(r.address) for r in reminders) == ["801", "802", "803"]
    oct_38 = chosen(OCT_FIRST, OCT_LAST, province="38")
    mine = next(r for r in reminders if r.address == "801").payload["params"]
    figures = expected(oct_38)
    # At 08:00 on the 20th one more case is overdue than at the month's NOW: E's answer
    # was due on 12 November.
    assert mine["in_progress"] == figures["in_progress"]
    assert mine["overdue"] == figures["overdue"] + 1
    assert mine["link"] == (
        "https://hotline.example.vn/stats?month=2026-10&period=month&province=38"
    )
    # Later passes, and the days until the 25th, do not remind again.
    assert await _run_together(settings, at(11, 24, 16)) == []
    assert len(await _notices(sessions, "stats.reminder")) == 3

    # The 25th: the report is made and kept, once per province.
    assert await _run_together(settings, at(11, 25, 7)) == [
        "report 2026-10 01",
        "report 2026-10 38",
    ]
    assert await _run_together(settings, at(11, 26, 7)) == []
    async with sessions() as s:
        runs = list(await s.scalars(select(MonthlyRun).order_by(MonthlyRun.id)))
    assert sorted((r.duty, r.period, r.province_code) for r in runs) == [
        ("remind", "2026-10", "01"),
        ("remind", "2026-10", "38"),
        ("report", "2026-10", "01"),
        ("report", "2026-10", "38"),
    ]
    kept = next(r for r in runs if r.duty == "report" and r.province_code == "38")
    assert kept.figures is not None and kept.xlsx is not None
    wanted = {**figures, "overdue": figures["overdue"] + 1}
    assert kept.figures["total"] == wanted
    assert kept.figures["period"]["first_day"] == "2026-10-01"
    book = load_workbook(io.BytesIO(kept.xlsx))
    assert book["Tổng hợp"]["C8"].value == len(oct_38)
    assert book["Tổng hợp"]["A2"].value == "Đơn vị: Tỉnh Thanh Hóa"
    ready = await _notices(sessions, "stats.report_ready")
    assert sorted(str(r.address) for r in ready) == ["801", "802", "803"]
    link = next(r for r in ready if r.address == "801").payload["params"]["link"]
    assert link == f"https://hotline.example.vn/stats/saved/{kept.id}.xlsx"


async def test_a_server_first_up_after_the_25th_only_reports(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    async with sessions() as s, s.begin():
        await build_month(s)
        await make_user(s, "supervisor", "P38", chat_id="801")
    cut = settings.model_copy(update={"stats_period": "cut25", "served_provinces": ["38"]})
    # The cut ending on 25 October is due that day; the reminder window has passed.
    assert await _run_together(cut, at(10, 27, 9)) == ["report 2026-10 38"]
    assert await _notices(sessions, "stats.reminder") == []
    async with sessions() as s:
        kept = await s.scalar(select(MonthlyRun))
    assert kept is not None and kept.period_kind == "cut25" and kept.figures is not None
    assert kept.figures["period"]["first_day"] == "2026-09-25"
