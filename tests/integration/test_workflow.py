"""The QĐ 174 lifecycle through the workflow service, on a real database: states, audit
trail, due times, notices to the reporter, merge, transfer, extension, reopen,
escalation and the automatic close."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import AuditEvent, OutboxMessage, Photo, Ticket, Unit
from backend.services.deadlines import Policies
from backend.services.escalation import close_expired, escalate_overdue
from backend.services.workflow import (
    _EFFECTS,
    TABLE,
    Action,
    Actor,
    WorkflowError,
    allowed_actions,
    apply,
)
from backend.timeutil import VN_TZ
from handlers.events import Reply
from handlers.notices import render_payload
from tests.factories import PHOTO, actor, make_ticket, make_user

POLICIES = Policies.load()
# Monday 30/11/2026, 09:00 in Hà Nội time.
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=VN_TZ)


def rendered(payload: dict[str, Any]) -> Reply:
    message = render_payload(payload)
    assert isinstance(message, Reply)
    return message


async def notices(session: AsyncSession, ticket: Ticket) -> list[dict[str, Any]]:
    rows = await session.scalars(
        select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id).order_by(OutboxMessage.id)
    )
    return [r.payload for r in rows]


async def audit(session: AsyncSession, ticket: Ticket) -> list[tuple[str, str | None, str | None]]:
    rows = await session.execute(
        select(AuditEvent.action, AuditEvent.from_state, AuditEvent.to_state)
        .where(AuditEvent.ticket_id == ticket.id)
        .order_by(AuditEvent.id)
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_every_transition_has_an_effect() -> None:
    assert set(_EFFECTS) == set(TABLE)


async def test_the_whole_procedure(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, now=T0)
        operator = await actor(s, "operator", "P38")
        staff = await actor(s, "ward_staff", "W14812")
        leader = await actor(s, "ward_leader", "W14812")
        policy = POLICIES.default
        assert ticket.due_at == T0 + timedelta(hours=6)  # normal: 6 h to classify

        await apply(s, ticket, Action("classify", competence="ward"), operator, POLICIES, now=T0)
        assert (ticket.state, ticket.due_at) == ("classified", T0 + timedelta(minutes=15))
        await apply(s, ticket, Action("assign"), Actor.system(), POLICIES, now=T0)
        assert (ticket.state, ticket.due_at) == ("assigned", policy.claim_due(T0))
        claimed = T0 + timedelta(hours=1)
        await apply(s, ticket, Action("claim"), staff, POLICIES, now=claimed)
        assert ticket.due_at == policy.answer_due(claimed, "normal", False)
        assert ticket.due_at == datetime(2026, 12, 3, 10, 0, tzinfo=VN_TZ)
        await apply(s, ticket, Action("verify"), staff, POLICIES, now=claimed)
        await apply(s, ticket, Action("confirm"), staff, POLICIES, now=claimed)
        answered = claimed + timedelta(hours=3)
        await apply(
            s,
            ticket,
            Action("answer", result="Đã thu gom 2 tấn rác.", photos=[PHOTO]),
            staff,
            POLICIES,
            now=answered,
        )
        assert ticket.state == "answered"
        assert ticket.due_at is None
        assert ticket.reopen_until == answered + timedelta(days=7)
        await apply(s, ticket, Action("close"), leader, POLICIES, now=answered)
        assert ticket.state == "closed"

        assert await audit(s, ticket) == [
            ("submit", None, "received"),
            ("classify", "received", "classified"),
            ("assign", "classified", "assigned"),
            ("claim", "assigned", "claimed"),
            ("verify", "claimed", "verifying"),
            ("confirm", "verifying", "handling"),
            ("answer", "handling", "answered"),
            ("close", "answered", "closed"),
        ]
        result_photos = await s.scalar(
            select(func.count()).select_from(Photo).where(Photo.kind == "result")
        )
        assert result_photos == 1
        sent = await notices(s, ticket)
    assert [p["key"] for p in sent] == ["notify.assigned", "notify.answered", "notify.closed"]
    assigned, answer, _ = (rendered(p) for p in sent)
    assert "UBND Phường Bỉm Sơn" in assigned.text and ticket.code in assigned.text
    assert "Đã thu gom 2 tấn rác." in answer.text
    assert answer.photo_sha256 == PHOTO["sha256"]
    assert [b.data for b in answer.buttons[0]] == [f"t|{ticket.code}|rate|{n}" for n in range(1, 6)]
    assert answer.buttons[1][0].label == "Chưa xử lý xong"


@pytest.mark.parametrize(
    ("role", "action", "problem"),
    [
        ("ward_staff", Action("classify", competence="ward"), "forbidden"),
        ("operator", Action("classify"), "competence_required"),
        ("operator", Action("classify", competence=""), "competence_required"),
        ("operator", Action("claim"), "wrong_state"),
        ("operator", Action("reject"), "reason_required"),
        ("operator", Action("reject", reason="looks odd"), "reason_required"),
        ("operator", Action("merge"), "case_required"),
        ("operator", Action("fly"), "unknown_action"),
    ],
)
async def test_refused_actions_change_nothing(
    sessions: async_sessionmaker[AsyncSession], role: str, action: Action, problem: str
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s)
        who = await actor(s, role, "P38" if role == "operator" else "W14812")
        before = await audit(s, ticket)
        with pytest.raises(WorkflowError) as refused:
            await apply(s, ticket, action, who, POLICIES)
        assert refused.value.code == problem
        assert ticket.state == "received"
        assert await audit(s, ticket) == before


async def test_staff_of_another_ward_are_out_of_scope(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s)
        operator = await actor(s, "operator", "P38")
        await apply(s, ticket, Action("classify", competence="ward"), operator, POLICIES)
        await apply(s, ticket, Action("assign"), Actor.system(), POLICIES)
        other_ward = await s.scalar(
            select(Unit.code).where(Unit.code != "W14812", Unit.code.like("W%"))
        )
        stranger = await actor(s, "ward_staff", other_ward)
        with pytest.raises(WorkflowError, match="out_of_scope"):
            await apply(s, ticket, Action("claim"), stranger, POLICIES)
        far_operator = await actor(s, "operator", "P01")
        with pytest.raises(WorkflowError, match="out_of_scope"):
            await apply(
                s,
                ticket,
                Action("transfer", reason="x", competence="province"),
                far_operator,
                POLICIES,
            )
        # The answer needs photos and a result text.
        staff = await actor(s, "ward_staff", "W14812")
        await apply(s, ticket, Action("claim"), staff, POLICIES)
        await apply(s, ticket, Action("verify"), staff, POLICIES)
        await apply(s, ticket, Action("confirm"), staff, POLICIES)
        with pytest.raises(WorkflowError, match="photos_required"):
            await apply(s, ticket, Action("answer", result="ok"), staff, POLICIES)
        with pytest.raises(WorkflowError, match="result_required"):
            await apply(s, ticket, Action("answer", photos=[PHOTO]), staff, POLICIES)
        assert allowed_actions(ticket, "ward_staff") == ["answer", "mark_complex"]


async def test_transfer_extend_and_reject_tell_the_reporter(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, now=T0)
        operator = await actor(s, "operator", "P38")
        supervisor = await actor(s, "supervisor", "P38")
        await apply(
            s,
            ticket,
            Action("classify", urgency="urgent", competence="ward"),
            operator,
            POLICIES,
            now=T0,
        )
        assert ticket.urgency == "urgent"
        await apply(s, ticket, Action("assign"), Actor.system(), POLICIES, now=T0)
        await apply(
            s,
            ticket,
            Action("transfer", reason="Cơ sở do tỉnh cấp phép", competence="province"),
            operator,
            POLICIES,
            now=T0,
        )
        unit = await s.get(Unit, ticket.unit_id)
        assert unit is not None and unit.code == "P38"
        assert ticket.state == "transferred"  # waiting for the new unit to claim it
        with pytest.raises(WorkflowError, match="due_required"):
            await apply(
                s,
                ticket,
                Action("extend", reason="r", due=T0 - timedelta(days=1)),
                supervisor,
                POLICIES,
                now=T0,
            )
        new_due = T0 + timedelta(days=10)
        await apply(
            s,
            ticket,
            Action("extend", reason="Chờ kết quả quan trắc", due=new_due),
            supervisor,
            POLICIES,
            now=T0,
        )
        assert ticket.due_at == new_due

        other = await make_ticket(s, now=T0, language="en")
        await apply(s, other, Action("reject", reason="spam"), operator, POLICIES, now=T0)
        assert (other.state, other.rejection_reason, other.due_at) == ("rejected", "spam", None)
        texts = [rendered(p).text for p in await notices(s, ticket)]
        rejected = [rendered(p).text for p in await notices(s, other)]
    assert "Sở Nông nghiệp và Môi trường" in texts[1] and "tỉnh cấp phép" in texts[1]
    assert "Chờ kết quả quan trắc" in texts[2] and "09:00 10/12/2026" in texts[2]
    assert rejected == [rejected[0]] and "spam" in rejected[0] and "not accepted" in rejected[0]


async def test_a_case_in_another_province_is_no_case_to_merge_into(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        report = await make_ticket(s, now=T0)  # Phường Bỉm Sơn, Thanh Hóa (38)
        hanoi = await make_ticket(s, ward="00004", now=T0)  # Hà Nội (01)
        member = await make_ticket(s, ward="00004", now=T0)
        operator = await actor(s, "operator", "P38")
        await apply(s, member, Action("merge", case_code=hanoi.code), Actor.system(), POLICIES)
        refusals = []
        for code in (hanoi.code, member.code, "01-0000-99999"):
            with pytest.raises(WorkflowError) as refused:
                await apply(s, report, Action("merge", case_code=code), operator, POLICIES)
            refusals.append((refused.value.code, str(refused.value).replace(code, "CODE")))
        assert (report.state, report.case_id) == ("received", None)
    # Exactly as a code that does not exist: nothing tells the operator it is there.
    assert refusals == [("case_required", "case_required: no other ticket CODE")] * 3


async def test_a_unit_in_another_province_is_no_unit_to_transfer_to(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, now=T0)  # Phường Bỉm Sơn, Thanh Hóa (38)
        await apply(
            s, ticket, Action("classify", competence="ward"), Actor.system(), POLICIES, now=T0
        )
        operator = await actor(s, "operator", "P38")
        refusals = []
        for unit in ("W00004", "P01", "NO-SUCH-UNIT"):  # Hà Nội's ward and department
            with pytest.raises(WorkflowError) as refused:
                await apply(
                    s, ticket, Action("transfer", reason="x", unit_code=unit), operator, POLICIES
                )
            refusals.append((refused.value.code, str(refused.value).replace(unit, "UNIT")))
        assert refusals == [("unit_required", "unit_required: no unit UNIT")] * 3
        # Within the province it goes; an admin reaches across.
        moved = Action("transfer", reason="x", unit_code="P38")
        await apply(s, ticket, moved, operator, POLICIES, now=T0)
        assert (await s.get(Unit, ticket.unit_id)).code == "P38"  # type: ignore[union-attr]
        admin = await actor(s, "admin", None)
        to_hanoi = Action("transfer", reason="x", unit_code="W00004")
        await apply(s, ticket, to_hanoi, admin, POLICIES, now=T0)
        assert (await s.get(Unit, ticket.unit_id)).code == "W00004"  # type: ignore[union-attr]


async def test_a_merged_report_hears_the_case_result(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        case = await make_ticket(s, now=T0)
        duplicate = await make_ticket(s, now=T0)
        operator = await actor(s, "operator", "P38")
        staff = await actor(s, "ward_staff", "W14812")
        await apply(s, duplicate, Action("merge", case_code=case.code), operator, POLICIES, now=T0)
        assert (duplicate.state, duplicate.case_id) == ("merged", case.id)
        for step in ("classify", "assign"):
            await apply(s, case, Action(step, competence="ward"), operator, POLICIES, now=T0)
        for step in ("claim", "verify", "confirm"):
            await apply(s, case, Action(step), staff, POLICIES, now=T0)
        await apply(
            s,
            case,
            Action("answer", result="Đã xử lý", photos=[PHOTO, {**PHOTO, "sha256": "c" * 64}]),
            staff,
            POLICIES,
            now=T0,
        )
        to_case = [p["key"] for p in await notices(s, case)]
        to_duplicate = await notices(s, duplicate)
    assert to_case == ["notify.assigned", "notify.answered", "notify.more_photo"]
    assert [p["key"] for p in to_duplicate] == [
        "notify.assigned",
        "notify.answered",
        "notify.more_photo",
    ]
    # Each reporter is told about their own code.
    assert duplicate.code in rendered(to_duplicate[1]).text
    assert rendered(to_duplicate[1]).buttons[0][0].data == f"t|{duplicate.code}|rate|1"


async def test_reopen_within_the_window_then_close_after_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, now=T0)
        reporter = Actor(role="reporter", reporter_id=ticket.reporter_id)
        operator = await actor(s, "operator", "P38")
        staff = await actor(s, "ward_staff", "W14812")

        async def answer(at: datetime) -> None:
            for step in ("claim", "verify", "confirm"):
                await apply(s, ticket, Action(step), staff, POLICIES, now=at)
            await apply(
                s, ticket, Action("answer", result="Xong", photos=[PHOTO]), staff, POLICIES, now=at
            )

        for step in ("classify", "assign"):
            await apply(s, ticket, Action(step, competence="ward"), operator, POLICIES, now=T0)
        await answer(T0)
        later = T0 + timedelta(days=2)
        await apply(s, ticket, Action("reopen"), reporter, POLICIES, now=later)
        assert (ticket.state, ticket.reopen_count) == ("reopened", 1)
        assert ticket.due_at == POLICIES.default.claim_due(later)
        await answer(later)
        # Too late to reopen: the window is 7 days.
        with pytest.raises(WorkflowError, match="reopen_window_over"):
            await apply(
                s, ticket, Action("reopen"), reporter, POLICIES, now=later + timedelta(days=8)
            )
        assert await close_expired(s, POLICIES, now=later + timedelta(days=6)) == []
        assert await close_expired(s, POLICIES, now=later + timedelta(days=8)) == [ticket.id]
        assert ticket.state == "closed"
        keys = [p["key"] for p in await notices(s, ticket)]
    assert keys == [
        "notify.assigned",
        "notify.answered",
        "notify.reopened",
        "notify.answered",
        "notify.closed",
    ]


async def test_overdue_tickets_are_escalated_once_per_interval(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, now=T0)
        leader = await make_user(s, "ward_leader", "W14812", chat_id="700")
        supervisor = await make_user(s, "supervisor", "P38", chat_id="701")
        await make_user(s, "supervisor", "P01", chat_id="702")  # another province
        await make_user(s, "ward_leader", "W14812")  # no Telegram link: nothing to send
        ticket_id = ticket.id
    late = T0 + timedelta(hours=7)  # classification was due at T0 + 6 h
    async with sessions() as s, s.begin():
        assert await escalate_overdue(s, POLICIES, now=T0 + timedelta(hours=5)) == []
        assert await escalate_overdue(s, POLICIES, now=late) == [ticket_id]
    async with sessions() as s, s.begin():
        assert await escalate_overdue(s, POLICIES, now=late + timedelta(hours=1)) == []
        assert await escalate_overdue(s, POLICIES, now=late + timedelta(hours=5)) == [ticket_id]
    async with sessions() as s:
        found = await s.get(Ticket, ticket_id)
        assert found is not None and found.escalation_count == 2
        ticket = found
        assert ticket.state == "received"  # overdue is a flag, not a state
        rows = list(await s.scalars(select(OutboxMessage).where(OutboxMessage.ticket_id.is_(None))))
    assert sorted(str(r.address) for r in rows) == ["700", "700", "701", "701"]
    text = rendered(rows[0].payload).text
    assert ticket.code in text and "Đã tiếp nhận" in text and "Phường Bỉm Sơn" in text
    assert leader.id != supervisor.id


async def test_two_workers_never_escalate_the_same_ticket(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ids = sorted([(await make_ticket(s, now=T0)).id for _ in range(12)])
    late = T0 + timedelta(hours=8)

    async def worker() -> list[int]:
        for _ in range(50):
            try:
                async with sessions() as s, s.begin():
                    return await escalate_overdue(s, POLICIES, now=late, limit=5)
            except Exception as exc:  # SQLite: the other worker holds the write lock
                if "locked" not in str(exc):
                    raise
                await asyncio.sleep(0.01)
        raise AssertionError("worker never got the lock")

    done: list[int] = []
    for _ in range(3):
        first, second = await asyncio.gather(worker(), worker())
        assert not set(first) & set(second)
        done += first + second
    assert sorted(done) == ids
    async with sessions() as s:
        events = await s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "escalate")
        )
    assert events == 12


async def test_no_pollution_found_is_answered_with_a_reason_not_a_photo(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        found, not_found = await make_ticket(s, now=T0), await make_ticket(s, now=T0)
        operator = await actor(s, "operator", "P38")
        staff = await actor(s, "ward_staff", "W14812")
        for ticket, verdict in ((found, "confirm"), (not_found, "not_confirmed")):
            await apply(s, ticket, Action("classify", competence="ward"), operator, POLICIES)
            await apply(s, ticket, Action("assign"), operator, POLICIES)
            for step in ("claim", "verify"):
                await apply(s, ticket, Action(step), staff, POLICIES)
            await apply(s, ticket, Action(verdict, reason="Không thấy rác"), staff, POLICIES)
        answer = Action("answer", result="Đoàn kiểm tra không thấy dấu hiệu ô nhiễm.")
        with pytest.raises(WorkflowError) as refused:
            await apply(s, found, answer, staff, POLICIES)
        assert refused.value.code == "photos_required"
        await apply(s, not_found, answer, staff, POLICIES)
        assert not_found.state == "answered" and not_found.answered_due_at is not None
