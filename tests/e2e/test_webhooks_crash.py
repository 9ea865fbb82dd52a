"""`hotline serve` processes delivering webhooks: one killed with -9 while it delivers to a
slow partner, then started again, loses no event; two on one PostgreSQL send each event
once."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import WebhookDelivery
from backend.services import webhooks
from tests.conftest import PG_URL
from tests.factories import make_ticket
from tests.fakes.partner import Answer, Partner, verify
from tests.scaleout.cluster import Server, free_port

EVENTS = 12


def serve_env(database_url: str, tmp_path: Path, port: int) -> dict[str, str]:
    """A server's environment: webhooks to the partner on 127.0.0.1, no other duties."""
    return {
        **os.environ,
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HOTLINE_NOMINATIM_URL": "",
        "HOTLINE_MEDIA_DIR": str(tmp_path / "media"),
        "HOTLINE_SPOOL_DIR": str(tmp_path / f"spool-{port}"),
        "HOTLINE_DEADLINE_WORKER_ENABLED": "false",
        "HOTLINE_STATS_DUTY_ENABLED": "false",
        "HOTLINE_MAP_TILE_URL": "",
        "HOTLINE_WEBHOOK_ALLOW_HTTP": "true",
        "HOTLINE_WEBHOOK_ALLOW_PRIVATE": "true",
        "HOTLINE_WEBHOOK_TIMEOUT": "30",
        "HOTLINE_WEBHOOK_POLL_INTERVAL": "0.2",
    }


async def register_partner(
    sessions: async_sessionmaker[AsyncSession], partner: Partner, tickets: int
) -> tuple[str, set[str]]:
    """The partner's webhook for Thanh Hóa and that many new tickets: (its secret, the
    event ids queued)."""
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
    return registered.secret, await add_tickets(sessions, tickets)


async def add_tickets(sessions: async_sessionmaker[AsyncSession], tickets: int) -> set[str]:
    """That many new tickets in one transaction; the event ids queued for them."""
    async with sessions() as s, s.begin():
        for _ in range(tickets):
            await make_ticket(s)
    async with sessions() as s:
        queued = set(await s.scalars(select(WebhookDelivery.event_id)))
    assert len(queued) == tickets
    return queued


async def delivered(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        found = await s.scalar(select(func.count()).where(WebhookDelivery.status == "delivered"))
        return int(found or 0)


async def test_killed_in_the_middle_then_restarted_loses_no_event(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    partner = Partner()
    await partner.start()
    # Slow: the first deliveries are still waiting for their answer at the kill.
    partner.default = Answer(200, delay=3.0)
    secret, queued = await register_partner(sessions, partner, EVENTS)
    port = free_port()
    server = Server("serve", port, serve_env(database_url, tmp_path, port), tmp_path / "serve.log")
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
    assert all(verify(secret, r.headers, r.raw) for r in got)
    logged = server.log_text()
    assert "whsec_" not in logged and "v1=" not in logged


@pytest.mark.skipif(PG_URL is None, reason="several server processes share PostgreSQL only")
async def test_two_servers_on_one_database_send_each_event_once(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    partner = Partner()
    await partner.start()
    partner.default = Answer(200, delay=0.2)
    secret, _ = await register_partner(sessions, partner, 0)
    servers = []
    for n in range(2):
        port = free_port()
        env = serve_env(database_url, tmp_path, port)
        servers.append(Server(f"serve-{n}", port, env, tmp_path / f"serve-{n}.log"))
    try:
        for server in servers:
            await server.start()
        await asyncio.gather(*(s.ready() for s in servers))
        # Queued once both are up: they look for due deliveries at the same moments.
        queued = await add_tickets(sessions, 40)
        deadline = time.monotonic() + 60
        while await delivered(sessions) < len(queued):
            assert time.monotonic() < deadline, servers[0].tail() + servers[1].tail()
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # time for a double send to arrive, were there one
    finally:
        await asyncio.gather(*(s.stop() for s in servers))
        await partner.stop()
    got = partner.hooks()
    counts = Counter(r.event_id for r in got)
    assert set(counts) == queued
    assert set(counts.values()) == {1}, counts.most_common(3)
    assert all(verify(secret, r.headers, r.raw) for r in got)
    async with sessions() as s:
        again = await s.scalar(select(func.count()).where(WebhookDelivery.attempts != 1))
    assert again == 0
    # Both took their share.
    assert all("webhook delivery" in s.log_text() for s in servers)
