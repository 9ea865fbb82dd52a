"""Retention: what is kept, for how long, and what goes after (the README's table says the
same). One process does it at a time (a duty, see Presence), every RETENTION interval.

- A reporter whose reports are all finished, and who has done nothing for
  `retention_identity_months`, is pseudonymised as /forgetme does.
- The texts of delivered messages are erased after `retention_outbox_days`.
- The ids of handled updates are dropped after `retention_processed_days` (platforms stop
  redelivering within a day).
- Partners' webhook deliveries, once delivered or failed, go `retention_webhook_days`
  after their event was queued.
- Expired login sessions and expired group link codes are removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CursorResult,
    String,
    and_,
    cast,
    delete,
    exists,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from backend.config import Settings
from backend.models import (
    AuditEvent,
    Conversation,
    InboundEvent,
    LinkCode,
    OutboxMessage,
    ProcessedUpdate,
    Reporter,
    ReporterIdentity,
    Ticket,
    WebhookDelivery,
    WebSession,
    utcnow,
)
from backend.services.limits import sweep as sweep_limits
from backend.services.periodic import Periodic
from backend.services.presence import Presence
from backend.services.privacy import erase_identity

DUTY = "retention"
# States in which a report needs nothing more from its reporter.
FINISHED = ("closed", "rejected", "merged")
# Reporters pseudonymised in one transaction.
BATCH = 200


@dataclass(frozen=True, slots=True)
class Periods:
    identity_months: int
    outbox_days: int
    processed_days: int
    webhook_days: int = 30

    @classmethod
    def of(cls, settings: Settings) -> Periods:
        return cls(
            settings.retention_identity_months,
            settings.retention_outbox_days,
            settings.retention_processed_days,
            settings.retention_webhook_days,
        )


def _months_before(now: datetime, months: int) -> datetime:
    """The same moment `months` calendar months earlier (the day clipped to the month's)."""
    year, month = divmod(now.year * 12 + now.month - 1 - months, 12)
    month += 1
    for day in (now.day, 30, 29, 28):
        try:
            return now.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("every month has a 28th")


async def idle_reporters(
    session: AsyncSession, cutoff: datetime, limit: int, only: int | None = None
) -> list[int]:
    """Reporters with an identity, whose reports are all finished, and with no sign of
    life since cutoff: no report made, no step of their conversation, no update stored,
    no action of theirs on a report (a rating, a reopening)."""
    ri = ReporterIdentity
    case = aliased(Ticket)
    actor = literal("reporter:") + cast(ri.reporter_id, String)
    same_chat = (ri.channel.is_not(None), ri.chat_key.is_not(None))
    query = (
        select(ri.reporter_id)
        .join(Reporter, Reporter.id == ri.reporter_id)
        .where(
            Reporter.erased_at.is_(None),
            Reporter.created_at < cutoff,
            ~exists().where(
                Ticket.reporter_id == ri.reporter_id,
                or_(
                    Ticket.state.not_in(FINISHED),
                    Ticket.created_at >= cutoff,
                    # Merged into a case still open: its outcome is told to them too.
                    and_(
                        Ticket.state == "merged",
                        exists().where(case.id == Ticket.case_id, case.state.not_in(FINISHED)),
                    ),
                ),
            ),
            ~exists().where(AuditEvent.actor == actor, AuditEvent.created_at >= cutoff),
            ~exists().where(
                *same_chat,
                Conversation.channel == ri.channel,
                Conversation.chat_key == ri.chat_key,
                Conversation.updated_at >= cutoff,
            ),
            ~exists().where(
                *same_chat,
                InboundEvent.channel == ri.channel,
                InboundEvent.chat_key == ri.chat_key,
                InboundEvent.received_at >= cutoff,
            ),
        )
        .order_by(ri.reporter_id)
        .limit(limit)
    )
    if only is not None:
        query = query.where(ri.reporter_id == only)
    return [int(r) for r in await session.scalars(query)]


def _count(result: Any) -> int:
    rows: CursorResult[Any] = result
    return int(rows.rowcount or 0)


async def retention_pass(
    sessions: async_sessionmaker[AsyncSession], periods: Periods, now: datetime | None = None
) -> dict[str, int]:
    """One pass over everything with a retention period; what it removed, by kind."""
    now = now or utcnow()
    done: dict[str, int] = {}
    identity_cutoff = _months_before(now, periods.identity_months)
    erased = 0
    while True:
        async with sessions() as session, session.begin():
            idle = await idle_reporters(session, identity_cutoff, BATCH)
            for reporter_id in idle:
                # Locked, then asked again: a report or a message may have come since.
                await session.get(Reporter, reporter_id, with_for_update=True)
                if not await idle_reporters(session, identity_cutoff, 1, only=reporter_id):
                    continue
                if await erase_identity(session, reporter_id, now):
                    erased += 1
        if len(idle) < BATCH:
            break
    done["identities"] = erased
    async with sessions() as session, session.begin():
        texts = await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.status == "sent",
                OutboxMessage.sent_at < now - timedelta(days=periods.outbox_days),
                OutboxMessage.chat_key != "",
            )
            .values(payload={}, chat_key="", address=None)
            .execution_options(synchronize_session=False)
        )
        done["message texts"] = _count(texts)
        processed = await session.execute(
            delete(ProcessedUpdate).where(
                ProcessedUpdate.processed_at < now - timedelta(days=periods.processed_days)
            )
        )
        done["update ids"] = _count(processed)
        sessions_gone = await session.execute(delete(WebSession).where(WebSession.expires_at < now))
        done["login sessions"] = _count(sessions_gone)
        codes = await session.execute(delete(LinkCode).where(LinkCode.expires_at < now))
        done["link codes"] = _count(codes)
        done["rate counts"] = await sweep_limits(session, now)
        deliveries = await session.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.status.in_(("delivered", "failed")),
                WebhookDelivery.created_at < now - timedelta(days=periods.webhook_days),
            )
        )
        done["webhook deliveries"] = _count(deliveries)
    return done


class RetentionWorker(Periodic):
    """The retention pass, by whichever process holds the duty."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        presence: Presence,
        settings: Settings,
    ) -> None:
        super().__init__("retention", settings.retention_interval, self._pass)
        self._sessions = sessions
        self._presence = presence
        self._periods = Periods.of(settings)
        presence.want(DUTY)

    async def _pass(self) -> str | None:
        if not self._presence.holds(DUTY):
            return None
        done = await retention_pass(self._sessions, self._periods)
        said = ", ".join(f"{n} {kind}" for kind, n in done.items() if n)
        return f"removed {said}" if said else None
