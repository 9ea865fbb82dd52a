"""The rights under pressure: presses twice, a message in the same batch as the erasure,
writing again at once, /status after an erasure, and a message as a sign of life for the
retention pass."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Conversation, InboundEvent, OutboxMessage, ReporterIdentity
from tests.e2e.conftest import report_in_bim_son, running
from tests.e2e.test_zalo import BIM_SON, report_by_text, until, zalo_settings
from tests.factories import chat_key
from tests.fakes.telegram_api import FakeTelegram, FakeUser
from tests.fakes.zalo_oa import FakeZaloOA, ZaloFollower

PHONE = "+84912345678"
CHAT = 6201


async def leftovers(sessions: async_sessionmaker[AsyncSession], chat: str) -> dict[str, Any]:
    """What the database holds of one Telegram chat."""
    key = chat_key("telegram", chat)
    async with sessions() as s:
        return {
            "identities": list(
                await s.scalars(
                    select(ReporterIdentity.reporter_id).where(ReporterIdentity.chat_key == key)
                )
            ),
            "conversations": list(
                await s.execute(
                    select(Conversation.state, Conversation.reporter_id).where(
                        Conversation.chat_key == key
                    )
                )
            ),
            "outbox": [
                (o.status, str(o.payload)[:80])
                for o in await s.scalars(select(OutboxMessage).where(OutboxMessage.chat_key == key))
            ],
            "inbound": list(
                await s.scalars(select(InboundEvent.id).where(InboundEvent.chat_key == key))
            ),
        }


async def asked_to_erase(user: FakeUser) -> tuple[Any, str]:
    """A report with the phone shared, then /forgetme: the question, and its confirm data."""
    await report_in_bim_son(
        user, "Đổ rác, xả rác trái phép", "Rác cạnh chợ.", "Đột xuất, một lần", phone=PHONE
    )
    await user.text("/forgetme")
    explain = await user.reply()
    return explain, dict(explain.buttons())["Xác nhận xoá"]


@pytest.mark.parametrize("mode", ["polling"])
async def test_two_presses_of_erase_erase_once_and_a_later_one_is_a_new_contact(
    api: FakeTelegram, chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A double tap on «Xác nhận xoá», and a late one: the identity is erased once, and a
    later press is a new contact's stale button: answered, and nothing of before kept."""
    user = FakeUser(api, chat_id=CHAT)
    async with running(chat_settings):
        explain, confirm = await asked_to_erase(user)
        await user.press_data(confirm, explain.message_id)
        await user.press_data(confirm, explain.message_id)
        done, stale = await user.replies(2)
        assert "Đã xoá danh tính" in (done.text or "")
        assert "Nút này đã cũ" in (stale.text or "")
        await asyncio.sleep(1.0)
        await user.press_data(confirm, explain.message_id)  # a late tap
        assert "Nút này đã cũ" in ((await user.reply()).text or "")
        await asyncio.sleep(1.0)
    left = await leftovers(sessions, str(CHAT))
    assert left["identities"] == []
    # What is kept is the new contact's: an idle chat without a reporter, and the
    # answers to its presses.
    assert all(reporter is None for _, reporter in left["conversations"])
    assert all("Nút này đã cũ" in text or "'ack'" in text for _, text in left["outbox"])


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_reply_in_the_same_batch_as_the_erasure_is_erased_too(
    api: FakeTelegram, chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A message typed just before pressing «Xác nhận xoá» (often the same batch): its
    reply goes out, and then neither it nor the chat is kept."""
    user = FakeUser(api, chat_id=CHAT)
    async with running(chat_settings):
        explain, confirm = await asked_to_erase(user)
        await user.text(f"số tôi là {PHONE}")
        await user.press_data(confirm, explain.message_id)
        await user.replies(2)
        await asyncio.sleep(1.5)
    left = await leftovers(sessions, str(CHAT))
    assert left == {"identities": [], "conversations": [], "outbox": [], "inbound": []}, left


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_message_is_a_sign_of_life_after_its_update_is_pruned(
    api: FakeTelegram, chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """README: an identity is kept until its reporter has done nothing (no report,
    conversation step, message or rating) for 12 months. A message that moves nothing
    (/status, /my) still dates the chat, after its stored update is pruned (8 days)."""
    from datetime import timedelta

    from sqlalchemy import delete, update

    from backend.models import Reporter, Ticket, utcnow
    from backend.services.retention import Periods, retention_pass

    user = FakeUser(api, chat_id=CHAT)
    async with running(chat_settings):
        await report_in_bim_son(
            user, "Đổ rác, xả rác trái phép", "Rác cạnh chợ.", "Đột xuất, một lần", phone=PHONE
        )
        long_ago = utcnow() - timedelta(days=400)
        async with sessions() as s, s.begin():
            code = (await s.scalars(select(Ticket.code))).one()
            await s.execute(update(Ticket).values(state="closed", created_at=long_ago))
            await s.execute(update(Reporter).values(created_at=long_ago))
            await s.execute(update(Conversation).values(updated_at=long_ago))
        await user.text(f"/status {code}")  # the resident writes today
        await user.reply()
        await user.text("/my")
        await user.reply()
        await asyncio.sleep(0.5)
    now = utcnow()
    async with sessions() as s, s.begin():
        touched = await s.scalar(select(Conversation.updated_at))
        # What bot/inbox.py's prune does to these updates 8 days later:
        await s.execute(delete(InboundEvent))
    done = await retention_pass(sessions, Periods(12, 30, 30), now + timedelta(days=9))
    assert touched is not None and touched > now - timedelta(days=1), "the message left no trace"
    assert done["identities"] == 0, "erased 9 days after the resident wrote"


async def test_writing_again_right_after_forgetme_on_the_zalo_oa_is_answered(
    oa: FakeZaloOA, database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Once the last message to the forgotten chat is out, the chat's updates up to the
    erasure go; one written at once after it is a new contact's, which dates the reply
    window of Zalo's OA: the new contact is answered."""
    settings = zalo_settings(database_url, tmp_path, oa=oa)
    user = ZaloFollower(oa, "8511116471900002")
    async with running(settings):
        await user.follow()
        await report_by_text(user, user.text, user.image, lambda: user.location(*BIM_SON))
        await user.text("/forgetme")
        await until(user, "Xoá danh tính")
        await user.text("1")
        await user.text("/start")  # at once: a new contact
        await until(user, "Đã xoá danh tính của bạn")
        await until(user, "Bạn có đồng ý không?")  # the consent question to the new contact


@pytest.mark.parametrize("mode", ["polling"])
async def test_status_after_forgetme_stores_nothing_of_whoever_asks(
    api: FakeTelegram, chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """forget.explain says a report can still be looked up with /status <code>: doing so
    makes no reporter of whoever asks."""
    from backend.models import Ticket

    user = FakeUser(api, chat_id=CHAT)
    async with running(chat_settings):
        await report_in_bim_son(
            user, "Đổ rác, xả rác trái phép", "Rác cạnh chợ.", "Đột xuất, một lần", phone=PHONE
        )
        async with sessions() as s:
            code = (await s.scalars(select(Ticket.code))).one()
        await user.text("/forgetme")
        await user.reply()
        await user.press("Xác nhận xoá")
        await user.reply()
        await user.text(f"/status {code}")
        await user.reply()
    left = await leftovers(sessions, str(CHAT))
    assert left["identities"] == [], left
