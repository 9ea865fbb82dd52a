"""Every chat message that gives a reporter a code links to its public case page, on the
service's public address; without one, no link (it would lead nowhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.models import OutboxMessage, Ticket, utcnow
from backend.services.deadlines import Policies
from backend.services.units import WardIndex
from backend.services.workflow import Action, Actor, apply
from bot.dispatcher import Dispatcher
from handlers.events import Reply
from handlers.notices import render_payload
from handlers.turn import Services
from tests.chat import TELEGRAM_LIKE, Chat, texts
from tests.factories import PHOTO, actor, make_ticket
from tests.integration.test_dialogue import PHOTO as CHAT_PHOTO
from tests.integration.test_dialogue import submit, to_description, to_photos

BASE = "https://hotline.example.vn"


async def started(
    sessions: async_sessionmaker[AsyncSession], writer: AsyncEngine, base: str
) -> Dispatcher:
    async with sessions() as session:
        wards = await WardIndex.load(session)
    d = Dispatcher(writer, Services(wards=wards, case_base=base), {"telegram": TELEGRAM_LIKE})
    d.start()
    return d


@pytest.fixture
async def dispatcher(
    sessions: async_sessionmaker[AsyncSession], writer: AsyncEngine
) -> AsyncIterator[Dispatcher]:
    d = await started(sessions, writer, BASE)
    yield d
    await d.stop()


async def test_the_code_given_and_looked_up_links_to_the_case_page(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    chat = Chat(dispatcher, sessions, chat_id="9301")
    await to_description(chat)
    await chat.say("Rác đổ đầy lề đường.")
    sent = texts(await chat.press("summary|anonymous"))
    code = sent.split("Mã theo dõi: ")[1].split()[0]
    assert f"🔗 Theo dõi trên trang phản ánh: {BASE}/r/{code}" in sent
    assert f"{BASE}/r/{code}" in texts(await chat.say(f"/status {code}"))
    assert f"{code} – " in (mine := texts(await chat.say("/my"))) and f"{BASE}/r/{code}" in mine
    # Anyone may look a code up, and open its public page.
    stranger = Chat(dispatcher, sessions, chat_id="9302")
    await stranger.say("/lang en")
    assert f"{BASE}/r/{code}?lang=en" in texts(await stranger.say(f"/status {code}"))
    # A code that does not exist gets no link.
    assert "/r/" not in texts(await stranger.say("/status 38-2601-99999"))


async def test_each_notice_to_a_reporter_links_to_their_own_page(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    policies = Policies.load()
    async with sessions() as s, s.begin():
        case = await make_ticket(s, chat_id="9311")
        joined = await make_ticket(s, chat_id="9312", language="en")
        operator = await actor(s, "operator", "P38")
        staff = await actor(s, "ward_staff", "W14812")
        await apply(s, joined, Action("merge", case_code=case.code), operator, policies)
        await apply(s, case, Action("classify", competence="ward"), operator, policies)
        await apply(s, case, Action("assign"), Actor.system(), policies)
        for step in ("claim", "verify", "confirm"):
            await apply(s, case, Action(step), staff, policies)
        await apply(s, case, Action("answer", result="Đã dọn.", photos=[PHOTO]), staff, policies)
        codes = {"9311": case.code, "9312": joined.code}
    async with sessions() as s:
        notices = [
            o
            for o in await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            if o.payload.get("type") == "notice"
        ]
    keys = {(o.address, o.payload["key"]) for o in notices}
    assert ("9311", "notify.assigned") in keys and ("9312", "notify.answered") in keys
    for row in notices:
        message = render_payload(row.payload, True, BASE)
        assert isinstance(message, Reply)
        own = f"{BASE}/r/{codes[str(row.address)]}"
        if row.address == "9312":
            own += "?lang=en"
        assert own in message.text, (row.payload["key"], message.text)
        bare = render_payload(row.payload, True, "")
        assert isinstance(bare, Reply) and "/r/" not in bare.text


async def test_without_a_public_address_no_link_is_made(
    sessions: async_sessionmaker[AsyncSession], writer: AsyncEngine
) -> None:
    d = await started(sessions, writer, "")
    try:
        chat = Chat(d, sessions, chat_id="9321")
        await to_description(chat)
        await submit(chat, "Rác đổ đầy lề đường.")
        async with sessions() as s:
            said = [o.payload.get("text") or "" for o in await s.scalars(select(OutboxMessage))]
        assert any("Mã theo dõi" in text for text in said)
        assert not any("/r/" in text for text in said)
    finally:
        await d.stop()


async def test_thanks_for_a_rating_and_a_reopening_too_late_link_to_the_page(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    policies = Policies.load()
    long_ago = utcnow() - timedelta(days=30)
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="9331", now=long_ago)
        staff = await actor(s, "ward_staff", "W14812")
        system = Actor.system()
        await apply(
            s, ticket, Action("classify", competence="ward"), system, policies, now=long_ago
        )
        await apply(s, ticket, Action("assign"), system, policies, now=long_ago)
        for step in ("claim", "verify", "confirm"):
            await apply(s, ticket, Action(step), staff, policies, now=long_ago)
        answer = Action("answer", result="Đã dọn.", photos=[PHOTO])
        await apply(s, ticket, answer, staff, policies, now=long_ago)
        code = ticket.code
    chat = Chat(dispatcher, sessions, chat_id="9331")
    late = texts(await chat.press(f"t|{code}|reopen"))
    assert "hết thời hạn" in late.lower() and f"{BASE}/r/{code}" in late
    thanks = texts(await chat.press(f"t|{code}|rate|5"))
    assert "5 ⭐" in thanks and f"{BASE}/r/{code}" in thanks


async def test_offers_and_lists_that_name_a_code_link_to_its_page(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    chat = Chat(dispatcher, sessions, chat_id="9331")
    await to_description(chat)
    await chat.say("Rác đổ đầy lề đường.")
    sent = texts(await chat.press("summary|anonymous"))
    code = sent.split("Mã theo dõi: ")[1].split()[0]
    page = f"{BASE}/r/{code}"
    # A photo after sending: the offer to add it names the report, with its page.
    await chat.send("photo", media=CHAT_PHOTO)
    offer = texts(await chat.replies())
    assert "Thêm vào phản ánh" in offer and page in offer
    await chat.say("/cancel")
    # The reporter's data lists the report with its page.
    assert page in texts(await chat.say("/mydata"))
    # Another resident reporting the same thing there is offered the case, with its page.
    other = Chat(dispatcher, sessions, chat_id="9332")
    await to_photos(other)
    await other.send("photo", media=CHAT_PHOTO)
    await other.press("photos|done")
    await other.send("location", location=(20.0740, 105.9120))
    await other.press("ward|14812")
    offered = texts(await other.press("category|dumping"))
    assert await other.state() == "duplicate"
    assert page in offered
    joining = texts(await other.press(f"duplicate|{code}"))
    assert page in joining


async def test_a_hidden_case_is_no_case_to_strangers_and_no_link_to_its_reporter(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Hidden from the public, a case answers a stranger's /status as an unknown code
    does; its reporter still sees it, without a link to a page that would answer 404,
    in any message; and the notices queued while it is hidden carry no link either."""
    chat = Chat(dispatcher, sessions, chat_id="9321")
    await to_description(chat)
    await chat.say("Rác đổ đầy lề đường.")
    sent = texts(await chat.press("summary|anonymous"))
    code = sent.split("Mã theo dõi: ")[1].split()[0]
    async with sessions() as s, s.begin():
        ticket = await s.scalar(select(Ticket).where(Ticket.code == code))
        assert ticket is not None
        ticket.hidden_at = utcnow()
        operator = await actor(s, "operator", "P38")
        await apply(s, ticket, Action("classify", competence="ward"), operator, Policies.load())
        await apply(s, ticket, Action("assign"), Actor.system(), Policies.load())
    stranger = Chat(dispatcher, sessions, chat_id="9322")
    unknown = texts(await stranger.say("/status 38-2601-99999")).replace("38-2601-99999", "X")
    assert texts(await stranger.say(f"/status {code}")).replace(code, "X") == unknown
    own = texts(await chat.say(f"/status {code}"))
    assert code in own and "Gửi lúc" in own and "/r/" not in own
    mine = texts(await chat.say("/my"))
    assert code in mine and "/r/" not in mine
    # Every other message naming it too: the offer to add to it, say.
    offer = texts(await chat.say("Bãi rác vẫn còn nguyên, chưa ai dọn."))
    assert code in offer and "/r/" not in offer
    async with sessions() as s:
        notices = [
            o.payload
            for o in await s.scalars(select(OutboxMessage))
            if o.address == "9321" and o.payload.get("type") == "notice"
        ]
    assert notices
    for payload in notices:
        message = render_payload(payload, True, BASE)
        assert isinstance(message, Reply) and "/r/" not in message.text
