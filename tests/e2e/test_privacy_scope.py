"""The personal data page across provinces and for reporters that are not there."""

from __future__ import annotations

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import AuditEvent, utcnow
from backend.services.deadlines import Policies
from backend.services.intake import ReportDraft, submit_report
from backend.services.reporters import set_phone
from tests.e2e.conftest import running
from tests.e2e.staff_http import sign_in
from tests.factories import make_ticket, make_user

PASSWORD = "Mat-khau-that-dai-9"
PHONE = "+84912000333"


async def test_an_operator_sees_only_their_provinces_reports_of_a_reporter(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        here = await make_ticket(s, ward="14812")  # Thanh Hóa
        assert here.reporter_id is not None
        await set_phone(s, here.reporter_id, PHONE)
        there = await submit_report(
            s,
            ReportDraft(
                category_code="dumping",
                ward_code="00004",
                lat=21.03,
                lon=105.85,
                location_source="gps",
                description="Hà Nội",
                nature="recurring",
                photos=[],
            ),
            reporter_id=here.reporter_id,
            channel="telegram",
            now=utcnow(),
            policies=Policies.load(),
        )
        operator = (await make_user(s, "operator", "P38", password=PASSWORD)).username
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = chat_settings.public_url or ""
        csrf = await sign_in(http, base, operator, PASSWORD)
        async with http.post(f"{base}/privacy/search", data={"csrf": csrf, "phone": PHONE}) as r:
            page = await r.text()
        assert here.code in page
        assert there.code not in page and "Ba Đình" not in page
        assert "kể cả ở tỉnh khác" in page  # erasing reaches them all, and says so


async def test_erasing_a_reporter_that_is_not_there_is_not_found(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        admin = (await make_user(s, "admin", None, password=PASSWORD)).username
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = chat_settings.public_url or ""
        csrf = await sign_in(http, base, admin, PASSWORD)
        async with http.post(
            f"{base}/privacy/999999/erase", data={"csrf": csrf, "reason": "Yêu cầu bằng thư"}
        ) as r:
            status, page = r.status, await r.text()
    async with sessions() as s:
        audited = list(
            await s.scalars(select(AuditEvent.action).where(AuditEvent.action == "pd_erase"))
        )
    assert status == 404 and "Đã xoá danh tính" not in page
    assert audited == []
