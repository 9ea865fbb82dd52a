"""What a reporter adds to a report after sending it (bổ sung): photos and words, stored
on the ticket (photos of kind "addition", the words in the audit trail) and told to the
staff who handle it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from backend.models import Category, Ticket, Unit, User, Ward
from backend.services.intake import photo_rows
from backend.services.notify import tell_staff
from backend.services.units import province_unit_code
from backend.services.workflow import FINAL_STATES, Actor, audit_note, find_ticket
from backend.timeutil import local

ADDED = "added_info"
MAX_TEXT = 2000
# The reports offered, newest first.
MAX_OFFERED = 5


@dataclass(frozen=True, slots=True)
class OpenReport:
    code: str
    category_code: str
    created_at: datetime


async def open_reports(session: AsyncSession, reporter_id: int) -> list[OpenReport]:
    """The reporter's reports that are still being handled, newest first: their own, and
    the case each of their merged reports joined."""
    case = aliased(Ticket)
    own = select(Ticket.code, Ticket.category_code, Ticket.created_at).where(
        Ticket.reporter_id == reporter_id, Ticket.state.not_in(FINAL_STATES)
    )
    joined = (
        select(case.code, case.category_code, case.created_at)
        .join(Ticket, Ticket.case_id == case.id)
        .where(
            Ticket.reporter_id == reporter_id,
            Ticket.state == "merged",
            case.state.not_in(FINAL_STATES),
        )
    )
    found: dict[str, OpenReport] = {}
    for query in (own, joined):
        for code, category, created in await session.execute(query):
            found[code] = OpenReport(code, category, created)
    newest = sorted(found.values(), key=lambda r: r.created_at, reverse=True)
    return newest[:MAX_OFFERED]


@dataclass(frozen=True, slots=True)
class Added:
    ticket: Ticket
    # Whether a staff member was sent a notice (else they see it on the ticket's page).
    told: bool


async def add_to_report(
    session: AsyncSession,
    code: str,
    reporter_id: int,
    photos: Sequence[dict[str, Any]],
    text: str | None,
    now: datetime,
) -> Added | None:
    """Store the addition on the report with this code, if it is one of the reporter's
    open reports (checked again under the ticket's lock), and tell its staff. None when
    it is not (closed or merged meanwhile, or not theirs)."""
    if code not in {r.code for r in await open_reports(session, reporter_id)}:
        return None
    ticket = await find_ticket(session, code, lock=True)
    if ticket is None or ticket.state in FINAL_STATES:
        return None
    session.add_all(photo_rows(ticket.id, photos, "addition", now))
    actor = Actor(role="reporter", reporter_id=reporter_id)
    session.add(audit_note(ticket, actor.label, ADDED, text, now))
    ticket.updated_at = now
    told = await _tell_handlers(session, ticket, len(photos), text)
    return Added(ticket, told > 0)


# Who handles a ticket in each kind of unit, when nobody has claimed it.
HANDLERS_OF_UNIT = {
    "ward_committee": ("ward_staff", "ward_leader"),
    "province_department": ("supervisor",),
    "police": ("police",),
    "ministry": ("supervisor",),
}


async def _tell_handlers(
    session: AsyncSession, ticket: Ticket, photos: int, text: str | None
) -> int:
    """The staff member who claimed the ticket; else, before it is forwarded, the
    province's operators; else the handlers of its unit. The notices queued."""
    query = select(User).where(User.active.is_(True))
    if ticket.claimed_by is not None:
        query = query.where(User.id == ticket.claimed_by)
    elif ticket.state in ("received", "classified"):
        ward = await session.get(Ward, ticket.ward_code)
        province = province_unit_code(ward.province_code) if ward else ""
        query = query.join(Unit, Unit.id == User.unit_id).where(
            User.role == "operator", Unit.code == province
        )
    else:
        unit = await session.get(Unit, ticket.unit_id)
        roles = HANDLERS_OF_UNIT.get(unit.kind if unit else "", ())
        query = query.where(User.unit_id == ticket.unit_id, User.role.in_(roles))
    users = list(await session.scalars(query))
    category = await session.get(Category, ticket.category_code)
    return await tell_staff(
        session,
        users,
        "addition.staff",
        {
            "code": ticket.code,
            "category": category.name_vi if category else ticket.category_code,
            "photos": photos,
            "text": (text or "-")[:300],
            "date": local(ticket.created_at).strftime("%d/%m/%Y"),
        },
    )
