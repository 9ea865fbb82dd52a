"""Reading tickets for their reporters: public status and the reporter's own list; and
the one rule of what the public may see of a report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Category, Ticket, Unit, Ward


def public_where(report: Any, case: Any) -> ColumnElement[bool]:
    """In SQL, the reports the public may see (case pages, Open311, partners' webhooks):
    neither the report nor the case it was joined with (`case`, outer-joined on its
    case_id) is hidden. is_public() is the same rule for one loaded ticket."""
    return and_(report.hidden_at.is_(None), or_(case.id.is_(None), case.hidden_at.is_(None)))


async def is_public(session: AsyncSession, ticket: Ticket) -> bool:
    """Whether the public may see this report (see public_where)."""
    if ticket.hidden_at is not None:
        return False
    if ticket.case_id is None:
        return True
    case = await session.get(Ticket, ticket.case_id)
    return case is not None and case.hidden_at is None


@dataclass(frozen=True, slots=True)
class TicketStatus:
    code: str
    state: str
    unit_name: str
    ward_name: str
    updated_at: datetime
    created_at: datetime
    reporter_id: int | None
    category_vi: str
    category_en: str
    description: str
    # Whether the public may see it (is_public): asked by status_by_code only.
    public: bool = True


def _status_query() -> Select[Ticket, str, str, str, str]:
    return (
        select(Ticket, Unit.name, Ward.name, Category.name_vi, Category.name_en)
        .join(Unit, Ticket.unit_id == Unit.id)
        .join(Ward, Ticket.ward_code == Ward.code)
        .join(Category, Ticket.category_code == Category.code)
    )


def _to_status(row: Row[Ticket, str, str, str, str]) -> TicketStatus:
    t, unit_name, ward_name, cat_vi, cat_en = row
    return TicketStatus(
        code=t.code,
        state=t.state,
        unit_name=unit_name,
        ward_name=ward_name,
        updated_at=t.updated_at,
        created_at=t.created_at,
        reporter_id=t.reporter_id,
        category_vi=cat_vi,
        category_en=cat_en,
        description=t.description,
    )


async def status_by_code(session: AsyncSession, code: str) -> TicketStatus | None:
    row = (await session.execute(_status_query().where(Ticket.code == code))).first()
    if row is None:
        return None
    return replace(_to_status(row), public=await is_public(session, row[0]))


async def tickets_of_reporter(
    session: AsyncSession, reporter_id: int, limit: int = 10
) -> list[TicketStatus]:
    rows = await session.execute(
        _status_query()
        .where(Ticket.reporter_id == reporter_id)
        .order_by(Ticket.created_at.desc(), Ticket.id.desc())
        .limit(limit)
    )
    return [_to_status(r) for r in rows]
