"""A unit's Telegram group: linked with a one-time code, gets a card per new ticket, and
the card's claim button works for linked staff only (the card then says who)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Ticket
from backend.services.deadlines import Policies
from backend.services.media_store import LocalStore
from backend.services.photos import store_photo
from backend.services.staff_groups import create_link_code
from backend.services.workflow import Action, Actor, apply
from tests.e2e.conftest import running
from tests.factories import make_ticket, make_user
from tests.fakes.images import image_bytes
from tests.fakes.telegram_api import FakeTelegram, FakeUser

GROUP = -1001234


@pytest.mark.parametrize("mode", ["polling"])
async def test_cards_in_a_linked_group_and_who_may_claim(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        code = await create_link_code(s, "W14812")
        staff = await make_user(s, "ward_staff", "W14812", chat_id="8001")
        await make_user(s, "ward_staff", "W14812", chat_id="8003")
    lan = FakeUser(api, 8001, group_id=GROUP)
    stranger = FakeUser(api, 8002, group_id=GROUP)
    media = LocalStore(chat_settings.media_dir)
    photo = (await store_photo(media, image_bytes("JPEG"), 10**7)).as_dict()
    async with running(chat_settings):
        await stranger.text("/link WRONG123")
        assert "không đúng" in ((await lan.reply()).text or "")
        await lan.text(f"/link {code.lower()}")
        assert "UBND Phường Bỉm Sơn" in ((await lan.reply()).text or "")
        await lan.text("chào cả nhà")  # group chatter is not for the bot

        async with sessions() as s, s.begin():
            ticket = await make_ticket(s, photo=photo)
            await apply(
                s, ticket, Action("classify", competence="ward"), Actor.system(), Policies.load()
            )
            await apply(s, ticket, Action("assign"), Actor.system(), Policies.load())
            ticket_code = ticket.code
        card = await lan.reply()
        assert card.method == "sendPhoto"
        assert ticket_code in (card.text or "") and "Phường Bỉm Sơn" in (card.text or "")
        assert card.buttons() == [("Nhận xử lý", f"c|{ticket_code}")]

        await stranger.press("Nhận xử lý")
        for _ in range(100):
            if api.answered_callbacks:
                break
            await asyncio.sleep(0.05)
        assert "chưa liên kết" in api.answered_callbacks[-1]["text"]
        async with sessions() as s:
            assert (
                await s.scalar(select(Ticket.state).where(Ticket.code == ticket_code)) == "assigned"
            )
        assert api.edits == []

        await lan.press("Nhận xử lý")
        for _ in range(100):
            if api.edits and len(api.answered_callbacks) == 2:
                break
            await asyncio.sleep(0.05)
        assert "đã nhận xử lý" in api.answered_callbacks[-1]["text"].lower()

        # Another linked member pressing the card then is told who has it.
        await FakeUser(api, 8003, group_id=GROUP).press("Nhận xử lý")
        for _ in range(100):
            if len(api.answered_callbacks) == 3:
                break
            await asyncio.sleep(0.05)
        told = api.answered_callbacks[-1]["text"]
        assert f"đã được {staff.display_name} nhận xử lý" in told, told
    async with sessions() as s:
        ticket = (await s.scalars(select(Ticket).where(Ticket.code == ticket_code))).one()
    assert (ticket.state, ticket.claimed_by) == ("claimed", staff.id)
    (edit,) = api.edits
    assert str(edit["message_id"]) == str(card.message_id)
    assert staff.display_name in edit["caption"]
    assert len(api.sent_to(GROUP)) == 3  # the bad code, the link, the card: nothing else
