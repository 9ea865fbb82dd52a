"""The rights the consent text promises, used in the chat: /mydata tells what is held,
/forgetme erases the identity while the report is still handled, /withdraw stops all
that is new until the resident consents again. On Telegram (buttons) and on both Zalo
channels (numbered choices)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import (
    AuditEvent,
    Consent,
    Conversation,
    InboundEvent,
    OutboxMessage,
    Reporter,
    ReporterIdentity,
    Ticket,
)
from backend.services.privacy import ERASED, UNSEAL
from backend.services.reporters import CONSENT_TEXT_VERSION
from tests.e2e.conftest import Staff, report_in_bim_son, running
from tests.e2e.staff_http import sign_in, staff_account
from tests.e2e.test_zalo import BIM_SON, report_by_text, until, zalo_settings
from tests.factories import chat_key, make_user
from tests.fakes.images import image_bytes
from tests.fakes.telegram_api import FakeTelegram, FakeUser
from tests.fakes.zalo_bot import FakeZaloBot, ZaloBotUser
from tests.fakes.zalo_oa import FakeZaloOA, ZaloFollower

PHONE = "+84912345678"
CHAT = 6101


async def only_code(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions() as s:
        return (await s.scalars(select(Ticket.code))).one()


async def quiet_for(api: FakeTelegram, chat_id: int, seconds: float = 1.5) -> None:
    """Nothing more reaches the chat within seconds (the outbox polls every 0.2 s)."""
    before = len(api.sent_to(chat_id))
    await asyncio.sleep(seconds)
    assert api.sent_to(chat_id)[before:] == []


@pytest.mark.parametrize("mode", ["polling"])
async def test_mydata_says_what_is_held_and_who_unsealed_it_without_names(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    operator_id = await staff_account(sessions, "lan.operator", "Mat-khau-dai-1", "operator", "P38")
    user = FakeUser(api, chat_id=CHAT)
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
        aiohttp.ClientSession() as http,
    ):
        base = chat_settings.public_url or ""
        await report_in_bim_son(
            user, "Đổ rác, xả rác trái phép", "Rác cạnh chợ.", "Đột xuất, một lần", phone=PHONE
        )
        code = await only_code(sessions)
        csrf = await sign_in(browser, base, "lan.operator", "Mat-khau-dai-1")
        identity = f"{base}/tickets/{code}/identity"
        # Not without a reason.
        for reason in ("", "   ", "ok"):
            async with browser.post(identity, data={"csrf": csrf, "reason": reason}) as r:
                assert r.status == 422
                assert PHONE not in await r.text()
        async with browser.post(identity, data={"csrf": csrf, "reason": "Hẹn xác minh"}) as r:
            assert r.status == 200
            assert PHONE in await r.text()
        await Staff(http, base, "lan.operator").act(
            code, "classify", urgency="normal", competence="ward"
        )
        await until(user, "đã được chuyển tới")
        await user.text("/mydata")
        held = await user.reply()
    async with sessions() as s:
        pseudonym = (await s.scalars(select(Reporter.pseudonym))).one()
    text = held.text or ""
    assert f"Bí danh (cán bộ xử lý chỉ thấy tên này): {pseudonym}" in text
    assert "Kênh liên hệ: Telegram" in text
    assert "•" * 8 + "678" in text and "912345" not in text
    assert f"văn bản bản {CONSENT_TEXT_VERSION}" in text
    assert f"{code}: Đã chuyển đơn vị xử lý – UBND Phường Bỉm Sơn" in text
    assert "Đơn vị đã xử lý: UBND Phường Bỉm Sơn" in text
    assert "Số lần cán bộ xem danh tính của bạn: 1" in text
    assert "Hẹn xác minh" not in text  # the reason is for the audit trail
    assert ": cán bộ tiếp nhận, " in text
    # The staff member is never named.
    assert "lan.operator" not in text and f"user:{operator_id}" not in text
    assert [label for label, _ in held.buttons()] == [
        "🗑 Xoá danh tính của tôi",
        "✋ Rút lại sự đồng ý",
        "Để sau",
    ]


@pytest.mark.parametrize("mode", ["polling"])
async def test_forgetme_erases_the_identity_and_the_report_is_still_answered(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        operator = await make_user(s, "operator", "P38")
        ward = await make_user(s, "ward_staff", "W14812")
    user = FakeUser(api, chat_id=CHAT)
    async with running(chat_settings), aiohttp.ClientSession() as http:
        base = chat_settings.public_url or ""
        await report_in_bim_son(
            user, "Đổ rác, xả rác trái phép", "Rác cạnh chợ.", "Đột xuất, một lần", phone=PHONE
        )
        code = await only_code(sessions)
        await user.text("/forgetme")
        explain = await user.reply()
        assert "không thể báo kết quả cho bạn nữa" in (explain.text or "")
        assert [label for label, _ in explain.buttons()] == ["Xác nhận xoá", "Để sau"]
        old_confirm = dict(explain.buttons())["Xác nhận xoá"]
        # Not now: nothing changes.
        await user.press("Để sau")
        assert "Không có gì thay đổi" in ((await user.reply()).text or "")
        async with sessions() as s:
            assert await s.scalar(select(func.count()).select_from(ReporterIdentity)) == 1
        # The confirmation from the old message is refused: it was not the question asked.
        await user.press_data(old_confirm, explain.message_id)
        assert "Nút này đã cũ" in ((await user.reply()).text or "")
        async with sessions() as s:
            assert await s.scalar(select(func.count()).select_from(ReporterIdentity)) == 1

        await user.text("/forgetme")
        await user.reply()
        await user.press("Xác nhận xoá")
        done = await user.reply()
        assert "Đã xoá danh tính của bạn" in (done.text or "")
        await quiet_for(api, CHAT, 0.6)

        async with sessions() as s:
            assert await s.scalar(select(func.count()).select_from(ReporterIdentity)) == 0
            reporter = (await s.scalars(select(Reporter))).one()
            assert reporter.erased_at is not None
            # The consent stays as proof, under the pseudonym.
            consent = (await s.scalars(select(Consent))).one()
            assert consent.reporter_id == reporter.id
            assert consent.text_version == CONSENT_TEXT_VERSION
            chat = str(CHAT)
            key = chat_key("telegram", chat)
            conversation = select(Conversation.id).where(Conversation.chat_key == key)
            assert await s.scalar(conversation) is None
            assert await s.scalar(select(func.count()).where(InboundEvent.chat_key == key)) == 0, (
                "the chat's stored updates stay"
            )
            outbox = list(await s.scalars(select(OutboxMessage)))
            assert outbox and all(o.address != chat and o.chat_key != key for o in outbox)
            assert all(o.payload == {} for o in outbox), "the texts sent stay"
            # Nothing is left to go: sent, or (a button's answer still waiting) never sent.
            assert all(o.status in ("sent", ERASED) for o in outbox)
            ticket = (await s.scalars(select(Ticket))).one()
            assert ticket.reporter_id == reporter.id

        # The ward still handles the report through to its answer; nothing reaches the chat.
        triage = Staff(http, base, operator.username)
        staff = Staff(http, base, ward.username)
        await triage.act(code, "classify", urgency="normal", competence="ward")
        await staff.act(code, "claim")
        await staff.act(code, "verify")
        await staff.act(code, "confirm")
        photo = await staff.upload(image_bytes("JPEG", (80, 60), "blue"))
        answered = await staff.act(code, "answer", result="Đã thu dọn.", photos=[photo])
        assert answered["state"] == "answered"
        assert answered["reporter"] == f"#{reporter.pseudonym}"
        await quiet_for(api, CHAT)
        # Staff who would unseal the identity learn that it is gone, and see nothing.
        await staff_account(sessions, "an.operator", "Mat-khau-dai-2", "operator", "P38")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            csrf = await sign_in(browser, base, "an.operator", "Mat-khau-dai-2")
            form = {"csrf": csrf, "reason": "Hẹn xác minh"}
            async with browser.post(f"{base}/tickets/{code}/identity", data=form) as r:
                assert r.status == 200
                assert "đã được xoá" in await r.text()
    async with sessions() as s:
        unsealed = await s.scalar(select(func.count()).where(AuditEvent.action == UNSEAL))
        assert unsealed == 0
        notices = await s.scalar(select(func.count()).where(OutboxMessage.ticket_id == ticket.id))
        assert notices == 0
        # No audit line names the person.
        notes = [n for n in await s.scalars(select(AuditEvent.note)) if n]
    assert all(PHONE not in n and chat not in n for n in notes)


@pytest.mark.parametrize("mode", ["polling"])
async def test_withdraw_drops_the_draft_and_stops_everything_new_until_consent_again(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        operator = await make_user(s, "operator", "P38")
    user = FakeUser(api, chat_id=CHAT)
    async with running(chat_settings), aiohttp.ClientSession() as http:
        base = chat_settings.public_url or ""
        await report_in_bim_son(
            user, "Đổ rác, xả rác trái phép", "Rác cạnh chợ.", "Đột xuất, một lần"
        )
        code = await only_code(sessions)
        # A second report, half written.
        await user.text("/start")
        await user.reply()  # welcome; the consent is on record: the photo step
        await user.text("/withdraw")
        explain = await user.reply()
        assert "soạn dở sẽ bị bỏ" in (explain.text or "")
        assert "/forgetme" in (explain.text or "")
        await user.press("Xác nhận rút lại")
        done = await user.reply()
        assert "đang soạn dở đã được bỏ" in (done.text or "")
        assert "không gửi thông báo" in (done.text or "")
        async with sessions() as s:
            consent = (await s.scalars(select(Consent))).one()
            assert consent.withdrawn_at is not None
            state = await s.scalar(
                select(Conversation.state).where(
                    Conversation.chat_key == chat_key("telegram", CHAT)
                )
            )
            assert state == "idle"

        # No notices, and no rating or reopening.
        triage = Staff(http, base, operator.username)
        await triage.act(code, "classify", urgency="normal", competence="ward")
        await quiet_for(api, CHAT)
        await user.text(f"/reopen {code}")
        assert "rút lại sự đồng ý" in ((await user.reply()).text or "")

        # /start asks for consent again; given, the resident is heard again.
        await user.text("/start")
        consent_text = await user.reply()
        assert "đồng ý" in (consent_text.text or "")
        await user.press("✅ Tôi đồng ý")
        await user.reply()
        await triage.act(code, "transfer", competence="province", reason="Vượt thẩm quyền")
        moved = await until(user, code)
        assert "chuyển" in (moved.text or "")
    async with sessions() as s:
        consents = list(await s.scalars(select(Consent).order_by(Consent.id)))
    assert [c.withdrawn_at is None for c in consents] == [False, True]


async def test_rights_by_numbered_choices_on_the_zalo_oa(
    oa: FakeZaloOA,
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = zalo_settings(database_url, tmp_path, oa=oa)
    user = ZaloFollower(oa, "8511116471900001")
    async with running(settings):
        await user.follow()
        await report_by_text(user, user.text, user.image, lambda: user.location(*BIM_SON))
        await user.text("/mydata")
        held = await until(user, "Dữ liệu chúng tôi giữ về bạn")
        assert "Kênh liên hệ: Zalo (Official Account)" in held.text
        assert "1. 🗑 Xoá danh tính của tôi" in held.text
        await user.text("1")
        explain = await until(user, "Xoá danh tính")
        assert "1. Xác nhận xoá" in explain.text
        await user.text("1")
        await until(user, "Đã xoá danh tính của bạn")
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(ReporterIdentity)) == 0
        assert await s.scalar(select(func.count()).where(Ticket.channel == "zalo_oa")) == 1
        kept = [(o.address, o.chat_key) for o in await s.scalars(select(OutboxMessage))]
    assert not [k for k in kept if user.user_id in k or chat_key("zalo_oa", user.user_id) in k]


async def test_withdraw_by_numbered_choices_on_the_zalo_bot(
    zbot: FakeZaloBot,
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = zalo_settings(database_url, tmp_path, bot=zbot)
    user = ZaloBotUser(zbot, "a8f1c2d3e4b6")
    async with running(settings):
        await user.text("/start")
        await report_by_text(user, user.text, user.photo, lambda: user.text("20.0740, 105.9120"))
        await user.text("/withdraw")
        explain = await until(user, "Rút lại sự đồng ý")
        assert "1. Xác nhận rút lại" in explain.text and "2. Xoá cả danh tính" in explain.text
        await user.text("1")
        await until(user, "Đã ghi nhận bạn rút lại sự đồng ý")
        await user.text("/mydata")
        held = await until(user, "Dữ liệu chúng tôi giữ về bạn")
        assert "đã rút lại ngày" in held.text
    async with sessions() as s:
        assert await s.scalar(select(Consent.withdrawn_at)) is not None
