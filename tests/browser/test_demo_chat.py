"""The demo (`hotline serve --demo`, as `make run` starts it) without a Telegram token runs
the chat simulator: a resident reports at /demo/chat in the browser, and the demo ward
account whose password the start printed sees the ticket in its queue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.cli import server_app
from backend.models import Ticket
from tests.browser.conftest import log_in
from tests.e2e.staff_http import web_settings


async def bot_says(page: Page, text: str) -> None:
    await page.locator(".log li.bot", has_text=text).last.wait_for(timeout=15_000)


def printed_accounts(out: str) -> dict[str, str]:
    """username → password from the accounts list the demo prints at start."""
    found = re.findall(r"^  (demo-[a-z0-9-]+) +([a-z2-7]{16}) ", out, re.MULTILINE)
    return dict(found)


async def test_a_resident_reports_in_the_simulator_and_the_ward_sees_it(
    browser: Browser,
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = web_settings(database_url, tmp_path, demo=True, telegram_rate_per_chat=100.0)
    port = int((settings.public_url or "").rsplit(":", 1)[1])
    assert settings.telegram_token is None
    runner = web.AppRunner(server_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        base = f"http://127.0.0.1:{port}"
        context = await browser.new_context(viewport={"width": 360, "height": 740}, base_url=base)
        page = await context.new_page()
        await page.goto("/demo/chat")

        async def say(text: str) -> None:
            await page.fill("#text", text)
            await page.press("#text", "Enter")

        await say("/start")
        await page.locator(".log li.bot button", has_text="Tôi đồng ý").click()
        await bot_says(page, "Bước 1")
        await say("/skip")
        await bot_says(page, "vị trí")
        await page.locator("#pick").click()  # a spot on the map, shared as a location
        await bot_says(page, "Phường")
        await page.locator(".log li.bot button", has_text="Phường Bỉm Sơn").last.click()
        await page.locator(".log li.bot button", has_text="Đốt rác").last.click()
        await say("Đốt rác thải nhựa mỗi tối sau chợ")
        await page.locator(".log li.bot button", has_text="Không rõ").last.click()
        await page.locator(".log li.bot button", has_text="Thường xuyên").last.click()
        await page.locator("#keyboard button", has_text="Ẩn danh").click()
        await page.locator(".log li.bot button", has_text="Gửi").last.click()
        await bot_says(page, "Mã theo dõi")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360

        async with sessions() as s:
            ticket = (await s.scalars(select(Ticket))).one()
        assert ticket.category_code == "burning" and ticket.ward_code == "14812"
        accounts = printed_accounts(capsys.readouterr().out)
        assert set(accounts) == {
            "demo-operator",
            "demo-supervisor",
            "demo-admin",
            "demo-staff-14812",
            "demo-leader-14812",
        }
        # The operator sees it among the new reports; the ward's staff among all theirs.
        for username, view in (("demo-operator", "new"), ("demo-staff-14812", "all")):
            staff_page = await log_in(browser, base, username, accounts[username])
            await staff_page.wait_for_url("**/queue")
            await staff_page.goto(f"/queue?view={view}")
            assert await staff_page.locator(f"text={ticket.code}").count() == 1
    finally:
        await runner.cleanup()
