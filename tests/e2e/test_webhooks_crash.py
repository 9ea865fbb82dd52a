"""`hotline serve` killed with -9 while it delivers webhooks to a slow partner, then
started again: every event reaches the partner at least once, none is lost."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import WebhookDelivery
from backend.services import webhooks
from tests.factories import make_ticket
from tests.fakes.partner import Answer, Partner, verify
from tests.scaleout.cluster import Server, free_port

EVENTS = 12


async def delivered(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        return int(
            await s.scalar(select(func.count()).where(WebhookDelivery.status == "delivered")) or 0
        )


async def test_killed_in_the_middle_then_restarted_loses_no_event(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    partner = Partner()
    await partner.start()
    # Slow: the first deliveries are still waiting for their answer at the kill.
    partner.default = Answer(200, delay=3.0)
    async with sessions() as s, s.begin():
        registered = await webhooks.register(
            s,
            name="Cổng PAHT",
            url=partner.hook_url,
            province_code="38",
            events=webhooks.EVENTS,
            actor="admin",
            user_id=None,
            allow_http=True,
            allow_private=True,
        )
        for _ in range(EVENTS):
            await make_ticket(s)
    async with sessions() as s:
        queued = set(await s.scalars(select(WebhookDelivery.event_id)))
    assert len(queued) == EVENTS
    port = free_port()
    env = {
        **os.environ,
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HOTLINE_NOMINATIM_URL": "",
        "HOTLINE_MEDIA_DIR": str(tmp_path / "media"),
        "HOTLINE_SPOOL_DIR": str(tmp_path / "spool"),
        "HOTLINE_DEADLINE_WORKER_ENABLED": "false",
        "HOTLINE_STATS_DUTY_ENABLED": "false",
        "HOTLINE_MAP_TILE_URL": "",
        "HOTLINE_WEBHOOK_ALLOW_HTTP": "true",
        "HOTLINE_WEBHOOK_ALLOW_PRIVATE": "true",
        "HOTLINE_WEBHOOK_TIMEOUT": "30",
        "HOTLINE_WEBHOOK_POLL_INTERVAL": "0.2",
    }
    server = Server("serve", port, env, tmp_path / "serve.log")
    try:
        await server.start()
        await server.ready()
        await partner.wait(4, timeout=30)
        server.kill()
        await server.wait_dead()
        in_flight = {r.event_id for r in partner.hooks()}
        # None of them was answered before the kill.
        assert await delivered(sessions) == 0
        partner.default = Answer(200)
        await server.start()
        await server.ready()
        deadline = time.monotonic() + 60
        while await delivered(sessions) < EVENTS:
            assert time.monotonic() < deadline, server.tail()
            await asyncio.sleep(0.3)
    finally:
        await server.stop()
        await partner.stop()
    got = partner.hooks()
    counts = Counter(r.event_id for r in got)
    assert set(counts) == queued
    # What was under way at the kill went again after the restart (at least once).
    assert all(counts[e] >= 2 for e in in_flight), counts
    assert all(verify(registered.secret, r.headers, r.raw) for r in got)
    logged = server.log_text()
    assert "whsec_" not in logged and "v1=" not in logged
