"""A resident reports on Telegram, end to end over HTTP, in polling and webhook mode."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.cli import main
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
    """Without imported boundaries the resident picks the ward among the nearest."""
    async with running(chat_settings):
        user = FakeUser(api, chat_id=5001)
        await user.text("/start")
        consent = await user.reply()
        assert "Đường dây nóng" in (consent.text or "")
        assert ("✅ Tôi đồng ý", "consent|yes") in consent.buttons()

        await user.press("✅ Tôi đồng ý")
        ask_photos = await user.reply()
        assert "ghi nhận" in (ask_photos.text or "") and "ảnh" in (ask_photos.text or "")
        assert ask_photos.keyboard()[0].get("request_location") is True

        await user.photo(image_bytes("JPEG"))
        got = await user.reply()
        assert "Đã nhận ảnh" in (got.text or "")
        assert got.keyboard()[0].get("request_location") is True

        await user.location(20.0740, 105.9120)
        received, ward_prompt = await user.replies(2)
        assert "Đã nhận vị trí" in (received.text or "")
        assert received.reply_markup == {"remove_keyboard": True}
        assert ward_prompt.buttons()[0] == ("Phường Bỉm Sơn, Thanh Hóa", "ward|14812")
        await user.press("Phường Bỉm Sơn, Thanh Hóa")
        category = await user.reply()
        assert len(category.buttons()) == 13
        await user.press("Đổ rác, xả rác trái phép")
        await user.reply()
        await user.text("Bãi rác tự phát cạnh kênh, bốc mùi nhiều ngày.")
        summary = await user.reply()
        assert "Phường Bỉm Sơn" in (summary.text or "")
        assert summary.keyboard()[0].get("request_contact") is True
        await user.tap("➕ Đối tượng, tính chất (không bắt buộc)")
        await user.reply()
        await user.press("Thường xuyên, lặp lại")
        await user.reply()
        await user.contact("0912 345 678")
        done = await user.reply()

    text = done.text or ""
    assert "Mã theo dõi: 38-" in text
    assert "Phường Bỉm Sơn, Thanh Hóa" in text
    assert "UBND Phường Bỉm Sơn" in text
    assert "+84912345678" in text
    async with sessions() as session:
        ticket = (await session.scalars(select(Ticket))).one()
        unit = await session.get(Unit, ticket.unit_id)
        photos = await session.scalar(select(func.count()).select_from(Photo))
        consents = await session.scalar(select(func.count()).select_from(Consent))
    assert ticket.code in text
    assert ticket.ward_code == "14812"
    assert unit is not None and unit.ward_code == "14812"
    assert ticket.state == "received"
    assert (ticket.urgency, ticket.nature) == ("normal", "recurring")
    assert photos == 1
    assert consents == 1
    # Every button press was answered.
    assert len(api.answered_callbacks) == 4


async def test_a_photo_and_gps_report_takes_seven_actions_and_eight_messages(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A photo + GPS report where the province imported its ward boundaries, at
    Telegram's pace of one message a second per chat: at most 7 resident actions and 9
    bot messages from /start to the tracking code (8: the place's acknowledgement removes
    the keyboard that shared it, so the question with buttons is a message of its own)."""
    await import_a_boundary(database_url, tmp_path, monkeypatch, "14812", 20.0740, 105.9120)
    paced = chat_settings.model_copy(update={"telegram_rate_per_chat": 1.0})
    actions = 0

    async def act(do: Awaitable[object]) -> None:
        nonlocal actions
        actions += 1
        await do

    async with running(paced):
        user = FakeUser(api, chat_id=5009)
        await act(user.text("/start"))
        await user.reply()
        await act(user.press("✅ Tôi đồng ý"))
        await user.reply()
        await act(user.photo(image_bytes("JPEG")))
        await user.reply()
        await act(user.location(20.0740, 105.9120))
        located, category = await user.replies(2)
        assert "Phường Bỉm Sơn" in (located.text or "") and len(category.buttons()) == 13
        await act(user.press("Đổ rác, xả rác trái phép"))
        await user.reply()
        await act(user.text("Bãi rác tự phát cạnh kênh, bốc mùi nhiều ngày."))
        await user.reply()
        await act(user.contact("0912 345 678"))
        last_tap = time.monotonic()
        done = await user.reply()
        seconds = time.monotonic() - last_tap

    assert "Mã theo dõi: 38-" in (done.text or "")
    messages = len(api.sent_to(5009))
    assert actions <= 7 and messages <= 9, (actions, messages)
    print(f"photo + GPS report: {actions} actions, {messages} messages, {seconds:.2f} s")
    # One message for the last tap: under a second and a half even at one a second.
    assert seconds < 1.5
    async with sessions() as session:
        ticket = (await session.scalars(select(Ticket))).one()
    assert ticket.ward_code == "14812"


async def import_a_boundary(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ward: str,
    lat: float,
    lon: float,
) -> None:
    """A square of about 2 km around the point as the ward's boundary, imported with the
    command an operator uses."""
    d = 0.01
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d]]
    feature = {
        "type": "Feature",
        "properties": {"code": ward},
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    }
    path = tmp_path / "wards.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", database_url)
    await asyncio.to_thread(main, ["import-boundaries", str(path)])


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
    # Listed once (its line, then its case page's link).
    assert (mine.text or "").count(f"• {ticket.code}") == 1


async def test_restart_between_steps_resumes_the_conversation(
    api: FakeTelegram, chat_settings: Settings
) -> None:
    user = FakeUser(api, chat_id=5003, language_code="en")
    async with running(chat_settings):
        await user.text("/start")
        await user.reply()
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
        await user.reply()


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
        await user.reply()
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


@pytest.mark.parametrize("mode", ["polling"])
async def test_after_sending_a_photo_is_added_to_the_report_on_telegram(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    mode: str,
) -> None:
    """Consent typed, a ward typed far from the pin checked, then a photo after sending:
    offered as an addition to the report, stored on it."""
    async with running(chat_settings):
        user = FakeUser(api, chat_id=5010)
        await user.text("/start")
        await user.reply()
        await user.text("đồng ý")
        assert "Bước 1" in ((await user.reply()).text or "")
        await user.location(21.0285, 105.8542)  # Hà Nội
        await user.replies(2)
        await user.text("Bỉm Sơn")  # a ward in Thanh Hóa
        check = await user.reply()
        assert "Cái nào đúng?" in (check.text or "")
        await user.press("🏛 Phường Bỉm Sơn, Thanh Hóa đúng")
        await user.reply()  # the centre taken (approximate), and the category question
        await user.press("Đổ rác, xả rác trái phép")
        await user.reply()
        await user.text("Bãi rác tự phát cạnh kênh, bốc mùi nhiều ngày.")
        await user.reply()
        await user.tap("✅ Gửi ẩn danh")
        done = await user.reply()
        code = (done.text or "").split("Mã theo dõi: ")[1].split()[0]

        await user.photo(image_bytes("JPEG", (64, 48), "brown"))
        offer = await user.reply()
        assert f"Thêm vào phản ánh {code}" in (offer.text or "")
        await user.press(f"➕ Thêm vào {code}")
        saved = await user.reply()
    assert f"Đã bổ sung vào phản ánh {code} (1 ảnh)" in (saved.text or "")
    async with sessions() as session:
        ticket = (await session.scalars(select(Ticket))).one()
        kinds = sorted(p.kind for p in await session.scalars(select(Photo)))
    assert (ticket.code, ticket.ward_code, ticket.location_source) == (code, "14812", "ward_name")
    assert kinds == ["addition"]
