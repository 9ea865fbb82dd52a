"""A reporter's rights over their personal data (Law 91/2025/QH15): see what is held,
have the identity erased, withdraw consent.

Erasing keeps the reports: the ward still has a legal duty to handle them. They keep the
pseudonym alone, and no notice can reach the person any more. The consent records stay
as proof, under the pseudonym, with the date of the erasure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Delete, Select, case, delete, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import (
    AuditEvent,
    Consent,
    Conversation,
    InboundEvent,
    OutboxMessage,
    Reporter,
    ReporterIdentity,
    Ticket,
    Unit,
    User,
)
from backend.services.notify import withdrew

# The audit action of a staff member unsealing a reporter's identity.
UNSEAL = "show_identity"
# Who may see who unsealed an identity (others see only the role that did).
UNSEAL_READERS = frozenset({"admin", "supervisor"})
# Outbox rows to an erased chat that had not gone yet: never sent.
ERASED = "erased"
# Notices queued for a reporter when they withdrew consent: never sent.
WITHHELD = "withheld"
# Outbox statuses a send's outcome must not overwrite.
CANCELLED = (ERASED, WITHHELD)


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    granted_at: datetime
    text_version: str
    withdrawn_at: datetime | None


@dataclass(frozen=True, slots=True)
class HeldReport:
    code: str
    state: str
    unit: str


@dataclass(frozen=True, slots=True)
class Unsealing:
    """A staff member saw the identity: when, in which role and unit (never who)."""

    at: datetime
    role: str
    unit: str | None


@dataclass(frozen=True, slots=True)
class HeldData:
    """What the service holds about one reporter, as /mydata tells it."""

    pseudonym: str
    channel: str | None
    phone: str | None  # masked
    consents: Sequence[ConsentRecord]
    reports: Sequence[HeldReport]
    units: Sequence[str]
    unsealings: Sequence[Unsealing]
    erased_at: datetime | None


def mask_phone(phone: str | None) -> str | None:
    """All digits but the last 3 hidden: +84912345678 → •••••••••678."""
    if not phone:
        return None
    digits = [c for c in phone if c.isdigit()]
    return "•" * max(0, len(digits) - 3) + "".join(digits[-3:])


async def held_data(
    session: AsyncSession,
    reporter_id: int,
    narrow: Callable[[Select[Any]], Select[Any]] | None = None,
) -> HeldData | None:
    """What is held about a reporter; `narrow` limits the reports (and what follows from
    them: units, unsealings) to those a staff member may see."""
    reporter = await session.get(Reporter, reporter_id)
    if reporter is None:
        return None
    identity = await session.get(ReporterIdentity, reporter_id)
    consents = [
        ConsentRecord(c.granted_at, c.text_version, c.withdrawn_at)
        for c in await session.scalars(
            select(Consent).where(Consent.reporter_id == reporter_id).order_by(Consent.id)
        )
    ]
    query: Select[Any] = select(Ticket).where(Ticket.reporter_id == reporter_id)
    if narrow is not None:
        query = narrow(query)
    rows = (
        await session.execute(
            query.join(Unit, Unit.id == Ticket.unit_id)
            .with_only_columns(Ticket.id, Ticket.code, Ticket.state, Unit.name)
            .order_by(Ticket.created_at, Ticket.id)
        )
    ).all()
    reports = [HeldReport(code, state, unit) for _, code, state, unit in rows]
    ticket_ids = [ticket_id for ticket_id, _, _, _ in rows]
    units = list(dict.fromkeys(r.unit for r in reports))
    unsealings: list[Unsealing] = []
    if ticket_ids:
        # Staff who acted on the reports: their units processed them too (a transfer
        # leaves the earlier unit in the trail).
        acted = await session.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.created_at)
            .where(AuditEvent.ticket_id.in_(ticket_ids), AuditEvent.actor.like("user:%"))
            .order_by(AuditEvent.created_at, AuditEvent.id)
        )
        staff = acted.all()
        user_ids = {int(actor.removeprefix("user:")) for _, actor, _ in staff}
        people = {
            uid: (role, unit)
            for uid, role, unit in (
                await session.execute(
                    select(User.id, User.role, Unit.name)
                    .outerjoin(Unit, Unit.id == User.unit_id)
                    .where(User.id.in_(user_ids))
                )
            ).all()
        }
        for action, actor, at in staff:
            role, unit = people.get(int(actor.removeprefix("user:")), ("?", None))
            if unit is not None and unit not in units:
                units.append(unit)
            if action == UNSEAL:
                unsealings.append(Unsealing(at, role, unit))
    return HeldData(
        pseudonym=reporter.pseudonym,
        channel=identity.channel if identity is not None else None,
        phone=mask_phone(identity.phone if identity is not None else None),
        consents=consents,
        reports=reports,
        units=units,
        unsealings=unsealings,
        erased_at=reporter.erased_at,
    )


async def withdraw_consent(session: AsyncSession, reporter_id: int, now: datetime) -> bool:
    """Record the withdrawal of every consent in force, and hold the notices queued for
    the reporter's chat (never sent); returns whether there was a consent in force."""
    result = await session.execute(
        update(Consent)
        .where(Consent.reporter_id == reporter_id, Consent.withdrawn_at.is_(None))
        .values(withdrawn_at=now)
    )
    identity = await session.get(ReporterIdentity, reporter_id)
    if identity is not None and identity.channel and identity.chat_key:
        await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.channel == identity.channel,
                OutboxMessage.chat_key == identity.chat_key,
                OutboxMessage.status == "pending",
                OutboxMessage.ticket_id.is_not(None),
            )
            .values(status=WITHHELD)
            .execution_options(synchronize_session=False)
        )
    return bool(getattr(result, "rowcount", 0))


async def has_withdrawn(session: AsyncSession, reporter_id: int) -> bool:
    """Whether the reporter consented once and has no consent in force now."""
    return bool(await session.scalar(select(withdrew(literal(reporter_id)))))


async def erase_identity(session: AsyncSession, reporter_id: int, now: datetime) -> bool:
    """Erase who the reporter is; returns False when it was erased already.

    Gone: the chat id, phone, name and usernames (the sealed identity), the chat's
    conversation state, its stored updates, and the outbox texts addressed to it (sent
    ones emptied, waiting ones never sent). Kept: the reporter's pseudonym with the
    date of the erasure, the consent records, and the reports.
    """
    reporter = await session.get(Reporter, reporter_id, with_for_update=True)
    if reporter is None or reporter.erased_at is not None:
        return False
    identity = await session.get(ReporterIdentity, reporter_id)
    if identity is not None:
        if identity.channel is not None and identity.chat_key is not None:
            await erase_chat(session, identity.channel, identity.chat_key)
        await session.delete(identity)
    reporter.erased_at = now
    await session.flush()
    return True


async def erase_chat(session: AsyncSession, channel: str, chat_key: str) -> None:
    """What the service keeps of one chat (by its look-up, see backend.crypto): its
    state, its updates and its messages."""
    await session.execute(
        delete(Conversation).where(
            Conversation.channel == channel, Conversation.chat_key == chat_key
        )
    )
    await session.execute(forget_handled(channel, chat_key))
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.channel == channel, OutboxMessage.chat_key == chat_key)
        .values(
            chat_key="",
            address=None,
            payload={},
            last_error=None,
            # Waiting ones are never sent, and no one is asked to phone about the ones
            # that failed; sent ones stay sent.
            status=case(
                (OutboxMessage.status.in_(("pending", "undeliverable", "failed")), ERASED),
                else_=OutboxMessage.status,
            ),
        )
        .execution_options(synchronize_session=False)
    )


def forget_handled(
    channel: str, chat_key: str, *, through: int | None = None, until: datetime | None = None
) -> Delete:
    """The chat's stored updates that were handled: all, or those up to the update
    `through` (an id), or else those received up to `until`. Later ones, and those still
    waiting, are the person writing again: a new contact."""
    query = delete(InboundEvent).where(
        InboundEvent.channel == channel,
        InboundEvent.chat_key == chat_key,
        InboundEvent.handled_at.is_not(None),
    )
    if through is not None:
        return query.where(InboundEvent.id <= through)
    if until is not None:
        return query.where(InboundEvent.received_at <= until)
    return query
