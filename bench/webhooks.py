"""Partners' webhooks: what queueing events adds to a report's intake transaction, and how
many deliveries a second one process sends to a partner on 127.0.0.1 that answers at
once (signing, leasing and recording each).

Intake: reports submitted one transaction each, in alternating rounds without any
webhook and with two webhooks of the report's province (each report then queues one
`ticket.created` per webhook); medians of the rounds. Delivery: DELIVERIES queued, then
one worker (default concurrency) sends them all; deliveries a second. SQLite unless
--database-url names another database (a fresh PostgreSQL database, say).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.common, when run as a script

import bench.common  # noqa: E402 - the run's data key

REPORTS = 200
ROUNDS = 3
DELIVERIES = 2000


async def _partner() -> tuple[web.AppRunner, str]:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook"


async def main(url: str) -> None:
    from sqlalchemy import func, select, update

    from backend.cli import load_units, migrate
    from backend.config import Settings
    from backend.db import create_engine, session_factory
    from backend.models import Webhook, WebhookDelivery, utcnow
    from backend.services import webhooks
    from backend.services.deadlines import Policies
    from backend.services.intake import ReportDraft, submit_report
    from backend.services.presence import Presence
    from backend.services.webhook_delivery import WebhookWorker

    settings = Settings(
        environment="test",
        database_url=url,
        webhook_allow_http=True,
        webhook_allow_private=True,
    )
    bench.common.quiet_migrations()
    await migrate(settings)
    await load_units(settings)
    engine = create_engine(url)
    sessions = session_factory(engine)
    policies = Policies.load()
    webhooks.configure("https://hotline.example.vn")
    runner, hook_url = await _partner()
    draft = ReportDraft("dumping", "14812", 20.074, 105.912, "gps", "rác", "recurring")

    async def intake_round() -> float:
        began = time.perf_counter()
        for _ in range(REPORTS):
            async with sessions() as s, s.begin():
                await submit_report(
                    s, draft, reporter_id=None, channel="web", now=utcnow(), policies=policies
                )
        return (time.perf_counter() - began) / REPORTS * 1000

    async def hooks_on(on: bool) -> None:
        async with sessions() as s, s.begin():
            await s.execute(update(Webhook).values(disabled_at=None if on else utcnow()))

    for _ in range(2):
        async with sessions() as s, s.begin():
            await webhooks.register(
                s,
                name="bench",
                url=hook_url,
                province_code="38",
                events=webhooks.EVENTS,
                actor="bench",
                user_id=None,
                allow_http=True,
                allow_private=True,
            )
    without, with_hooks = [], []
    await intake_round()  # warm-up
    for _ in range(ROUNDS):
        await hooks_on(False)
        without.append(await intake_round())
        await hooks_on(True)
        with_hooks.append(await intake_round())
    a, b = statistics.median(without), statistics.median(with_hooks)
    print(f"intake, ms per report: {a:.2f} without webhooks, {b:.2f} with two (+{b - a:.2f})")

    async with sessions() as s, s.begin():
        await s.execute(update(WebhookDelivery).values(status="delivered"))
        hook_id = await s.scalar(select(Webhook.id))
        assert hook_id is not None
        hook = await s.get(Webhook, hook_id)
        assert hook is not None
        for _ in range(DELIVERIES):
            await webhooks.ping(s, hook, actor="bench", now=utcnow())
    worker = WebhookWorker(sessions, Presence(sessions, alone=True), settings)
    began = time.perf_counter()
    while await worker.pump():
        pass
    elapsed = time.perf_counter() - began
    await worker.stop()
    async with sessions() as s:
        left = await s.scalar(select(func.count()).where(WebhookDelivery.status != "delivered"))
    print(
        f"delivery, one process, concurrency {settings.webhook_concurrency}: "
        f"{DELIVERIES / elapsed:.0f} deliveries/s ({DELIVERIES} in {elapsed:.1f} s, {left} left)"
    )
    await runner.cleanup()
    await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="default: a new SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"))
