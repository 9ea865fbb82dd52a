"""Two `hotline serve` processes on one PostgreSQL: a resident's reports are counted in
the database, so the two together allow no more than the limit. Each of the resident's
updates goes to the other process (Telegram webhooks behind a load balancer), and at the
end both processes are asked to begin a report at the same moment. PostgreSQL only:
several processes need it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from itertools import cycle
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import RateCount, Ticket
from bot.telegram import WEBHOOK_PATH
from tests.fakes.telegram_api import FakeTelegram, FakeUser
from tests.scaleout.cluster import Server, free_port

pytestmark = pytest.mark.skipif(
    not os.environ.get("HOTLINE_TEST_DATABASE_URL"),
    reason="two server processes need PostgreSQL (HOTLINE_TEST_DATABASE_URL is not set)",
)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "two-processes-webhook-secret"
CHAT = 5550777
PER_HOUR = 3
NEW_CASE = "Khác, tạo phản ánh mới"
LIMIT_TEXT = "Bạn đã gửi đủ số phản ánh cho phép qua kênh này"


@pytest.fixture
async def servers(
    database_url: str, tmp_path: Path, api: FakeTelegram
) -> AsyncIterator[list[Server]]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "HOTLINE_DATA_KEY")
    base = {k: v for k, v in os.environ.items() if k in keep}
    started = []
    for name in ("one", "two"):
        port = free_port()
        env = {
            **base,
            # The worktree's code, not an installed copy.
            "PYTHONPATH": str(ROOT),
            "HOTLINE_ENVIRONMENT": "test",
            "HOTLINE_DATABASE_URL": database_url,
            "HOTLINE_TELEGRAM_TOKEN": api.token,
            "HOTLINE_TELEGRAM_API_URL": api.url,
            "HOTLINE_TELEGRAM_MODE": "webhook",
            "HOTLINE_TELEGRAM_WEBHOOK_SECRET": SECRET,
            "HOTLINE_TELEGRAM_RATE_PER_CHAT": "100",
            "HOTLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "HOTLINE_NOMINATIM_URL": "",
            "HOTLINE_MAP_TILE_URL": "",
            "HOTLINE_MEDIA_DIR": str(tmp_path / "media"),
            "HOTLINE_SPOOL_DIR": str(tmp_path / f"spool-{name}"),
            "HOTLINE_OUTBOX_POLL_INTERVAL": "0.2",
            "HOTLINE_STATS_DUTY_ENABLED": "false",
            "HOTLINE_DEADLINE_WORKER_ENABLED": "false",
            "HOTLINE_REPORTS_PER_HOUR": str(PER_HOUR),
            "HOTLINE_REPORTS_PER_DAY": "10",
        }
        server = Server(name, port, env, tmp_path / f"{name}.log")
        started.append(server)
    try:
        for server in started:
            await server.start()
        for server in started:
            await server.ready()
        yield started
    finally:
        for server in started:
            await server.stop()


class Spread:
    """Sends each update to the next process in turn, as a load balancer would."""

    def __init__(self, api: FakeTelegram, servers: list[Server]) -> None:
        self.api = api
        self.urls = cycle(f"{s.url}{WEBHOOK_PATH}" for s in servers)
        self.push = api.push

    async def __call__(self, update: dict[str, Any]) -> None:
        self.api.webhook_url, self.api.webhook_secret = next(self.urls), SECRET
        await self.push(update)


async def report(user: FakeUser, first: bool) -> None:
    """A whole report without photos in Bỉm Sơn, sent anonymously."""
    await user.text("/start")
    await user.reply()
    if first:
        await user.press("✅ Tôi đồng ý")
        await user.reply()
    await user.text("/skip")
    await user.reply()
    await user.text("20.0740, 105.9120")
    await user.replies(2)
    await user.press("Phường Bỉm Sơn, Thanh Hóa")
    await user.reply()
    await user.press("Đổ rác, xả rác trái phép")
    sent = await user.reply()
    if NEW_CASE in [label for label, _ in sent.buttons()]:
        # Offered the earlier report at the same spot: this one is new.
        await user.press(NEW_CASE)
        await user.reply()
    await user.text("Rác thải đổ trộm cạnh chợ, bốc mùi.")
    await user.reply()
    await user.tap("✅ Gửi ẩn danh")
    await user.reply()


async def test_two_processes_together_allow_no_more_than_the_limit(
    servers: list[Server], api: FakeTelegram, sessions: async_sessionmaker[AsyncSession]
) -> None:
    api.push = Spread(api, servers)  # type: ignore[method-assign]
    user = FakeUser(api, chat_id=CHAT)
    for n in range(PER_HOUR):
        await report(user, first=n == 0)
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Ticket)) == PER_HOUR
    # Both processes asked at once: both refuse.
    before = len(api.sent_to(CHAT))
    updates = [user.message_update(text="/start", entities=[_command(6)]) for _ in servers]
    statuses = await asyncio.gather(
        *(
            api.client.post(
                f"{s.url}{WEBHOOK_PATH}",
                json=u,
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            )
            for s, u in zip(servers, updates, strict=True)
        )
    )
    assert [r.status for r in statuses] == [200, 200]
    replies = await user.replies(2)
    assert all(LIMIT_TEXT in (r.text or "") for r in replies), [r.text for r in replies]
    assert len(api.sent_to(CHAT)) == before + 2
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Ticket)) == PER_HOUR
        hour = await s.scalar(select(RateCount.count).where(RateCount.name.like("%:3600")))
    assert hour == PER_HOUR


def _command(length: int) -> dict[str, Any]:
    return {"type": "bot_command", "offset": 0, "length": length}
