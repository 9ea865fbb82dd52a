"""Erasure, withdrawal and retention at the service level: what staff are asked to do
after them, queued notices, merged cases, and two erasures at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import (
    Conversation,
    OutboxMessage,
    Reporter,
    ReporterIdentity,
    Ticket,
    utcnow,
)
from backend.services.notify import needs_call, tell_reporters
from backend.services.privacy import erase_identity, held_data, withdraw_consent
from backend.services.reporters import record_consent
from backend.services.retention import Periods, retention_pass
from handlers.events import Reply
from tests.factories import chat_key, make_ticket

NOW = datetime(2027, 6, 15, 9, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=400)


async def test_no_one_is_asked_to_phone_an_erased_reporter(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="7001")
        s.add(
            OutboxMessage.to(
                "telegram",
                "7001",
                Reply("x").to_payload(),
                ticket_id=ticket.id,
                status="failed",
            )
        )
        reporter_id = ticket.reporter_id
        assert reporter_id is not None
    async with sessions() as s, s.begin():
        assert await erase_identity(s, reporter_id, utcnow())
    async with sessions() as s:
        calls = list(await s.scalars(select(Ticket.code).where(needs_call())))
    assert calls == [], "the 'phone the reporter' queue still lists an erased reporter's ticket"


async def test_withdrawal_holds_the_notices_already_queued(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="7002")
        assert ticket.reporter_id is not None
        await record_consent(s, ticket.reporter_id, "vi")
        assert await tell_reporters(s, [ticket], "notify.classified", {}) == 1
    async with sessions() as s, s.begin():
        assert await withdraw_consent(s, ticket.reporter_id, utcnow())
    async with sessions() as s:
        waiting = list(
            await s.scalars(
                select(OutboxMessage.id).where(
                    OutboxMessage.chat_key == chat_key("telegram", "7002"),
                    OutboxMessage.status == "pending",
                )
            )
        )
    assert waiting == [], "a notice queued before /withdraw is still sent after it"


async def test_retention_keeps_a_reporter_whose_report_is_merged_into_an_open_case(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        case = await make_ticket(s, now=LONG_AGO, chat_id="7003")
        member = await make_ticket(s, now=LONG_AGO, chat_id="7004")
        await s.execute(update(Ticket).where(Ticket.id == case.id).values(state="handling"))
        await s.execute(
            update(Ticket).where(Ticket.id == member.id).values(state="merged", case_id=case.id)
        )
        await s.execute(update(Reporter).values(created_at=LONG_AGO))
        await s.execute(update(Conversation).values(updated_at=LONG_AGO))
    await retention_pass(sessions, Periods(12, 30, 30), NOW)
    async with sessions() as s:
        kept = set(await s.scalars(select(ReporterIdentity.reporter_id)))
    # The case is still being handled: its result is told to every member's reporter.
    assert member.reporter_id in kept, "erased before the case's result could be told"


async def test_second_erasure_of_a_reporter_loaded_before_fails(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """As POST /privacy/{id}/erase does: held_data, then erase_identity. Another erasure
    (a double click, /forgetme, the retention pass) commits in between."""
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="7005")
        reporter_id = ticket.reporter_id
        assert reporter_id is not None
    async with sessions() as late, late.begin():
        assert await held_data(late, reporter_id) is not None  # page work, before
        async with sessions() as first, first.begin():
            assert await erase_identity(first, reporter_id, utcnow())
        # Now the late request erases too: it should find it erased already.
        again = await erase_identity(late, reporter_id, utcnow())
    assert again is False
