"""Retention with a frozen clock: what goes after its period and what stays, on SQLite and
PostgreSQL; and the README's table says what the code does."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import (
    AuditEvent,
    Conversation,
    LinkCode,
    OutboxMessage,
    ProcessedUpdate,
    RateCount,
    Reporter,
    ReporterIdentity,
    Ticket,
    Unit,
    User,
    Webhook,
    WebhookDelivery,
    WebSession,
)
from backend.services.reporters import create_phone_reporter
from backend.services.retention import Periods, retention_pass
from handlers.events import Reply
from tests.factories import make_ticket

NOW = datetime(2027, 6, 15, 9, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=400)
PERIODS = Periods(identity_months=12, outbox_days=30, processed_days=30)
ROOT = Path(__file__).resolve().parents[2]


async def old_reporter(
    s: AsyncSession, state: str = "closed", last_step: datetime = LONG_AGO, chat: str = ""
) -> int:
    """A chat reporter made long ago, with one report in `state`, whose conversation last
    moved at last_step."""
    ticket = await make_ticket(s, now=LONG_AGO, chat_id=chat or None)
    assert ticket.reporter_id is not None
    await s.execute(update(Ticket).where(Ticket.id == ticket.id).values(state=state))
    await s.execute(
        update(Reporter).where(Reporter.id == ticket.reporter_id).values(created_at=LONG_AGO)
    )
    await s.execute(
        update(Conversation)
        .where(Conversation.reporter_id == ticket.reporter_id)
        .values(updated_at=last_step)
    )
    return ticket.reporter_id


async def test_retention_pseudonymises_idle_reporters_and_clears_what_has_expired(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        idle = await old_reporter(s)
        rejected = await old_reporter(s, state="rejected")
        waiting = await old_reporter(s, state="assigned")  # a report not finished
        talked = await old_reporter(s, last_step=NOW - timedelta(days=60))
        rated = await old_reporter(s)
        s.add(
            AuditEvent(
                ticket_id=None,
                actor=f"reporter:{rated}",
                action="rate",
                created_at=NOW - timedelta(days=30),
            )
        )
        caller = await create_phone_reporter(s, "Bà Tư", "+84912000444", None)
        await s.execute(update(Reporter).where(Reporter.id == caller).values(created_at=LONG_AGO))
        for age, status in ((31, "sent"), (29, "sent"), (90, "pending"), (90, "failed")):
            s.add(
                OutboxMessage.to(
                    "telegram",
                    f"{status}{age}",
                    Reply("x").to_payload(),
                    status=status,
                    created_at=NOW - timedelta(days=age),
                    sent_at=NOW - timedelta(days=age) if status == "sent" else None,
                )
            )
        for age in (31, 29):
            s.add(
                ProcessedUpdate(
                    channel="telegram", update_id=f"u{age}", processed_at=NOW - timedelta(days=age)
                )
            )
        user = User(username="lan", display_name="Lan", role="operator")
        s.add(user)
        await s.flush()
        for name, expires in (
            ("gone", NOW - timedelta(hours=1)),
            ("kept", NOW + timedelta(hours=1)),
        ):
            s.add(WebSession(token_hash=name, user_id=user.id, csrf_token="c", expires_at=expires))
        unit = await s.scalar(select(Unit.id).where(Unit.code == "W14812"))
        assert unit is not None
        for name, expires in (("old", NOW - timedelta(days=2)), ("new", NOW + timedelta(days=1))):
            s.add(LinkCode(code_hash=name, unit_id=unit, expires_at=expires))
        # Webhook deliveries: finished a month ago (go), finished lately or still being
        # tried (stay).
        hook = Webhook(
            name="PAHT",
            url="https://paht.example/hook",
            province_code="38",
            events=["ticket.created"],
            secret="s",
            created_at=LONG_AGO,
        )
        s.add(hook)
        await s.flush()
        for age, status in ((31, "delivered"), (31, "failed"), (29, "delivered"), (31, "pending")):
            s.add(
                WebhookDelivery(
                    webhook_id=hook.id,
                    event="ticket.created",
                    event_id=f"{status}{age}",
                    body="{}",
                    status=status,
                    created_at=NOW - timedelta(days=age),
                )
            )
        # A limit's window that has ended, and one still counting.
        for window, expires in ((0, NOW - timedelta(minutes=1)), (1, NOW + timedelta(hours=1))):
            s.add(RateCount(name="reports:telegram:1", window=window, count=3, expires_at=expires))

    done = await retention_pass(sessions, PERIODS, NOW)

    assert done == {
        "identities": 3,
        "message texts": 1,
        "update ids": 1,
        "login sessions": 1,
        "link codes": 1,
        "rate counts": 1,
        "webhook deliveries": 2,
    }
    async with sessions() as s:
        kept = set(await s.scalars(select(ReporterIdentity.reporter_id)))
        erased = set(await s.scalars(select(Reporter.id).where(Reporter.erased_at == NOW)))
        texts = {o.address or "": o.payload for o in await s.scalars(select(OutboxMessage))}
        updates = set(await s.scalars(select(ProcessedUpdate.update_id)))
        logins = set(await s.scalars(select(WebSession.token_hash)))
        codes = set(await s.scalars(select(LinkCode.code_hash)))
        windows = set(await s.scalars(select(RateCount.window)))
        hooked = set(await s.scalars(select(WebhookDelivery.event_id)))
        tickets = await s.scalar(select(func.count()).select_from(Ticket))
    assert erased == {idle, rejected, caller}
    assert kept == {waiting, talked, rated}
    assert windows == {1}
    assert hooked == {"delivered29", "pending31"}
    assert tickets == 5  # the reports stay, under their pseudonyms
    assert "sent31" not in texts and {"sent29", "pending90", "failed90"} <= set(texts)
    assert texts[""] == {} and texts["sent29"] == Reply("x").to_payload()
    assert updates == {"u29"} and logins == {"kept"} and codes == {"new"}

    # A second pass finds nothing more to do.
    again = await retention_pass(sessions, PERIODS, NOW)
    assert set(again.values()) == {0}


def test_the_readme_table_says_what_the_code_does() -> None:
    """Each row of the README's retention table names a setting and its default."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## What is kept, and for how long", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| (.+?) \| `(HOTLINE_\w+)` = (\d+) \| (.+?) \|$", section, re.M)
    assert len(rows) >= 3, section
    defaults = Settings()
    for _, _, name, value, _ in rows:
        field = name.removeprefix("HOTLINE_").lower()
        assert getattr(defaults, field) == int(value), name
    named = {name for _, _, name, _, _ in rows}
    assert named == {
        "HOTLINE_RETENTION_IDENTITY_MONTHS",
        "HOTLINE_RETENTION_OUTBOX_DAYS",
        "HOTLINE_RETENTION_PROCESSED_DAYS",
        "HOTLINE_RETENTION_WEBHOOK_DAYS",
    }
