"""The metrics read from the database (inbox and outbox backlog, overdue tickets per
province), their cache, and the outbox's counts and log lines of its sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from telegram import error as telegram_error

from backend.db import create_engine, session_factory
from backend.metrics import REGISTRY
from backend.models import InboundEvent, OutboxMessage, Ticket, Ward, utcnow
from backend.web.metrics import DatabaseGauges, may_scrape
from bot.outbox import (
    OutboxWorker,
    PermanentError,
    RetryLater,
    TransientError,
    Undeliverable,
    failure_reason,
)
from handlers.events import Reply
from tests.factories import add_sends, add_waiting_updates, chat_key, make_ticket
from tests.fakes.telegram_api import FakeTelegram
from tests.logcapture import json_log

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


async def scrape(gauges: DatabaseGauges) -> Samples:
    await gauges.refresh()
    return samples(generate_latest(gauges).decode())


async def test_backlog_gauges_count_what_waits_and_what_is_overdue(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    async with sessions() as s, s.begin():
        # Handled long ago: not waiting, and older than any that waits.
        s.add(
            InboundEvent(
                channel="zalo_oa",
                event_key="m0",
                chat_key=chat_key("zalo_oa", "u1"),
                address="u1",
                body={},
                received_at=now - timedelta(seconds=999),
                handled_at=now - timedelta(seconds=990),
            )
        )
        add_waiting_updates(s, "zalo_oa", (120, 60, 10), now, first=1)
        add_sends(
            s, "zalo_bot", (("sent", 900), ("failed", 800), ("pending", 300), ("pending", 30)), now
        )
        late = await make_ticket(s)
        await make_ticket(s)  # due later
        closed = await make_ticket(s)
        elsewhere_ward = await s.scalar(select(Ward.code).where(Ward.province_code == "01"))
        assert elsewhere_ward is not None
        elsewhere = await make_ticket(s, ward=elsewhere_ward)
        past = now - timedelta(hours=1)
        await s.execute(
            update(Ticket)
            .where(Ticket.id.in_([late.id, closed.id, elsewhere.id]))
            .values(due_at=past)
        )
        await s.execute(update(Ticket).where(Ticket.id == closed.id).values(state="closed"))

    gauges = DatabaseGauges(sessions, ttl=0)
    found = await scrape(gauges)
    assert value(found, "hotline_database_up") == 1
    assert value(found, "hotline_inbox_waiting", channel="zalo_oa") == 3
    age = value(found, "hotline_inbox_oldest_age_seconds", channel="zalo_oa")
    assert age is not None and 120 <= age < 180
    assert value(found, "hotline_outbox_pending", channel="zalo_bot") == 2
    age = value(found, "hotline_outbox_oldest_age_seconds", channel="zalo_bot")
    assert age is not None and 300 <= age < 360
    assert value(found, "hotline_tickets_overdue", province="38") == 1
    assert value(found, "hotline_tickets_overdue", province="01") == 1

    # Drained and answered: the series stay, at 0.
    async with sessions() as s, s.begin():
        await s.execute(update(InboundEvent).values(handled_at=now))
        await s.execute(update(OutboxMessage).values(status="sent"))
        await s.execute(update(Ticket).where(Ticket.id == late.id).values(state="closed"))
    found = await scrape(gauges)
    assert value(found, "hotline_inbox_waiting", channel="zalo_oa") == 0
    assert value(found, "hotline_inbox_oldest_age_seconds", channel="zalo_oa") == 0
    assert value(found, "hotline_outbox_pending", channel="zalo_bot") == 0
    assert value(found, "hotline_tickets_overdue", province="38") == 0
    assert value(found, "hotline_tickets_overdue", province="01") == 1


@contextmanager
def counting_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


async def test_a_burst_of_scrapes_reads_the_database_once_per_interval(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    clock = [100.0]
    gauges = DatabaseGauges(sessions, ttl=5.0, clock=lambda: clock[0])
    with counting_statements(engine) as statements:
        await asyncio.gather(*(gauges.refresh() for _ in range(50)))
        assert len(statements) == 3
        clock[0] += 4.0
        await gauges.refresh()
        assert len(statements) == 3
        clock[0] += 1.5
        await asyncio.gather(*(gauges.refresh() for _ in range(50)))
        assert len(statements) == 6


async def test_an_unreachable_database_reads_as_down_without_stale_gauges(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        s.add(OutboxMessage.to("zalo_bot", "c1", Reply("x").to_payload()))
    gauges = DatabaseGauges(sessions, ttl=0)
    assert value(await scrape(gauges), "hotline_outbox_pending", channel="zalo_bot") == 1
    # The same gauges on a database that cannot be opened.
    gone = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    try:
        gauges._sessions = session_factory(gone)
        found = await scrape(gauges)
    finally:
        await gone.dispose()
    assert value(found, "hotline_database_up") == 0
    assert not any(name.startswith(("hotline_outbox", "hotline_inbox")) for name, _ in found)


def test_only_direct_local_or_trusted_requests_may_scrape() -> None:
    from ipaddress import ip_network

    trusted = [ip_network("10.1.0.0/16")]
    assert may_scrape("127.0.0.1", {}, [])
    assert may_scrape("127.0.0.9", {}, [])
    assert may_scrape("::1", {}, [])
    assert may_scrape("::ffff:127.0.0.1", {}, [])
    assert may_scrape("10.1.2.3", {}, trusted)
    assert not may_scrape("10.2.0.1", {}, trusted)
    assert not may_scrape("203.0.113.7", {}, trusted)
    assert not may_scrape("192.168.1.5", {}, [])
    assert not may_scrape(None, {}, trusted)
    assert not may_scrape("", {}, trusted)
    # Relayed by a proxy, even one on this machine: someone else's request.
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        assert not may_scrape("127.0.0.1", {header: "203.0.113.7"}, [])
        assert not may_scrape("10.1.2.3", {header: "10.1.2.4"}, trusted)


# --- the outbox's counts and log lines ---------------------------------------------------


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_failed_sends_are_counted_by_reason(
    api: FakeTelegram, worker: OutboxWorker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reasons = ("http_5xx", "retry_after", "blocked", "bad_request")
    before = {
        r: counted("hotline_outbox_send_failures_total", channel="telegram", reason=r)
        for r in reasons
    }
    sent_before = counted("hotline_outbox_sent_total", channel="telegram")
    for status in (500, 429, 403, 400):
        api.fail_next("sendMessage", status, retry_after=1 if status == 429 else None)
    async with sessions() as s, s.begin():
        for chat in ("1", "2", "3", "4", "5"):
            s.add(OutboxMessage.to("telegram", chat, Reply("x").to_payload()))
    tried, _ = await worker.pump()
    assert tried == 5
    after = {
        r: counted("hotline_outbox_send_failures_total", channel="telegram", reason=r)
        for r in reasons
    }
    assert {r: after[r] - before[r] for r in reasons} == dict.fromkeys(reasons, 1.0)
    assert counted("hotline_outbox_sent_total", channel="telegram") - sent_before == 1
    # Every reason has its series from the start, at 0 until it happens.
    assert (
        REGISTRY.get_sample_value(
            "hotline_outbox_send_failures_total", {"channel": "telegram", "reason": "undeliverable"}
        )
        is not None
    )


def _cause(error: Exception, cause: BaseException) -> Exception:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RetryLater(5.0), "retry_after"),
        (Undeliverable("outside the window"), "undeliverable"),
        (TransientError("HTTP 502"), "http_5xx"),
        (PermanentError("HTTP 404"), "other"),
        (TransientError("Zalo error -32: x"), "other"),
        (_cause(TransientError("x"), aiohttp.ClientConnectionError()), "network"),
        (_cause(TransientError("x"), TimeoutError()), "network"),
        (_cause(TransientError("x"), telegram_error.TimedOut()), "network"),
        (
            _cause(
                TransientError("x"),
                _cause(telegram_error.NetworkError("httpx.ConnectError"), OSError()),
            ),
            "network",
        ),
        (_cause(TransientError("x"), telegram_error.NetworkError("Bad Gateway")), "http_5xx"),
        (_cause(PermanentError("x"), telegram_error.Forbidden("blocked")), "blocked"),
        (_cause(PermanentError("x"), telegram_error.BadRequest("chat not found")), "bad_request"),
        (TransientError("x", reason="network"), "network"),
        (TransientError("x", reason="no such word"), "other"),
    ],
)
def test_a_failure_is_given_one_reason_of_a_closed_set(error: Exception, reason: str) -> None:
    assert isinstance(error, TransientError | PermanentError | RetryLater)
    assert failure_reason(error) == reason


async def test_a_send_is_logged_with_the_request_id_of_its_row(
    api: FakeTelegram, worker: OutboxWorker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    api.fail_next("sendMessage", 403)
    async with sessions() as s, s.begin():
        blocked = OutboxMessage.to(
            "telegram",
            "5550001",
            Reply("x").to_payload(),
            request_id="0a1b2c3d4e5f6071",
        )
        fine = OutboxMessage.to(
            "telegram",
            "5550002",
            Reply("Chào bạn").to_payload(),
            request_id="8192a3b4c5d6e7f8",
        )
        unknown = OutboxMessage.to("telegram", "5550003", Reply("y").to_payload())
        s.add_all([blocked, fine, unknown])
    with json_log() as out:
        await worker.pump()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    mine = [x for x in lines if x["logger"] == "bot.outbox"]
    by_row = {
        row.id: [x for x in mine if f"outbox row {row.id} " in x["message"]]
        for row in (blocked, fine, unknown)
    }
    assert [x.get("request_id") for x in by_row[fine.id]] == ["8192a3b4c5d6e7f8"]
    assert "sent" in by_row[fine.id][0]["message"]
    assert [x.get("request_id") for x in by_row[blocked.id]] == ["0a1b2c3d4e5f6071"]
    assert "failed" in by_row[blocked.id][0]["message"]
    assert [x.get("request_id") for x in by_row[unknown.id]] == [None]
    # Every line is about a send, and names neither the chat nor the text.
    text = out.getvalue()
    for private in ("5550001", "5550002", "Chào bạn"):
        assert private not in text
