"""Limits on abuse, end to end: a Telegram resident over their reports' allowance is told
so and nothing is filed; an operator mutes a reporter from the ticket page (CSRF, role,
reason, audit) and the resident gets the neutral answer, their /status still working;
hostile forms change nothing."""

from __future__ import annotations

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import AuditEvent, Conversation, Reporter, ReporterMute, Ticket, utcnow
from backend.services.abuse import mute
from tests.e2e.conftest import report_in_bim_son, running
from tests.e2e.staff_http import form_token, sign_in
from tests.factories import make_ticket, make_user
from tests.fakes.images import image_bytes
from tests.fakes.telegram_api import FakeTelegram, FakeUser

PASSWORD = "Mat-khau-that-dai-9"
CHAT = 5550123
NEUTRAL = "Chúng tôi đã nhận được tin nhắn của bạn."


# One report an hour, four a day.
ONE_AN_HOUR = {"reports_per_hour": 1, "reports_per_day": 4}


async def a_report(user: FakeUser) -> None:
    await report_in_bim_son(
        user, "Đổ rác, xả rác trái phép", "Rác cạnh chợ.", "Thường xuyên, lặp lại"
    )


async def tickets(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(Ticket)) or 0)


@pytest.mark.parametrize("mode", ["polling"])
async def test_over_the_limit_on_telegram_the_message_arrives_and_no_ticket_is_made(
    api: FakeTelegram, chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = chat_settings.model_copy(update=ONE_AN_HOUR)
    user = FakeUser(api, chat_id=CHAT)
    async with running(settings):
        await a_report(user)
        assert await tickets(sessions) == 1
        await user.text("/start")
        refused = (await user.reply()).text or ""
        assert "Bạn đã gửi đủ số phản ánh cho phép qua kênh này" in refused
        assert "tối đa 1 phản ánh mỗi giờ và 4 phản ánh mỗi ngày" in refused
        assert "Bạn có thể gửi phản ánh mới từ " in refused
        await user.text("/lang en")
        await user.reply()
        await user.text("/start")
        assert "You can send a new report from" in ((await user.reply()).text or "")
        # Erasing oneself does not refill the allowance, and the new contact refused
        # leaves no reporter behind.
        await user.text("/forgetme")
        await user.reply()
        await user.press("Erase")
        assert "erased" in ((await user.reply()).text or "")
        # The chat forgotten, it is spoken to in Vietnamese again.
        await user.text("/start")
        assert "Bạn có thể gửi phản ánh mới từ " in ((await user.reply()).text or "")
        async with sessions() as s:
            assert await s.scalar(select(func.count()).select_from(Reporter)) == 1
    assert await tickets(sessions) == 1
    async with sessions() as s:
        conv = (await s.scalars(select(Conversation))).one()
    assert conv.state == "idle" and conv.data == {}


def stored_files(settings: Settings) -> set[str]:
    return {str(p) for p in settings.media_dir.rglob("*") if p.is_file()}


def downloads(api: FakeTelegram) -> int:
    return sum(1 for method, _ in api.calls if method == "getFile")


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_photo_the_dialogue_would_refuse_is_never_downloaded_nor_stored(
    api: FakeTelegram, chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    once = {"additions_per_hour": 1, "additions_per_day": 4}
    settings = chat_settings.model_copy(update={**ONE_AN_HOUR, **once})
    user = FakeUser(api, chat_id=CHAT)
    async with running(settings):
        await a_report(user)
        async with sessions() as s:
            ticket = (await s.scalars(select(Ticket))).one()
        # Over the allowance of reports, but a report of theirs is open: a photo may
        # still be added to it, so it is taken.
        await user.photo(image_bytes(color="red"))
        assert "➕ Thêm vào phản ánh" in ((await user.reply()).text or "")
        assert downloads(api) == 1
        await user.press(f"➕ Thêm vào {ticket.code}")
        assert ticket.code in ((await user.reply()).text or "")
        files = stored_files(settings)

        # Over the allowance of additions too: words are refused and said so, and a
        # photo (which could neither be added nor begin a report) is never fetched.
        await user.text("Bãi rác vẫn còn nguyên, chưa ai dọn.")
        assert "Phần bổ sung này chưa được thêm" in ((await user.reply()).text or "")
        await user.photo(image_bytes(color="blue"))
        refused = (await user.reply()).text or ""
        assert "Bạn đã gửi đủ số phản ánh cho phép qua kênh này" in refused
        assert downloads(api) == 1 and stored_files(settings) == files

        # Muted: the neutral answer, and again nothing fetched or stored.
        assert ticket.reporter_id is not None
        async with sessions() as s, s.begin():
            await mute(s, ticket.reporter_id, 7, "Gửi ảnh quấy rối", None, utcnow())
        await user.photo(image_bytes(color="yellow"))
        assert ((await user.reply()).text or "").startswith(NEUTRAL)
        assert downloads(api) == 1 and stored_files(settings) == files
    assert await tickets(sessions) == 1
    async with sessions() as s:
        conv = (await s.scalars(select(Conversation))).one()
    assert conv.state == "idle" and conv.data == {}


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_photo_at_a_step_that_takes_none_is_never_downloaded_nor_stored(
    api: FakeTelegram, chat_settings: Settings
) -> None:
    user = FakeUser(api, chat_id=CHAT)
    async with running(chat_settings):
        await user.text("/start")
        await user.reply()
        await user.press("✅ Tôi đồng ý")
        await user.reply()
        await user.text("/skip")  # no photos: the place is asked for next
        await user.reply()
        files = stored_files(chat_settings)
        await user.photo(image_bytes(color="green"))
        # The step's own answer, as to any input it does not expect.
        assert "vị trí" in ((await user.reply()).text or "").lower()
        assert downloads(api) == 0 and stored_files(chat_settings) == files


@pytest.mark.parametrize("mode", ["polling"])
async def test_an_operator_mutes_from_the_ticket_page_and_the_chat_answers_neutrally(
    api: FakeTelegram, chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        operator = await make_user(s, "operator", "P38", password=PASSWORD)
    user = FakeUser(api, chat_id=CHAT)
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = chat_settings.public_url or ""
        await a_report(user)
        async with sessions() as s:
            ticket = (await s.scalars(select(Ticket))).one()
            pseudonym = await s.scalar(
                select(Reporter.pseudonym).where(Reporter.id == ticket.reporter_id)
            )
        await sign_in(http, base, operator.username, PASSWORD)
        async with http.get(f"{base}/tickets/{ticket.code}") as r:
            page = await r.text()
        assert f"Tạm chặn #{pseudonym}" in page
        csrf = form_token(page, f"/tickets/{ticket.code}/mute")
        form = {"csrf": csrf, "days": "7", "reason": "Gửi 40 tin nhắn quấy rối"}
        async with http.post(f"{base}/tickets/{ticket.code}/mute", data=form) as r:
            assert r.status == 200
            page = await r.text()
        assert f"#{pseudonym} đang bị tạm chặn đến" in page

        await user.text("/start")
        assert ((await user.reply()).text or "").startswith(NEUTRAL)
        await user.text("Bãi rác lại cháy")
        assert ((await user.reply()).text or "").startswith(NEUTRAL)
        await user.text(f"/status {ticket.code}")
        assert ticket.code in ((await user.reply()).text or "")

        # Lifted from the list of mutes: the resident can report again.
        async with http.get(f"{base}/mutes") as r:
            listed = await r.text()
        assert f"#{pseudonym}" in listed and "Gửi 40 tin nhắn quấy rối" in listed
        async with sessions() as s:
            mute_id = (await s.scalars(select(ReporterMute.id))).one()
        lift = f"/mutes/{mute_id}/lift"
        async with http.post(f"{base}{lift}", data={"csrf": form_token(listed, lift)}) as r:
            assert "Đã bỏ chặn" in await r.text()
        await user.text("/start")
        assert "Bước 1" in ((await user.reply()).text or "")
    async with sessions() as s:
        audit = list(
            await s.execute(
                select(AuditEvent.action, AuditEvent.actor, AuditEvent.note, AuditEvent.ticket_id)
                .where(AuditEvent.action.in_(["mute_reporter", "unmute_reporter"]))
                .order_by(AuditEvent.id)
            )
        )
    assert [(a, who, t) for a, who, _, t in audit] == [
        ("mute_reporter", f"user:{operator.id}", None),
        ("unmute_reporter", f"user:{operator.id}", None),
    ]
    assert (
        audit[0][2] is not None
        and f"#{pseudonym} {ticket.code}" in audit[0][2]
        and "Gửi 40 tin nhắn" in audit[0][2]
    )


@pytest.mark.parametrize("mode", ["polling"])
async def test_muting_is_for_triage_roles_with_a_reason_and_hostile_forms_change_nothing(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s)
        code, reporter_id = ticket.code, ticket.reporter_id
        operator = await make_user(s, "operator", "P38", password=PASSWORD)
        outsider = await make_user(s, "operator", "P01", password=PASSWORD)
        ward = await make_user(s, "ward_staff", "W14812", password=PASSWORD)
        leader = await make_user(s, "ward_leader", "W14812", password=PASSWORD)
    jar = aiohttp.CookieJar
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as http,
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as other,
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as ward_http,
    ):
        base = chat_settings.public_url or ""
        mute_url = f"{base}/tickets/{code}/mute"
        reason = "Quấy rối nhiều lần"
        # Ward staff and ward leaders see no form and may not mute.
        for who in (ward, leader):
            ward_csrf = await sign_in(ward_http, base, who.username, PASSWORD)
            async with ward_http.get(f"{base}/tickets/{code}") as r:
                assert r.status == 200 and "/mute" not in await r.text()
            form = {"csrf": ward_csrf, "days": "1", "reason": reason}
            async with ward_http.post(mute_url, data=form) as r:
                assert r.status == 403
            async with ward_http.get(f"{base}/mutes") as r:
                assert r.status == 403
            async with ward_http.post(f"{base}/logout", data={"csrf": ward_csrf}) as r:
                pass
        # Another province's operator: the ticket is not there.
        other_csrf = await sign_in(other, base, outsider.username, PASSWORD)
        form = {"csrf": other_csrf, "days": "1", "reason": reason}
        async with other.post(mute_url, data=form) as r:
            assert r.status == 404
        csrf = await sign_in(http, base, operator.username, PASSWORD)
        # Without the CSRF token, or with another session's.
        for token in ("", "x" * 64, other_csrf):
            async with http.post(
                mute_url, data={"csrf": token, "days": "1", "reason": reason}
            ) as r:
                assert r.status == 403
        async with http.get(mute_url, allow_redirects=False) as r:
            assert r.status == 405
        # Bad periods and missing reasons: said on the ticket page, nothing muted.
        for days, why, shown in (
            ("2", reason, "Hãy chọn thời hạn tạm chặn"),
            ("-1", reason, "Hãy chọn thời hạn tạm chặn"),
            ("9" * 400, reason, "Hãy chọn thời hạn tạm chặn"),
            ("2\x00", reason, "Hãy chọn thời hạn tạm chặn"),
            ("1.0", reason, "Hãy chọn thời hạn tạm chặn"),
            ("७", reason, "Hãy chọn thời hạn tạm chặn"),
            ("", reason, "Hãy chọn thời hạn tạm chặn"),
            ("7", "", "Cần ghi lý do tạm chặn"),
            ("7", "   ab  ", "Cần ghi lý do tạm chặn"),
            ("7", "\x00\x00\x00\x00\x00\x00", "Cần ghi lý do tạm chặn"),
        ):
            form = {"csrf": csrf, "days": days, "reason": why}
            async with http.post(mute_url, data=form) as r:
                assert r.status == 200 and shown in await r.text(), (days, why)
        async with http.post(f"{base}/tickets/XX-0000-00000/mute", data=form) as r:
            assert r.status == 404
        async with sessions() as s:
            assert await s.scalar(select(func.count()).select_from(ReporterMute)) == 0
        # A long reason with markup and NUL bytes: kept to 300 characters, escaped.
        hostile = "<script>alert(1)</script>\x00" + "x" * 10_000
        form = {"csrf": csrf, "days": "30", "reason": hostile}
        async with http.post(mute_url, data=form) as r:
            assert r.status == 200
        async with http.get(f"{base}/mutes") as r:
            listed = await r.text()
        assert "<script>alert(1)" not in listed and "&lt;script&gt;alert(1)" in listed
        # Muting again replaces the mute in force.
        form = {"csrf": csrf, "days": "1", "reason": reason}
        async with http.post(mute_url, data=form) as r:
            assert r.status == 200
        async with sessions() as s:
            rows = list(await s.scalars(select(ReporterMute).order_by(ReporterMute.id)))
        assert [m.reporter_id for m in rows] == [reporter_id, reporter_id]
        assert rows[0].lifted_at is not None and rows[1].lifted_at is None
        assert len(rows[0].reason) == 300 and "\x00" not in rows[0].reason
        # Lifting: unknown and out-of-scope mutes are not found; wrong methods refused.
        other_lift = f"{base}/mutes/{rows[1].id}/lift"
        async with other.post(other_lift, data={"csrf": other_csrf}) as r:
            assert r.status == 404
        for path in ("/mutes/999999999/lift", "/mutes/abc/lift", "/mutes/1e3/lift"):
            async with http.post(f"{base}{path}", data={"csrf": csrf}) as r:
                assert r.status == 404, path
        async with http.get(other_lift, allow_redirects=False) as r:
            assert r.status == 405
        async with http.post(f"{base}/tickets/{code}/unmute", data={"csrf": csrf}) as r:
            assert r.status == 200 and "/tickets/" in str(r.url)
        async with sessions() as s:
            assert await s.scalar(
                select(func.count()).select_from(ReporterMute).where(ReporterMute.lifted_at.is_(None))
            ) == 0  # fmt: skip
            actions = list(
                await s.scalars(
                    select(AuditEvent.action)
                    .where(AuditEvent.action.in_(["mute_reporter", "unmute_reporter"]))
                    .order_by(AuditEvent.id)
                )
            )
        # The replaced mute is part of the second mute's record: two mutes, one lift.
        assert actions == ["mute_reporter", "mute_reporter", "unmute_reporter"]
