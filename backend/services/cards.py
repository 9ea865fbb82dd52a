"""Ticket cards in the units' staff groups: what a new ticket looks like there."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import (
    Category,
    Photo,
    StaffCard,
    StaffGroup,
    Ticket,
    Ward,
)
from backend.services.notify import notice, outbox_row
from backend.timeutil import format_local

# Callback data of the claim button: "c|<ticket code>".
CLAIM_PREFIX = "c|"


async def post_cards(session: AsyncSession, ticket: Ticket) -> int:
    """Queue the ticket's card to every group of its unit; returns how many."""
    groups = list(
        await session.scalars(select(StaffGroup).where(StaffGroup.unit_id == ticket.unit_id))
    )
    if not groups:
        return 0
    ward = await session.get(Ward, ticket.ward_code)
    category = await session.get(Category, ticket.category_code)
    photo = await session.scalar(
        select(Photo.sha256).where(Photo.ticket_id == ticket.id).order_by(Photo.id).limit(1)
    )
    payload = notice(
        "card.new",
        "vi",
        {
            "code": ticket.code,
            "category": category.name_vi if category else ticket.category_code,
            "ward": ward.name if ward else ticket.ward_code,
            "due": format_local(ticket.due_at) if ticket.due_at else "-",
            "urgency_key": f"card.urgency.{ticket.urgency}",
        },
        photo_sha256=photo,
        buttons=[[{"key": "card.claim", "data": f"{CLAIM_PREFIX}{ticket.code}"}]],
    )
    for group in groups:
        message = outbox_row(group.channel, group.chat_id, payload, ticket.id)
        session.add(message)
        await session.flush()
        session.add(
            StaffCard(
                ticket_id=ticket.id,
                outbox_id=message.id,
                channel=group.channel,
                chat_id=group.chat_id,
            )
        )
    return len(groups)
