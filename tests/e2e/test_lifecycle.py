"""A report made in the Telegram stand-in is classified, claimed, answered with a photo,
rated, reopened and closed through the service API; the reporter's chat shows each
message the reporter should get, in order."""

from __future__ import annotations

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import OutboxMessage, Ticket
from backend.web.api import TEST_USER_HEADER
from tests.e2e.conftest import Staff, report_in_bim_son, running
from tests.factories import make_user
from tests.fakes.images import image_bytes
from tests.fakes.telegram_api import FakeTelegram, FakeUser


@pytest.mark.parametrize("mode", ["polling"])
async def test_report_to_closure_as_the_reporter_sees_it(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        operator = await make_user(s, "operator", "P38")
        staff_user = await make_user(s, "ward_staff", "W14812")
        leader_user = await make_user(s, "ward_leader", "W14812")
    user = FakeUser(api, chat_id=6001)
    async with running(chat_settings), aiohttp.ClientSession() as http:
        base = chat_settings.public_url or ""
        triage = Staff(http, base, operator.username)
        staff = Staff(http, base, staff_user.username)
        leader = Staff(http, base, leader_user.username)
        await report_in_bim_son(
            user, "Đổ rác, xả rác trái phép", "Rác chất đống cạnh chợ.", "Thường xuyên, lặp lại"
        )
        seen = len(api.sent_to(6001))
        async with sessions() as s:
            code = (await s.scalars(select(Ticket.code))).one()

        classified = await triage.act(code, "classify", urgency="normal", competence="ward")
        assert classified["state"] == "assigned"  # forwarded at once
        assigned = await user.reply()
        await staff.act(code, "claim")
        await staff.act(code, "verify")
        await staff.act(code, "confirm")
        photo = await staff.upload(image_bytes("JPEG", (80, 60), "blue"))
        answered = await staff.act(
            code, "answer", result="Đã thu dọn, lập biên bản.", photos=[photo]
        )
        assert answered["actions"] == []  # staff cannot close; the leader can
        answer = await user.reply()
        await user.press("4⭐")
        thanks = await user.reply()
        await user.press("Chưa xử lý xong")
        reopened = await user.reply()
        await staff.act(code, "claim")
        await staff.act(code, "verify")
        await staff.act(code, "confirm")
        await staff.act(code, "answer", result="Đã thu dọn lần hai.", photos=[photo])
        second = await user.reply()
        closed_ticket = await leader.act(code, "close")
        closed = await user.reply()
        messages = api.sent_to(6001)[seen:]

    assert [m.method for m in messages] == [
        "sendMessage",
        "sendPhoto",
        "sendMessage",
        "sendMessage",
        "sendPhoto",
        "sendMessage",
    ]
    assert messages == [assigned, answer, thanks, reopened, second, closed]
    assert code in (assigned.text or "") and "UBND Phường Bỉm Sơn" in (assigned.text or "")
    assert "Đã thu dọn, lập biên bản." in (answer.text or "")
    assert answer.photo is not None
    assert ("4⭐", f"t|{code}|rate|4") in answer.buttons()
    assert "4 ⭐" in (thanks.text or "")
    assert "mở lại" in (reopened.text or "")
    assert "lần hai" in (second.text or "")
    assert "kết thúc" in (closed.text or "")
    assert closed_ticket["state"] == "closed"
    assert closed_ticket["rating"] == 4
    assert closed_ticket["reopen_count"] == 1
    assert closed_ticket["reporter"].startswith("#")
    actions = [e["action"] for e in closed_ticket["timeline"]]
    assert actions == [
        "submit",
        "classify",
        "assign",
        "claim",
        "verify",
        "confirm",
        "answer",
        "rate",
        "reopen",
        "claim",
        "verify",
        "confirm",
        "answer",
        "close",
    ]


@pytest.mark.parametrize("mode", ["polling"])
async def test_the_api_is_scoped_and_needs_an_identity(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from tests.factories import make_ticket

    async with sessions() as s, s.begin():
        ticket = await make_ticket(s)
        code = ticket.code
        own = await make_user(s, "ward_staff", "W14812")
        other = await make_user(s, "ward_staff", "W00004")
        operator = await make_user(s, "operator", "P38")
        # A notice that never got through (the resident blocked the bot, say).
        s.add(
            OutboxMessage.to(
                "telegram",
                "gone",
                {"type": "notice", "key": "notify.assigned"},
                ticket_id=ticket.id,
                status="failed",
                attempts=8,
                last_error="Forbidden: bot was blocked by the user",
            )
        )
    async with running(chat_settings), aiohttp.ClientSession() as http:
        base = f"{chat_settings.public_url}/api/v1/tickets"
        async with http.get(base) as r:
            assert r.status == 401
        async with http.get(base, headers={TEST_USER_HEADER: other.username}) as r:
            assert (await r.json())["tickets"] == []
        # Another ward's ticket answers exactly like one that does not exist.
        async with http.get(f"{base}/{code}", headers={TEST_USER_HEADER: other.username}) as r:
            hidden = (r.status, await r.read())
        async with http.get(
            f"{base}/38-0000-99999", headers={TEST_USER_HEADER: other.username}
        ) as r:
            missing = (r.status, await r.read())
        assert hidden == missing and hidden[0] == 404
        async with http.get(f"{base}/{code}", headers={TEST_USER_HEADER: own.username}) as r:
            detail = await r.json()
        assert detail["actions"] == []  # not yet classified: nothing for ward staff
        async with http.post(
            f"{base}/{code}/actions",
            json={"action": "reject", "reason": "because"},
            headers={TEST_USER_HEADER: operator.username},
        ) as r:
            assert r.status == 422
            assert (await r.json())["error"] == "reason_required"
        async with http.post(
            f"{base}/{code}/actions",
            json={"action": "claim"},
            headers={TEST_USER_HEADER: own.username},
        ) as r:
            assert r.status == 409
        async with http.get(base, headers={TEST_USER_HEADER: operator.username}) as r:
            listed = (await r.json())["tickets"]
        undelivered = f"{base}?undelivered=1"
        async with http.get(undelivered, headers={TEST_USER_HEADER: operator.username}) as r:
            follow_up = (await r.json())["tickets"]
    assert [t["code"] for t in listed] == [code]
    assert [t["code"] for t in follow_up] == [code]
    assert detail["deliveries"][-1]["status"] == "failed"
    assert "chat_id" not in detail["deliveries"][-1]
    assert "description" in detail and "reporter" in detail
    assert detail["reporter"].startswith("#")
