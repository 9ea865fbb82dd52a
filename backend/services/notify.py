"""Telling people through the outbox: services write notices, the chat layer words them.

A notice is an outbox payload of type "notice": a message key from the catalogues, its
parameters, the reader's language, an optional photo and buttons. The channel renders
it when it sends, so the workflow never depends on a chat platform.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from backend.models import (
    Consent,
    Conversation,
    OutboxMessage,
    ReporterIdentity,
    Ticket,
    User,
    utcnow,
)
from backend.services.tickets import is_public

# Outbox states of a notice that did not reach the chat (refused for good, or outside the
# platform's reply window): staff phone the reporter, and it becomes "called".
NEEDS_CALL = ("failed", "undeliverable")
CALLED = "called"
# Channels with no chat to send to (the web form): a notice to their reporter is
# undeliverable from the start, for staff to phone if the reporter left a number, and
# not written at all otherwise (their case page shows it).
NO_CHAT_CHANNELS = frozenset({"web"})


def notice(
    key: str,
    language: str,
    params: Mapping[str, Any] | None = None,
    *,
    photo_sha256: str | None = None,
    buttons: Sequence[Sequence[Mapping[str, Any]]] = (),
) -> dict[str, Any]:
    """The outbox payload for a catalogue message. A button is {"label" | "key", "data"}."""
    return {
        "type": "notice",
        "key": key,
        "language": language,
        "params": dict(params or {}),
        "photo_sha256": photo_sha256,
        "buttons": [[dict(b) for b in row] for row in buttons],
    }


def outbox_row(
    channel: str, chat_id: str, payload: dict[str, Any], ticket_id: int | None = None
) -> OutboxMessage:
    """A message to deliver now, through the outbox."""
    now = utcnow()
    return OutboxMessage.to(
        channel, chat_id, payload, ticket_id=ticket_id, created_at=now, next_attempt_at=now
    )


def withdrew(reporter_id: ColumnElement[int] | InstrumentedAttribute[int]) -> ColumnElement[bool]:
    """Whether the reporter consented once and has no consent in force now."""
    return exists().where(Consent.reporter_id == reporter_id) & ~exists().where(
        Consent.reporter_id == reporter_id, Consent.withdrawn_at.is_(None)
    )


async def reporter_chats(
    session: AsyncSession, reporter_ids: Iterable[int]
) -> list[tuple[int, str, str, str]]:
    """(reporter_id, channel, chat_id, language) for each reporter that came by chat."""
    ids = list(set(reporter_ids))
    if not ids:
        return []
    rows = await session.execute(
        select(
            ReporterIdentity.reporter_id,
            ReporterIdentity.channel,
            ReporterIdentity.chat_id,
            Conversation.language,
        )
        .outerjoin(
            Conversation,
            (Conversation.channel == ReporterIdentity.channel)
            & (Conversation.chat_key == ReporterIdentity.chat_key),
        )
        .where(
            ReporterIdentity.reporter_id.in_(ids),
            ReporterIdentity.chat_id.is_not(None),
            # No notices to whoever withdrew consent (and did not give it again).
            ~withdrew(ReporterIdentity.reporter_id),
        )
    )
    return [(int(r), str(ch), str(chat), lang or "vi") for r, ch, chat, lang in rows if ch]


async def tell_reporters(
    session: AsyncSession,
    tickets: Sequence[Ticket],
    key: str,
    params: Mapping[str, Any],
    *,
    photos: Sequence[str] = (),
    buttons: Sequence[Sequence[Mapping[str, Any]]] = (),
) -> int:
    """Queue a notice (and any further photos) to the reporter of each ticket.

    params may use {code}, filled in with each reporter's own ticket code. Returns the
    number of outbox rows written.
    """
    by_reporter = {t.reporter_id: t for t in tickets if t.reporter_id is not None}
    rows = 0
    callable_ = await _with_phone(session, by_reporter)
    for reporter_id, channel, chat_id, language in await reporter_chats(session, by_reporter):
        if channel in NO_CHAT_CHANNELS and reporter_id not in callable_:
            continue
        ticket = by_reporter[reporter_id]
        # Its case page, unless the public may not see it (a 404 is no link to give).
        linked = await is_public(session, ticket)
        own_buttons = [
            [{**b, "data": str(b["data"]).format(code=ticket.code)} for b in row] for row in buttons
        ]
        payloads = [
            {
                **notice(
                    key,
                    language,
                    {**params, "code": ticket.code},
                    photo_sha256=photos[0] if photos else None,
                    buttons=own_buttons,
                ),
                "linked": linked,
            },
            *(notice("notify.more_photo", language, {}, photo_sha256=p) for p in photos[1:]),
        ]
        for payload in payloads:
            row = outbox_row(channel, chat_id, payload, ticket.id)
            if channel in NO_CHAT_CHANNELS:
                row.status, row.last_error = "undeliverable", "no chat: call the reporter"
            session.add(row)
            rows += 1
    return rows


async def _with_phone(session: AsyncSession, reporter_ids: Iterable[int]) -> set[int]:
    """The reporters among these with no chat (NO_CHAT_CHANNELS) who left a phone."""
    ids = list(reporter_ids)
    if not ids:
        return set()
    found = await session.scalars(
        select(ReporterIdentity.reporter_id).where(
            ReporterIdentity.reporter_id.in_(ids),
            ReporterIdentity.channel.in_(NO_CHAT_CHANNELS),
            ReporterIdentity.phone_key.is_not(None),
        )
    )
    return set(found)


async def tell_staff(
    session: AsyncSession, users: Sequence[User], key: str, params: Mapping[str, Any]
) -> int:
    """Queue a notice to each staff member with a linked Telegram chat; returns rows."""
    rows = 0
    for user in users:
        if not user.telegram_chat_id or not user.active:
            continue
        session.add(outbox_row("telegram", user.telegram_chat_id, notice(key, "vi", params)))
        rows += 1
    return rows


def needs_call() -> ColumnElement[bool]:
    """Tickets with a notice that did not reach the reporter (for queries on Ticket)."""
    return Ticket.id.in_(
        select(OutboxMessage.ticket_id).where(OutboxMessage.status.in_(NEEDS_CALL))
    )


async def undelivered(session: AsyncSession, ticket_id: int) -> list[OutboxMessage]:
    """A ticket's notices the reporter's chat did not take (refused, or Zalo OA's reply
    window had closed): staff phone the reporter instead."""
    return list(
        await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.ticket_id == ticket_id, OutboxMessage.status.in_(NEEDS_CALL))
            .order_by(OutboxMessage.id)
        )
    )


async def mark_called(session: AsyncSession, ticket_id: int) -> int:
    """Staff phoned the reporter about the ticket's undeliverable notices; returns how many."""
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.ticket_id == ticket_id, OutboxMessage.status.in_(NEEDS_CALL))
        .values(status=CALLED)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
