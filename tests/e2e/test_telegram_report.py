"""A resident reports on Telegram, end to end over HTTP, in polling and webhook mode."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Consent, Photo, Ticket, Unit
from tests.e2e.conftest import report_in_bim_son, running
from tests.fakes.images import image_bytes
from tests.fakes.telegram_api import FakeTelegram, FakeUser


async def test_full_report_is_routed_to_bim_son(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with running(chat_settings):
        user = FakeUser(api, chat_id=5001)
        await user.text("/start")
        welcome, consent = await user.replies(2)
        assert "Đường dây nóng" in (welcome.text or "")
        assert ("✅ Tôi đồng ý", "consent|yes") in consent.buttons()

        await user.press("✅ Tôi đồng ý")
        ask_photos = await user.reply()
        assert "ghi nhận" in (ask_photos.text or "")
        assert "ảnh" in (ask_photos.text or "")

        await user.photo(image_bytes("JPEG"))
        got = await user.reply()
        assert "Đã nhận ảnh" in (got.text or "")
        await user.press("Xong")
        ask_location = await user.reply()
        assert ask_location.keyboard()[0].get("request_location") is True

        await user.location(20.0740, 105.9120)
        _, ward_prompt = await user.replies(2)
        assert ward_prompt.buttons()[0] == ("Phường Bỉm Sơn, Thanh Hóa", "ward|14812")
        await user.press("Phường Bỉm Sơn, Thanh Hóa")
        category = await user.reply()
        assert len(category.buttons()) == 13
        await user.press("Đổ rác, xả rác trái phép")
        await user.reply()
        await user.text("Bãi rác tự phát cạnh kênh, bốc mùi nhiều ngày.")
        await user.reply()
        await user.press("Không rõ")
        await user.reply()
        await user.press("Thường xuyên, lặp lại")
        await user.reply()
        await user.text("0912 345 678")
        saved, summary = await user.replies(2)
        assert "+84912345678" in (saved.text or "")
        assert "Phường Bỉm Sơn" in (summary.text or "")
        await user.press("✅ Gửi")
        done = await user.reply()

    text = done.text or ""
    assert "Mã theo dõi: 38-" in text
    assert "Phường Bỉm Sơn, Thanh Hóa" in text
    assert "UBND Phường Bỉm Sơn" in text
    async with sessions() as session:
        ticket = (await session.scalars(select(Ticket))).one()
        unit = await session.get(Unit, ticket.unit_id)
        photos = await session.scalar(select(func.count()).select_from(Photo))
        consents = await session.scalar(select(func.count()).select_from(Consent))
    assert ticket.code in text
    assert ticket.ward_code == "14812"
    assert unit is not None and unit.ward_code == "14812"
    assert ticket.state == "received"
    assert ticket.urgency == "normal"
    assert photos == 1
    assert consents == 1
    # Every button press was answered.
    assert len(api.answered_callbacks) == 7


async def test_same_update_twice_gives_one_reply_and_one_ticket(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with running(chat_settings):
        user = FakeUser(api, chat_id=5002)
        confirm = await report_in_bim_son(
            user, "Tiếng ồn", "Xưởng cưa chạy máy cả đêm.", "Đột xuất, một lần"
        )
        # Telegram redelivers the very same update (same update_id).
        await api.push(confirm)
        await api.push(confirm)
        await user.text("/my")
        mine = await user.reply()

    assert "Phản ánh của bạn" in (mine.text or "")
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 1
        ticket = (await session.scalars(select(Ticket))).one()
    assert ticket.urgency == "urgent"
    assert (mine.text or "").count(ticket.code) == 1


async def test_restart_between_steps_resumes_the_conversation(
    api: FakeTelegram, chat_settings: Settings
) -> None:
    user = FakeUser(api, chat_id=5003, language_code="en")
    async with running(chat_settings):
        await user.text("/start")
        await user.replies(2)
        await user.press("✅ I agree")
        await user.reply()
        await user.text("/skip")
        await user.reply()
    # The server is gone; a new one starts on the same database.
    async with running(chat_settings):
        await user.text("20.0740, 105.9120")
        received, wards = await user.replies(2)
    assert "Location received" in (received.text or "")
    assert wards.buttons()[0][1] == "ward|14812"


@pytest.mark.parametrize("mode", ["webhook"])
async def test_webhook_refuses_a_wrong_secret(
    api: FakeTelegram, chat_settings: Settings, mode: str
) -> None:
    async with running(chat_settings):
        assert api.webhook_url is not None and api.webhook_url.endswith("/telegram/webhook")
        user = FakeUser(api, chat_id=5004)
        update = user.message_update(text="/start")
        assert await api.post_webhook(update, "wrong") == 401
        assert await api.post_webhook(update, "") == 401
        assert api.sent_to(5004) == []
        assert await api.post_webhook(update, chat_settings.webhook_secret()) == 200
        await user.replies(2)


def test_webhook_secret_is_stable_per_token() -> None:
    a = Settings(telegram_token=SecretStr("1:a")).webhook_secret()
    assert a == Settings(telegram_token=SecretStr("1:a")).webhook_secret()
    assert a != Settings(telegram_token=SecretStr("1:b")).webhook_secret()
    assert Settings(telegram_webhook_secret=SecretStr("s3")).webhook_secret() == "s3"


@pytest.mark.parametrize("mode", ["polling"])
async def test_files_are_checked_before_they_count(
    api: FakeTelegram,
    chat_settings: Settings,
    mode: str,
) -> None:
    async with running(chat_settings):
        user = FakeUser(api, chat_id=5005)
        await user.text("/start")
        await user.replies(2)
        await user.press("✅ Tôi đồng ý")
        await user.reply()
        await user.document(b"%PDF-1.7 report", "bien-ban.pdf", "application/pdf")
        assert "không phải ảnh" in ((await user.reply()).text or "")
        await user.document(b"<svg/>", "anh.jpg", "image/jpeg")
        assert "không phải ảnh" in ((await user.reply()).text or "")
        await user.document(None, "huge.jpg", "image/jpeg", size=25 * 1024 * 1024)
        assert "quá lớn" in ((await user.reply()).text or "")
        await user.document(image_bytes("PNG"), "hien-truong.png", "image/png")
        assert "Đã nhận ảnh" in ((await user.reply()).text or "")
    # Only the one real image was kept, re-encoded as a clean JPEG with its thumbnail.
    stored = sorted(p.name for p in chat_settings.media_dir.rglob("*.*"))
    assert len(stored) == 2
    assert stored[0].endswith(".jpg") and stored[1].endswith(".thumb.jpg")
