"""Units' staff groups: linking a group with a one-time code, posting each new ticket as a
card with a claim button, and claiming from the card by linked staff only."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import (
    LinkCode,
    OutboxMessage,
    StaffCard,
    StaffGroup,
    Ticket,
    Unit,
    User,
    utcnow,
)
from backend.services.deadlines import Policies
from backend.services.notify import notice, outbox_row
from backend.services.workflow import Action, Actor, WorkflowError, apply

CODE_LIFETIME = timedelta(hours=24)


def _digest(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


async def create_link_code(
    session: AsyncSession, unit_code: str, *, now: datetime | None = None
) -> str:
    """A one-time code to link a group to a unit, valid for a day."""
    unit = await session.scalar(select(Unit).where(Unit.code == unit_code))
    if unit is None:
        raise ValueError(f"no unit {unit_code}")
    code = secrets.token_hex(4).upper()
    session.add(
        LinkCode(
            code_hash=_digest(code),
            unit_id=unit.id,
            expires_at=(now or utcnow()) + CODE_LIFETIME,
        )
    )
    return code


async def link_group(
    session: AsyncSession, channel: str, chat_id: str, code: str, *, now: datetime | None = None
) -> Unit | None:
    """Spend a link code on a group: the group now gets the unit's cards. None if the
    code is unknown, spent or expired."""
    now = now or utcnow()
    row = await session.get(LinkCode, _digest(code))
    if row is None or row.used_at is not None or row.expires_at <= now:
        return None
    row.used_at = now
    group = await session.scalar(
        select(StaffGroup).where(StaffGroup.channel == channel, StaffGroup.chat_id == chat_id)
    )
    if group is None:
        session.add(
            StaffGroup(unit_id=row.unit_id, channel=channel, chat_id=chat_id, linked_at=now)
        )
    else:
        group.unit_id, group.linked_at = row.unit_id, now
    return await session.get(Unit, row.unit_id)


@dataclass(frozen=True)
class ClaimOutcome:
    """What to tell the one who pressed: a catalogue key and its parameters."""

    key: str
    params: dict[str, str]
    claimed: bool = False


async def claim_from_card(
    session: AsyncSession,
    channel: str,
    chat_id: str,
    sender_id: str | None,
    code: str,
    policies: Policies,
) -> ClaimOutcome:
    """A press on a card's claim button: linked staff of the unit claim the ticket, and
    every card of it is edited to say who; anyone else changes nothing. Of two presses at
    once, the second waits for the first (workflow.apply locks the ticket) and is told who
    claimed it."""
    ticket = await session.scalar(select(Ticket).where(Ticket.code == code))
    if ticket is None:
        return ClaimOutcome("card.gone", {"code": code})
    user = None
    if sender_id:
        user = await session.scalar(
            select(User).where(User.telegram_chat_id == sender_id, User.active.is_(True))
        )
    if user is None:
        return ClaimOutcome("card.not_linked", {"code": code})
    try:
        actor = await Actor.of_user(session, user)
        await apply(session, ticket, Action("claim"), actor, policies)
    except WorkflowError as exc:
        if exc.code in ("out_of_scope", "forbidden"):
            return ClaimOutcome("card.not_yours", {"code": code})
        # apply() read the ticket under its lock: claimed_by is whoever claimed it.
        claimer = await session.get(User, ticket.claimed_by) if ticket.claimed_by else None
        if claimer is None:
            return ClaimOutcome("card.not_waiting", {"code": code})
        return ClaimOutcome("card.taken", {"code": code, "name": claimer.display_name})
    cards = await session.execute(
        select(StaffCard, OutboxMessage)
        .join(OutboxMessage, OutboxMessage.id == StaffCard.outbox_id)
        .where(StaffCard.ticket_id == ticket.id)
    )
    for card, sent in cards:
        if sent.sent_message_id is None:
            continue  # not delivered yet: nothing to edit
        edit = notice("card.claimed", "vi", {"code": code, "name": user.display_name})
        edit["type"] = "edit"
        edit["message_id"] = sent.sent_message_id
        edit["caption"] = bool(sent.payload.get("photo_sha256"))
        session.add(outbox_row(card.channel, card.chat_id, edit, ticket.id))
    return ClaimOutcome("card.you_claimed", {"code": code}, claimed=True)
