"""Factories for workflow tests: a reported ticket with its reporter's chat, and staff."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import count
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import keys
from backend.models import (
    Conversation,
    InboundEvent,
    OutboxMessage,
    Ticket,
    Unit,
    User,
    utcnow,
)
from backend.services.accounts import hash_password
from backend.services.deadlines import Policies
from backend.services.intake import ReportDraft, submit_report
from backend.services.reporters import find_or_create_reporter
from backend.services.workflow import Actor
from handlers.events import Reply

_n = count(1)
PHOTO = {
    "sha256": "b" * 64,
    "content_type": "image/jpeg",
    "width": 640,
    "height": 480,
    "size_bytes": 5000,
}


async def make_ticket(
    session: AsyncSession,
    *,
    ward: str = "14812",
    category: str = "dumping",
    nature: str = "recurring",
    chat_id: str | None = None,
    language: str = "vi",
    now: datetime | None = None,
    photo: dict[str, Any] | None = None,
    lat: float = 20.074,
    lon: float = 105.912,
) -> Ticket:
    """A ticket reported by chat at a ward, in state received."""
    chat = chat_id or str(900_000 + next(_n))  # Telegram chat ids are numbers
    reporter_id, _ = await find_or_create_reporter(session, "telegram", chat)
    session.add(
        Conversation(
            channel="telegram",
            chat_key=chat_key("telegram", chat),
            state="idle",
            data={},
            language=language,
            reporter_id=reporter_id,
        )
    )
    submitted = await submit_report(
        session,
        ReportDraft(
            category_code=category,
            ward_code=ward,
            lat=lat,
            lon=lon,
            location_source="gps",
            description="Bãi rác tự phát",
            nature=nature,
            photos=[photo or PHOTO],
        ),
        reporter_id=reporter_id,
        channel="telegram",
        now=now or utcnow(),
        policies=Policies.load(),
    )
    ticket = await session.get(Ticket, submitted.ticket_id)
    assert ticket is not None
    return ticket


async def make_user(
    session: AsyncSession,
    role: str,
    unit_code: str | None,
    *,
    chat_id: str | None = None,
    password: str | None = None,
) -> User:
    """A staff account; with a password, one its owner already chose (no change due)."""
    unit_id = None
    if unit_code is not None:
        unit_id = await session.scalar(select(Unit.id).where(Unit.code == unit_code))
    n = next(_n)
    user = User(
        username=f"{role}{n}",
        display_name=f"{role} {n}",
        role=role,
        unit_id=unit_id,
        telegram_chat_id=chat_id,
        password_hash=hash_password(password) if password is not None else None,
    )
    session.add(user)
    await session.flush()
    return user


async def actor(session: AsyncSession, role: str, unit_code: str | None) -> Actor:
    return await Actor.of_user(session, await make_user(session, role, unit_code))


def add_waiting_updates(
    s: AsyncSession, channel: str, seconds_ago: Sequence[int], now: datetime, *, first: int = 0
) -> None:
    """Updates received that long ago and not handled: chat u{n} sent update m{n}."""
    for n, ago in enumerate(seconds_ago, start=first):
        s.add(
            InboundEvent(
                channel=channel,
                event_key=f"m{n}",
                chat_key=chat_key(channel, f"u{n}"),
                address=f"u{n}",
                body={},
                received_at=now - timedelta(seconds=ago),
            )
        )


def chat_key(channel: str, chat_id: object) -> str:
    """How a chat is stored (backend.crypto): its keyed look-up."""
    return keys().chat_key(channel, str(chat_id))


def add_sends(
    s: AsyncSession, channel: str, sends: Sequence[tuple[str, int]], now: datetime
) -> None:
    """Outbox rows to chat c1: (status, seconds since they were queued)."""
    for status, ago in sends:
        s.add(
            OutboxMessage(
                channel=channel,
                chat_key=chat_key(channel, "c1"),
                address="c1",
                payload=Reply("x").to_payload(),
                status=status,
                created_at=now - timedelta(seconds=ago),
            )
        )
