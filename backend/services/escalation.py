"""Overdue tickets and the end of the reopen window, watched by a worker in every process.

Overdue is not a state: it is `due_at < now` on a ticket that still has a step to do
(tickets with nothing pending have no due time). Each pass takes a batch under row
locks (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer at a time) and marks
what it escalates in the same transaction, so no ticket is escalated twice by two
processes, and it is escalated again only after the policy's interval. What it decides
on is read under the lock (workflow.lock_tickets): a ticket a staff member claimed a
moment before is not overdue any more, and one answered is not closed under a reopen.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from backend.models import Category, Ticket, Unit, User, Ward, utcnow
from backend.services.deadlines import Policies
from backend.services.notify import tell_staff
from backend.services.periodic import Periodic
from backend.services.units import province_unit_code
from backend.services.webhooks import OVERDUE, tickets_event
from backend.services.workflow import (
    Action,
    Actor,
    apply,
    audit_note,
    is_overdue,
    lock_tickets,
    overdue_filter,
)
from backend.timeutil import format_local

log = logging.getLogger(__name__)


def overdue_query(now: datetime, again_before: datetime, limit: int) -> Select[Any]:
    """Open tickets past their due time, not escalated since again_before, oldest first."""
    return (
        select(Ticket.id)
        .where(
            overdue_filter(now),
            or_(Ticket.escalated_at.is_(None), Ticket.escalated_at < again_before),
        )
        .order_by(Ticket.due_at)
        .limit(limit)
    )


def _locked(session: AsyncSession, query: Select[Any]) -> Select[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


async def escalate_overdue(
    session: AsyncSession, policies: Policies, *, now: datetime | None = None, limit: int = 200
) -> list[int]:
    """Escalate one batch of overdue tickets: flag, audit, tell the unit's leaders and the
    province's supervisors. Returns the ids escalated. A fixed handful of queries per
    batch, whatever its size."""
    now = now or utcnow()
    # The shortest interval any province uses; each ticket is checked against its own.
    again = min(
        [policies.default.escalate_again_hours]
        + [p.escalate_again_hours for p in policies.overrides()]
    )
    query = overdue_query(now, now - timedelta(hours=again), limit)
    ids = list(await session.scalars(_locked(session, query)))
    if not ids:
        return []
    tickets = [t for t in await lock_tickets(session, ids) if is_overdue(t, now)]
    wards = {
        w.code: w
        for w in await session.scalars(
            select(Ward).where(Ward.code.in_({t.ward_code for t in tickets}))
        )
    }
    by_cutoff: dict[datetime, list[tuple[Ticket, Ward]]] = {}
    for ticket in tickets:
        ward = wards[ticket.ward_code]
        hours = policies.for_province(ward.province_code).escalate_again_hours
        cutoff = now - timedelta(hours=hours)
        if ticket.escalated_at is None or ticket.escalated_at < cutoff:
            by_cutoff.setdefault(cutoff, []).append((ticket, ward))
    escalated: list[tuple[Ticket, Ward]] = []
    for cutoff, group in by_cutoff.items():
        # The guard in the WHERE makes a second process's update a no-op.
        claimed = set(
            await session.scalars(
                update(Ticket)
                .where(
                    Ticket.id.in_([t.id for t, _ in group]),
                    or_(Ticket.escalated_at.is_(None), Ticket.escalated_at < cutoff),
                )
                .values(escalated_at=now, escalation_count=Ticket.escalation_count + 1)
                .returning(Ticket.id)
                .execution_options(synchronize_session=False)
            )
        )
        for ticket, ward in group:
            if ticket.id in claimed:
                set_committed_value(ticket, "escalated_at", now)
                set_committed_value(ticket, "escalation_count", ticket.escalation_count + 1)
                escalated.append((ticket, ward))
    session.add_all(
        audit_note(
            ticket,
            "system",
            "escalate",
            f"due {format_local(ticket.due_at)}" if ticket.due_at else None,
            now,
        )
        for ticket, _ in escalated
    )
    await _tell_escalations(session, escalated)
    await tickets_event(session, [ticket for ticket, _ in escalated], OVERDUE, now)
    escalated.sort(key=lambda pair: pair[0].due_at or now)
    return [ticket.id for ticket, _ in escalated]


async def _tell_escalations(session: AsyncSession, escalated: list[tuple[Ticket, Ward]]) -> None:
    if not escalated:
        return
    unit_ids = {t.unit_id for t, _ in escalated}
    province_codes = {province_unit_code(w.province_code) for _, w in escalated}
    units = {
        u.id: u
        for u in await session.scalars(
            select(Unit).where(or_(Unit.id.in_(unit_ids), Unit.code.in_(province_codes)))
        )
    }
    province_unit = {u.province_code: u.id for u in units.values() if u.code in province_codes}
    categories = {c.code: c for c in await session.scalars(select(Category))}
    staff = list(
        await session.scalars(
            select(User).where(
                User.active.is_(True),
                or_(
                    (User.role == "ward_leader") & User.unit_id.in_(unit_ids),
                    (User.role == "supervisor") & User.unit_id.in_(province_unit.values()),
                ),
            )
        )
    )
    for ticket, ward in escalated:
        unit = units.get(ticket.unit_id)
        category = categories.get(ticket.category_code)
        readers = [
            u
            for u in staff
            if (u.role == "ward_leader" and u.unit_id == ticket.unit_id)
            or (u.role == "supervisor" and u.unit_id == province_unit.get(ward.province_code))
        ]
        await tell_staff(
            session,
            readers,
            "escalation.overdue",
            {
                "code": ticket.code,
                "category": category.name_vi if category else ticket.category_code,
                "ward": ward.name,
                "state_key": f"ticket_state.{ticket.state}",
                "due": format_local(ticket.due_at) if ticket.due_at else "-",
                "unit": unit.name if unit else "",
                "count": ticket.escalation_count,
            },
        )


async def close_expired(
    session: AsyncSession, policies: Policies, *, now: datetime | None = None, limit: int = 200
) -> list[int]:
    """Close answered tickets whose reopen window has passed without a reopen."""
    now = now or utcnow()
    query = (
        select(Ticket.id)
        .where(Ticket.state == "answered", Ticket.reopen_until < now)
        .order_by(Ticket.reopen_until)
        .limit(limit)
    )
    ids = list(await session.scalars(_locked(session, query)))
    locked = {t.id: t for t in await lock_tickets(session, ids)}
    closed: list[int] = []
    for ticket_id in ids:
        ticket = locked.get(ticket_id)
        if ticket is None or ticket.state != "answered":
            continue  # reopened (or closed) since the scan read it
        if ticket.reopen_until is None or ticket.reopen_until >= now:
            continue
        await apply(
            session,
            ticket,
            Action("close", note="reopen window over"),
            Actor.system(),
            policies,
            now=now,
        )
        closed.append(ticket.id)
    return closed


class DeadlineWorker(Periodic):
    """Runs the escalation and auto-close passes every `interval` seconds."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], policies: Policies, interval: float
    ) -> None:
        super().__init__("deadlines", interval, self._pass)
        self._sessions = sessions
        self._policies = policies

    async def run_once(self, now: datetime | None = None) -> tuple[int, int]:
        async with self._sessions() as session, session.begin():
            escalated = await escalate_overdue(session, self._policies, now=now)
        async with self._sessions() as session, session.begin():
            closed = await close_expired(session, self._policies, now=now)
        return len(escalated), len(closed)

    async def _pass(self) -> str | None:
        escalated, closed = await self.run_once()
        if escalated or closed:
            return f"escalated {escalated} overdue tickets, closed {closed}"
        return None
