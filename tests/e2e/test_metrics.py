"""The whole service observed from outside: /metrics scraped over HTTP after webhooks,
replies, a backlog, an overdue ticket and a failed send; who may scrape it; and the JSON
log that follows an update from its webhook to its reply under one request id."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import InboundEvent, OutboxMessage, Ticket, utcnow
from backend.web.security import REQUEST_ID_HEADER
from tests.e2e.conftest import running
from tests.e2e.webhooks import (
    CHANNELS,
    PATHS,
    SAMPLES,
    TELEGRAM,
    TELEGRAM_SECRET_HEADER,
    all_webhooks,
    channel_settings,
    encode,
    headers,
    telegram_update,
)
from tests.factories import add_sends, add_waiting_updates, make_ticket
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.zalo_bot import FakeZaloBot
from tests.fakes.zalo_oa import FakeZaloOA
from tests.logcapture import json_log

# A resident's chat id, which no log line may hold.
RESIDENT = 918_273_645

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, settings: Settings, **how: Any) -> Samples:
    async with http.get(f"{settings.public_url}/metrics", **how) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def webhooks_timed(found: Samples, channel: str, status: str) -> float:
    return value(found, "hotline_webhook_duration_seconds_count", channel=channel, status=status)


async def test_each_channels_webhook_is_timed_by_route_and_status_class(
    database_url: str, tmp_path: Path, api: FakeTelegram, oa: FakeZaloOA, zbot: FakeZaloBot
) -> None:
    settings = all_webhooks(database_url, tmp_path, api, oa, zbot)
    async with running(settings), aiohttp.ClientSession() as http:
        before = await scrape(http, settings)
        for channel in CHANNELS:
            body = encode(SAMPLES[channel](1))
            async with http.post(
                f"{settings.public_url}{PATHS[channel]}",
                data=body,
                headers=headers(settings, oa, channel, body),
            ) as r:
                assert r.status == 200
        body = encode(telegram_update(2))
        async with http.post(
            f"{settings.public_url}{PATHS[TELEGRAM]}",
            data=body,
            headers={TELEGRAM_SECRET_HEADER: "wrong"},
        ) as r:
            assert r.status == 401
        after = await scrape(http, settings)
    for channel in CHANNELS:
        grew = webhooks_timed(after, channel, "2xx") - webhooks_timed(before, channel, "2xx")
        assert grew == 1, channel
    assert webhooks_timed(after, TELEGRAM, "4xx") - webhooks_timed(before, TELEGRAM, "4xx") == 1
    # Labelled by channel and status class only: no path, no chat.
    labels = {
        labels for (name, labels) in after if name.startswith("hotline_webhook_duration_seconds")
    }
    assert all({k for k, _ in pairs} <= {"channel", "status", "le"} for pairs in labels)


async def test_metrics_show_the_backlog_overdue_tickets_and_failed_sends(
    database_url: str,
    tmp_path: Path,
    api: FakeTelegram,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = channel_settings(database_url, tmp_path, telegram=api, mode="webhook")
    now = utcnow()
    # A known backlog on channels this server does not run (so nothing here drains it):
    # three updates waiting on Zalo OA, two messages pending on the Zalo Bot.
    async with sessions() as s, s.begin():
        add_waiting_updates(s, "zalo_oa", (120, 60, 10), now)
        add_sends(s, "zalo_bot", (("pending", 300), ("pending", 30)), now)
        late = await make_ticket(s)
        await make_ticket(s)
        await s.execute(
            update(Ticket).where(Ticket.id == late.id).values(due_at=now - timedelta(hours=2))
        )
        # The notices of those tickets are not this test's business.
        await s.execute(
            update(OutboxMessage).where(OutboxMessage.channel == "telegram").values(status="sent")
        )
    api.fail_next("sendMessage", 500)
    async with running(settings), aiohttp.ClientSession() as http:
        before = await scrape(http, settings)
        body = encode(telegram_update(7))
        async with http.post(
            f"{settings.public_url}{PATHS[TELEGRAM]}",
            data=body,
            headers={TELEGRAM_SECRET_HEADER: settings.webhook_secret()},
        ) as r:
            assert r.status == 200
        # The first reply fails (500), is tried again after its backoff, and goes out.
        await api.wait_sent(6007, 1, timeout=20)
        await _until_sent(sessions, "telegram")
        after = await scrape(http, settings)
    assert webhooks_timed(after, TELEGRAM, "2xx") - webhooks_timed(before, TELEGRAM, "2xx") == 1
    assert value(after, "hotline_database_up") == 1
    assert value(after, "hotline_inbox_waiting", channel="zalo_oa") == 3
    assert 120 <= value(after, "hotline_inbox_oldest_age_seconds", channel="zalo_oa") < 200
    assert value(after, "hotline_outbox_pending", channel="zalo_bot") == 2
    assert 300 <= value(after, "hotline_outbox_oldest_age_seconds", channel="zalo_bot") < 380
    assert value(after, "hotline_outbox_pending", channel="telegram") == 0
    assert value(after, "hotline_tickets_overdue", province="38") == 1

    def failures(found: Samples, reason: str) -> float:
        return value(found, "hotline_outbox_send_failures_total", channel="telegram", reason=reason)

    assert failures(after, "http_5xx") - failures(before, "http_5xx") == 1
    assert failures(after, "network") - failures(before, "network") == 0
    sent = value(after, "hotline_outbox_sent_total", channel="telegram")
    assert sent - value(before, "hotline_outbox_sent_total", channel="telegram") >= 1


async def _until_sent(
    sessions: async_sessionmaker[AsyncSession], channel: str, timeout: float = 20.0
) -> None:
    """Wait until no message of channel is pending (its outcome is recorded)."""
    deadline = time.monotonic() + timeout
    while True:
        async with sessions() as s:
            pending = await s.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.channel == channel, OutboxMessage.status == "pending")
            )
        if pending == 0:
            return
        assert time.monotonic() < deadline, f"{pending} {channel} messages still pending"
        await asyncio.sleep(0.1)


async def test_metrics_are_refused_to_requests_a_proxy_relays(
    database_url: str, tmp_path: Path, api: FakeTelegram
) -> None:
    # The reverse proxy is on this machine and trusted: what it relays is from outside.
    settings = channel_settings(database_url, tmp_path, telegram=api, mode="webhook")
    settings = settings.model_copy(update={"trusted_proxies": [ip_network("127.0.0.1/32")]})
    url = f"{settings.public_url}/metrics"
    async with running(settings), aiohttp.ClientSession() as http:
        assert value(await scrape(http, settings), "hotline_database_up") == 1
        for relayed in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Forwarded-For": "127.0.0.1"},
            {"Forwarded": "for=203.0.113.9"},
            {"X-Real-IP": "203.0.113.9"},
        ):
            async with http.get(url, headers=relayed) as r:
                assert r.status == 404
                assert "hotline_" not in await r.text()
            async with http.post(url, headers=relayed) as r:
                assert r.status == 405


async def test_a_reply_is_logged_under_its_webhooks_request_id(
    database_url: str,
    tmp_path: Path,
    api: FakeTelegram,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = channel_settings(database_url, tmp_path, telegram=api, mode="webhook")
    with json_log() as out:
        async with running(settings), aiohttp.ClientSession() as http:
            update = telegram_update(8, "/start")
            update["message"]["chat"]["id"] = update["message"]["from"]["id"] = RESIDENT
            body = encode(update)
            async with http.post(
                f"{settings.public_url}{PATHS[TELEGRAM]}",
                data=body,
                headers={TELEGRAM_SECRET_HEADER: settings.webhook_secret()},
            ) as r:
                assert r.status == 200
                rid = r.headers[REQUEST_ID_HEADER]
            await api.wait_sent(RESIDENT, 1)
            await _until_sent(sessions, "telegram")
    async with sessions() as s:
        stored = await s.scalar(select(InboundEvent.request_id))
        replies = list(
            await s.scalars(select(OutboxMessage.id).where(OutboxMessage.request_id == rid))
        )
    assert stored == rid
    assert len(replies) >= 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    sent = [x for x in lines if x["logger"] == "bot.outbox" and " sent on " in x["message"]]
    assert {x["message"] for x in sent} >= {f"outbox row {i} sent on telegram" for i in replies}
    assert {x.get("request_id") for x in sent} == {rid}
    # No chat id, name or text of the resident in any line.
    text = out.getvalue()
    for private in (str(RESIDENT), '"Lan"', "/start"):
        assert private not in text
