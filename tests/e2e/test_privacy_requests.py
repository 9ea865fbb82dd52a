"""Personal data requests by phone or letter, on the "Personal data" page: an operator
finds a reporter by phone number (in their own province only), sees what the reporter
would see with /mydata, and erases the identity with a reason; admins and supervisors
see every unsealing with its reason. Every use is audited, without the number."""

from __future__ import annotations

import aiohttp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import AuditEvent, Reporter, ReporterIdentity, Ticket
from backend.services.reporters import set_phone
from tests.e2e.conftest import running
from tests.e2e.staff_http import sign_in
from tests.factories import make_ticket, make_user

PASSWORD = "Mat-khau-that-dai-9"
PHONE = "+84912000333"


async def reporter_with_phone(
    sessions: async_sessionmaker[AsyncSession], ward: str = "14812"
) -> tuple[str, int]:
    """A chat reporter who left their phone, with a ticket at the ward: (code, reporter)."""
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, ward=ward)
        assert ticket.reporter_id is not None
        await set_phone(s, ticket.reporter_id, PHONE)
        return ticket.code, ticket.reporter_id


async def test_an_operator_finds_a_caller_by_phone_and_erases_the_identity_with_a_reason(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code, reporter_id = await reporter_with_phone(sessions)
    async with sessions() as s, s.begin():
        operator = (await make_user(s, "operator", "P38", password=PASSWORD)).username
        outsider = (await make_user(s, "operator", "P01", password=PASSWORD)).username
        ward_staff = (await make_user(s, "ward_staff", "W14812", password=PASSWORD)).username
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ward,
    ):
        base = chat_settings.public_url or ""
        csrf = await sign_in(http, base, operator, PASSWORD)
        search = f"{base}/privacy/search"
        # A number that is not one: said so, nothing searched.
        async with http.post(search, data={"csrf": csrf, "phone": "12ab"}) as r:
            assert r.status == 422
            assert "Số điện thoại không hợp lệ" in await r.text()
        # The number as the caller says it, spaces and all.
        async with http.post(search, data={"csrf": csrf, "phone": "0912 000 333"}) as r:
            assert r.status == 200
            page = await r.text()
        assert "Tìm thấy: 1" in page and code in page
        assert "•" * 8 + "333" in page and PHONE not in page and "912000" not in page

        # Another province's operator finds nothing; ward staff may not come in.
        other_csrf = await sign_in(other, base, outsider, PASSWORD)
        async with other.post(search, data={"csrf": other_csrf, "phone": PHONE}) as r:
            assert "Tìm thấy: 0" in await r.text()
        async with other.post(
            f"{base}/privacy/{reporter_id}/erase", data={"csrf": other_csrf, "reason": "Yêu cầu"}
        ) as r:
            assert r.status == 404
        await sign_in(ward, base, ward_staff, PASSWORD)
        async with ward.get(f"{base}/privacy") as r:
            assert r.status == 403

        erase = f"{base}/privacy/{reporter_id}/erase"
        async with http.post(erase, data={"csrf": csrf, "reason": "ok"}) as r:
            assert r.status == 422
            assert "Hãy ghi lý do xoá" in await r.text()
        reason = "Yêu cầu qua điện thoại ngày 01/12"
        async with http.post(erase, data={"csrf": csrf, "reason": reason}) as r:
            assert r.status == 200  # after the redirect
            assert "Đã xoá danh tính" in await r.text()
        # Erased: the number is known no more.
        async with http.post(search, data={"csrf": csrf, "phone": PHONE}) as r:
            assert "Tìm thấy: 0" in await r.text()
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(ReporterIdentity)) == 0
        reporter = await s.get(Reporter, reporter_id)
        assert reporter is not None and reporter.erased_at is not None
        assert await s.scalar(select(Ticket.reporter_id).where(Ticket.code == code)) == reporter_id
        audit = list(
            await s.execute(
                select(AuditEvent.action, AuditEvent.note)
                .where(AuditEvent.action.in_(("pd_search", "pd_erase")))
                .order_by(AuditEvent.id)
            )
        )
    assert [a for a, _ in audit] == ["pd_search", "pd_search", "pd_erase", "pd_search"]
    assert audit[2][1] == f"#{reporter.pseudonym}: {reason}"
    assert all(PHONE not in (note or "") and "912000333" not in (note or "") for _, note in audit)


async def test_supervisors_see_who_unsealed_whom_and_why_in_their_province(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code, _ = await reporter_with_phone(sessions)
    elsewhere, _ = await reporter_with_phone(sessions, ward="00004")  # Hà Nội
    async with sessions() as s, s.begin():
        operator = await make_user(s, "operator", "P38", password=PASSWORD)
        hanoi = await make_user(s, "operator", "P01", password=PASSWORD)
        supervisor = (await make_user(s, "supervisor", "P38", password=PASSWORD)).username
    async with running(chat_settings):
        base = chat_settings.public_url or ""
        for user, ticket, why in (
            (operator, code, "Gọi lại hẹn xác minh"),
            (hanoi, elsewhere, "Xác minh ở Hà Nội"),
        ):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                csrf = await sign_in(http, base, user.username, PASSWORD)
                async with http.post(
                    f"{base}/tickets/{ticket}/identity", data={"csrf": csrf, "reason": why}
                ) as r:
                    assert r.status == 200
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await sign_in(http, base, supervisor, PASSWORD)
            async with http.get(f"{base}/privacy") as r:
                page = await r.text()
    assert "Các lần xem danh tính" in page
    assert operator.display_name in page and code in page and "Gọi lại hẹn xác minh" in page
    assert elsewhere not in page and "Xác minh ở Hà Nội" not in page
