"""Residents report on Zalo, end to end over HTTP: an Official Account (signed webhook,
consultation messages, tokens) and the Bot Platform (getUpdates or a webhook)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import asyncpg
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import (
    InboundEvent,
    OAuthToken,
    OutboxMessage,
    Photo,
    Ticket,
    utcnow,
)
from backend.services.accounts import set_password
from backend.services.media_store import LocalStore
from backend.services.photos import photo_key, store_photo
from bot.runtime import ZALO_BOT
from tests.e2e.conftest import Staff, running
from tests.e2e.webhooks import channel_settings
from tests.factories import chat_key, make_user
from tests.fakes.images import image_bytes
from tests.fakes.zalo_bot import BotMessage, FakeZaloBot, ZaloBotUser
from tests.fakes.zalo_oa import FakeZaloOA, OAMessage, ZaloFollower

BIM_SON = (20.0740, 105.9120)


def zalo_settings(
    database_url: str,
    tmp_path: Path,
    *,
    oa: FakeZaloOA | None = None,
    bot: FakeZaloBot | None = None,
    bot_mode: str = "polling",
) -> Settings:
    return channel_settings(database_url, tmp_path, oa=oa, bot=bot, mode=bot_mode)


@pytest.fixture
def oa_settings(database_url: str, tmp_path: Path, oa: FakeZaloOA) -> Settings:
    """The service with the Zalo OA on (and no other channel)."""
    return zalo_settings(database_url, tmp_path, oa=oa)


class Resident(Protocol):
    async def reply(self, timeout: float = 15.0) -> Any: ...


async def until(resident: Resident, fragment: str, limit: int = 6) -> Any:
    """Read the resident's next messages until one contains fragment; that message."""
    seen = []
    for _ in range(limit):
        message = await resident.reply()
        if fragment in (message.text or ""):
            return message
        seen.append(message.text)
    raise AssertionError(f"no message with {fragment!r} in {seen}")


async def report_by_text(
    resident: Resident,
    say: Callable[[str], Awaitable[Any]],
    photo: Callable[[bytes], Awaitable[Any]],
    place: Callable[[], Awaitable[Any]],
) -> str:
    """A whole report on a channel without buttons: numbered choices answered by number;
    returns the confirmation's text."""
    await until(resident, "1. ✅ Tôi đồng ý")
    await say("1")
    await until(resident, "ảnh")
    await photo(image_bytes("JPEG", (64, 48), "green"))
    await until(resident, "Đã nhận ảnh")
    await say("Xong")
    prompt = await until(resident, "ghim")
    assert "vĩ độ, kinh độ" in prompt.text
    await place()
    for prompt_part, answer in (
        ("1. Phường Bỉm Sơn, Thanh Hóa", "1"),
        ("1. Đổ rác, xả rác trái phép", "1"),
        ("Mô tả", "Bãi rác tự phát cạnh kênh, bốc mùi nhiều ngày."),
        ("2. ➕ Đối tượng, tính chất", "2"),  # the optional details
        ("2. Thường xuyên", "2"),  # recurring
        ("1. ✅ Gửi ẩn danh", "1"),
    ):
        await until(resident, prompt_part)
        await say(answer)
    done = await until(resident, "Mã theo dõi")
    return str(done.text)


async def answer_with_photo(
    sessions: async_sessionmaker[AsyncSession], base: str, photo: bytes
) -> str:
    """Staff take the only ticket to an answer with a photo; its code."""
    async with sessions() as s, s.begin():
        operator = await make_user(s, "operator", "P38")
        staff_user = await make_user(s, "ward_staff", "W14812")
    async with sessions() as s:
        code = (await s.scalars(select(Ticket.code))).one()
    async with aiohttp.ClientSession() as http:
        triage, staff = Staff(http, base, operator.username), Staff(http, base, staff_user.username)
        await triage.act(code, "classify", urgency="normal", competence="ward")
        await staff.act(code, "claim")
        await staff.act(code, "verify")
        await staff.act(code, "confirm")
        sha = await staff.upload(photo)
        await staff.act(code, "answer", result="Đã thu dọn, lập biên bản.", photos=[sha])
    return code


# --- Zalo Official Account -------------------------------------------------------------------


async def test_oa_report_end_to_end_with_photo_location_and_answer(
    oa: FakeZaloOA,
    oa_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = ZaloFollower(oa, "8511116471922222")
    async with running(oa_settings):
        await user.follow()
        done = await report_by_text(user, user.text, user.image, lambda: user.location(*BIM_SON))
        assert "Mã theo dõi: 38-" in done and "UBND Phường Bỉm Sơn" in done
        async with sessions() as s:
            ticket = (await s.scalars(select(Ticket))).one()
            photos = list(await s.scalars(select(Photo).where(Photo.ticket_id == ticket.id)))
        assert ticket.channel == "zalo_oa" and ticket.ward_code == "14812"
        assert ticket.location_source == "gps"
        assert len(photos) == 1 and (oa_settings.media_dir / photo_key(photos[0].sha256)).exists()

        result_photo = image_bytes("JPEG", (80, 60), "blue")
        code = await answer_with_photo(sessions, oa_settings.public_url or "", result_photo)
        assigned = await until(user, "UBND Phường Bỉm Sơn")
        answer: OAMessage = await until(user, "Đã thu dọn")
        # The photo went up first, and came back as the message's media.
        assert answer.image is not None and answer.image[:3] == b"\xff\xd8\xff"
        assert f"/rate {code} 5" in (answer.text or "") and f"/reopen {code}" in (answer.text or "")
        assert code in (assigned.text or "")
        await user.text(f"/rate {code} 4")
        thanks = await until(user, "4 ⭐")
        assert code in (thanks.text or "")
    async with sessions() as s:
        rated = await s.scalar(select(Ticket.rating).where(Ticket.code == code))
        statuses = set(await s.scalars(select(OutboxMessage.status)))
    assert rated == 4
    assert statuses == {"sent"}
    # Every call carried the access token in its header.
    assert {token for _, token in oa.calls} == {"access-1"}


@pytest.mark.parametrize(
    "signature",
    [None, "mac=" + "0" * 64, "not-a-signature"],
    ids=["missing", "wrong", "garbage"],
)
async def test_oa_webhook_refuses_bad_signatures(
    oa: FakeZaloOA,
    oa_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    signature: str | None,
) -> None:
    user = ZaloFollower(oa, "8511116471922223")
    async with running(oa_settings):
        event = user.event("user_send_text", {"text": "/start"})
        assert await oa.post_event(event, signature=signature) == 401
        # The same event signed as Zalo signs it is taken.
        assert await oa.post_event(event) == 200
        await until(user, "Tôi đồng ý")
    async with sessions() as s:
        stored = await s.scalar(select(func.count()).select_from(InboundEvent))
    assert stored == 1


async def test_oa_repeated_msg_id_is_handled_once(
    oa: FakeZaloOA,
    oa_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = ZaloFollower(oa, "8511116471922224")
    async with running(oa_settings):
        event = user.event("user_send_text", {"text": "/start"})
        assert await oa.post_event(event) == 200
        # Stored before the answer: the row is there as soon as the webhook answered.
        async with sessions() as s:
            assert await s.scalar(select(func.count()).select_from(InboundEvent)) == 1
        assert await oa.post_event(event) == 200
        first = await user.replies(1)
        # A later, different message still gets its answer; the repeat got none.
        await user.text("/help")
        after = await until(user, "/status")
    assert "Tôi đồng ý" in (first[0].text or "")
    assert oa.sent.to(user.user_id) == [*first, after]
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(InboundEvent)) == 2


async def test_oa_expired_token_is_renewed_once_and_the_send_retried(
    oa: FakeZaloOA,
    oa_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    users = [ZaloFollower(oa, f"85111164719300{n:02d}") for n in range(4)]
    async with running(oa_settings):
        await users[0].text("/help")
        await until(users[0], "/status")
        oa.expire_access_token()
        # Several chats hit the expired token together: one renewal serves them all.
        await asyncio.gather(*(u.text("/help") for u in users))
        for u in users:
            await until(u, "/status")
    assert len(oa.refreshes) == 1
    assert oa.refreshes[0] == ("refresh-1", oa.app_secret)
    # The first reply went out on the first token; then a send was refused on it (-216)
    # and, after the renewal, every send went out on the new one.
    old = [n for n, (_, token) in enumerate(oa.calls) if token == "access-1"]
    assert len(old) >= 2 and old == list(range(len(old)))
    assert [token for _, token in oa.calls[len(old) :]] == [oa.access_token] * 4
    async with sessions() as s:
        stored = await s.get(OAuthToken, "zalo_oa")
        statuses = set(await s.scalars(select(OutboxMessage.status)))
    assert stored is not None
    assert (stored.access_token, stored.refresh_token) == (oa.access_token, oa.refresh_token)
    assert stored.expires_at is not None and stored.expires_at > utcnow() + timedelta(hours=24)
    assert statuses == {"sent"}


async def test_oa_reused_refresh_token_alerts_admins_and_holds_messages(
    oa: FakeZaloOA,
    oa_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with sessions() as s, s.begin():
        admin = await make_user(s, "admin", None, chat_id="777")
    user = ZaloFollower(oa, "8511116471922225")
    caplog.set_level(logging.ERROR, logger="bot.zalo_tokens")
    async with running(oa_settings):
        oa.expire_access_token()
        oa.reuse_refresh_token()
        await user.text("/help")
        deadline = time.monotonic() + 10
        while True:
            async with sessions() as s:
                token = await s.get(OAuthToken, "zalo_oa")
                alert = await s.scalar(
                    select(OutboxMessage).where(
                        OutboxMessage.chat_key == chat_key("telegram", admin.telegram_chat_id)
                    )
                )
            if alert is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        async with sessions() as s:
            held = (
                await s.scalars(
                    select(OutboxMessage).where(
                        OutboxMessage.chat_key == chat_key("zalo_oa", user.user_id)
                    )
                )
            ).all()
    assert token is not None and token.revoked_at is not None
    assert "-14020" in (token.revoked_reason or "")
    assert alert is not None and alert.payload["key"] == "alert.zalo_token_revoked"
    assert alert.payload["params"] == {"error": -14020}
    # The resident's reply is held, not failed: it goes once an admin sets new tokens.
    assert [m.status for m in held] == ["pending"]
    assert oa.sent.to(user.user_id) == []
    assert len(oa.refreshes) == 1
    assert any(
        "-14020" in r.getMessage() and "HOTLINE_ZALO_OA_REFRESH_TOKEN" in r.getMessage()
        for r in caplog.records
    )


async def test_oa_error_in_a_200_answer_is_a_failure_and_retried(
    oa: FakeZaloOA,
    oa_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = ZaloFollower(oa, "8511116471922226")
    oa.fail_next_send(-124, "Quota exceeded, try again later")
    async with running(oa_settings):
        await user.text("/help")
        deadline = time.monotonic() + 10
        row = None
        while row is None or row.attempts == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
            async with sessions() as s:
                row = await s.scalar(select(OutboxMessage))
        assert row.status == "pending" and row.attempts == 1
        assert "-124" in (row.last_error or "")
        # Sent on the retry after the backoff.
        reply = await until(user, "/status")
    assert reply.text is not None
    async with sessions() as s:
        done = await s.scalar(select(OutboxMessage))
    assert done is not None and done.status == "sent" and done.attempts == 1


async def _login(http: aiohttp.ClientSession, base: str, username: str) -> None:
    async with http.get(f"{base}/login") as r:
        page = await r.text()
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    async with http.post(
        f"{base}/login",
        data={"username": username, "password": "a long enough password", "csrf": token},
        allow_redirects=False,
    ) as r:
        assert r.status == 303


async def test_oa_notice_outside_the_window_is_kept_for_a_phone_call(
    oa: FakeZaloOA,
    database_url: str,
    oa_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = ZaloFollower(oa, "8511116471922227")
    async with sessions() as s, s.begin():
        staff_user = await make_user(s, "ward_staff", "W14812")
        await set_password(s, staff_user, "a long enough password")
    async with (
        running(oa_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = oa_settings.public_url or ""
        await user.follow()
        await report_by_text(user, user.text, user.image, lambda: user.location(*BIM_SON))
        # The resident's last message was 49 hours ago.
        async with sessions() as s, s.begin():
            await s.execute(update(InboundEvent).values(received_at=utcnow() - timedelta(hours=49)))
        code = await answer_with_photo(sessions, base, image_bytes("JPEG", (80, 60), "blue"))
        deadline = time.monotonic() + 10
        while True:
            async with sessions() as s:
                rows = list(
                    await s.scalars(
                        select(OutboxMessage).where(OutboxMessage.ticket_id.is_not(None))
                    )
                )
            if (rows and all(r.status != "pending" for r in rows)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        sent_before = len(oa.sent.to(user.user_id))
        await _login(http, base, staff_user.username)
        async with http.get(f"{base}/queue?view=call") as r:
            to_phone = await r.text()
        async with http.get(f"{base}/tickets/{code}") as r:
            assert r.status == 200
            page = await r.text()
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        async with http.post(
            f"{base}/tickets/{code}/phoned", data={"csrf": csrf}, allow_redirects=False
        ) as r:
            assert r.status == 303
        async with http.get(f"{base}/tickets/{code}") as r:
            after = await r.text()
        async with http.get(f"{base}/queue?view=call") as r:
            to_phone_after = await r.text()
    # Nothing was sent, nothing dropped: each notice waits for staff to phone.
    assert {r.status for r in rows} == {"undeliverable"}
    assert {r.payload["key"] for r in rows} >= {"notify.assigned", "notify.answered"}
    assert all("reply window" in (r.last_error or "") for r in rows)
    assert len(oa.sent.to(user.user_id)) == sent_before
    assert "Chưa báo được cho người phản ánh" in page
    assert "Kết quả xử lý" in page and "Đã chuyển đến đơn vị xử lý" in page
    assert "Chưa báo được cho người phản ánh" not in after
    assert f"/tickets/{code}" in to_phone and "Cần gọi điện" in to_phone
    assert f"/tickets/{code}" not in to_phone_after
    assert "Gọi điện báo người phản ánh" in after
    async with sessions() as s:
        statuses = set(
            await s.scalars(
                select(OutboxMessage.status).where(OutboxMessage.ticket_id.is_not(None))
            )
        )
    assert statuses == {"called"}


async def _hold_database(database_url: str, seconds: float) -> None:
    """Another client holds the inbound table (PostgreSQL) or the write lock (SQLite)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":

        def hold() -> None:
            conn = sqlite3.connect(str(url.database), timeout=30)
            try:
                conn.execute("BEGIN IMMEDIATE")
                time.sleep(seconds)
                conn.rollback()
            finally:
                conn.close()

        await asyncio.to_thread(hold)
        return
    conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE inbound_events IN ACCESS EXCLUSIVE MODE")
            await asyncio.sleep(seconds)
    finally:
        await conn.close()


async def test_oa_webhook_answers_within_two_seconds_on_a_slow_database(
    oa: FakeZaloOA,
    database_url: str,
    oa_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = ZaloFollower(oa, "8511116471922228")
    async with running(oa_settings):
        holder = asyncio.create_task(_hold_database(database_url, 3.5))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await user.text("/start")
        answered_in = time.monotonic() - started
        assert not holder.done()  # the database was still held when Zalo got its answer
        await holder
        # Once the database answers again, the event is stored and handled.
        await until(user, "Tôi đồng ý")
    assert answered_in < 2.0
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(InboundEvent)) == 1


async def test_oa_file_is_not_taken_as_a_photo(
    oa: FakeZaloOA,
    oa_settings: Settings,
) -> None:
    user = ZaloFollower(oa, "8511116471922229")
    async with running(oa_settings):
        await user.follow()
        await until(user, "Tôi đồng ý")
        await user.text("1")
        await until(user, "ảnh")
        await user.file("report.pdf")
        refused = await until(user, "ảnh")
    assert "JPEG" in (refused.text or "") or "không phải ảnh" in (refused.text or "").lower()


# --- Zalo Bot Platform ----------------------------------------------------------------------


@pytest.mark.parametrize("bot_mode", ["polling", "webhook"])
async def test_bot_report_end_to_end_with_photo_location_and_answer(
    zbot: FakeZaloBot,
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    bot_mode: str,
) -> None:
    settings = zalo_settings(database_url, tmp_path, bot=zbot, bot_mode=bot_mode)
    user = ZaloBotUser(zbot, "a8f1c2d3e4b5")
    async with running(settings):
        if bot_mode == "webhook":
            assert zbot.webhook_url == f"{settings.public_url}/zalo/bot/webhook"
            assert zbot.webhook_secret == settings.zalo_bot_webhook_secret_value()
        await user.text("/start")
        done = await report_by_text(
            user, user.text, user.photo, lambda: user.text("20.0740, 105.9120")
        )
        assert "Mã theo dõi: 38-" in done
        async with sessions() as s:
            ticket = (await s.scalars(select(Ticket))).one()
            photo_count = await s.scalar(
                select(func.count()).select_from(Photo).where(Photo.ticket_id == ticket.id)
            )
        assert ticket.channel == "zalo_bot" and ticket.ward_code == "14812"
        assert photo_count == 1

        await answer_with_photo(
            sessions, settings.public_url or "", image_bytes("JPEG", (80, 60), "blue")
        )
        answer: BotMessage = await until(user, "Đã thu dọn")
    assert answer.method == "sendPhoto"
    assert answer.photo_url is not None and answer.photo_url.startswith(str(settings.public_url))
    async with sessions() as s:
        sha = await s.scalar(select(Photo.sha256).where(Photo.kind == "result"))
    assert sha is not None
    stored = settings.media_dir / photo_key(sha)
    assert answer.photo == stored.read_bytes()
    if bot_mode == "webhook":
        assert zbot.webhook_statuses and set(zbot.webhook_statuses) == {200}
    else:
        assert any(method == "getUpdates" for method, _ in zbot.calls)


async def test_bot_webhook_checks_the_secret_token_and_media_links_are_signed(
    zbot: FakeZaloBot,
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = zalo_settings(database_url, tmp_path, bot=zbot, bot_mode="webhook")
    user = ZaloBotUser(zbot, "b9e2d3c4f5a6")
    stored = await store_photo(
        LocalStore(settings.media_dir),
        image_bytes("JPEG", (64, 48), "red"),
        settings.max_photo_bytes,
    )
    async with running(settings) as app, aiohttp.ClientSession() as http:
        update = user.update("message.text.received", text="/start")
        assert await zbot.post_webhook(update, None) == 401
        assert await zbot.post_webhook(update, "wrong-secret") == 401
        assert await zbot.post_webhook(update, zbot.webhook_secret) == 200
        await until(user, "Tôi đồng ý")
        await user.sticker()  # not for the dialogue: the consent question again
        await until(user, "Tôi đồng ý")

        link = app[ZALO_BOT].media_url(stored.sha256)
        path = settings.media_dir / photo_key(stored.sha256)
        assert link is not None
        async with http.get(link) as r:
            assert r.status == 200 and await r.read() == path.read_bytes()
        for forged in (
            link.replace("/full/", "/thumb/"),
            link[: -len(".jpg") - 1] + ("0" if link[-5] != "0" else "1") + ".jpg",
            link.replace(stored.sha256, "a" * 64),
        ):
            async with http.get(forged) as r:
                assert r.status == 404, forged
    async with sessions() as s:
        count = await s.scalar(select(func.count()).select_from(InboundEvent))
    assert count == 2  # /start and the sticker; nothing for the refused posts
