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
from tests.fakes.images import image_bytes


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
        await page.set_input_files(
            "#photo", {"name": "bai-rac.jpg", "mimeType": "image/jpeg", "buffer": image_bytes()}
        )
        await bot_says(page, "Đã nhận ảnh")
        # The resident's own photo shows as a thumbnail.
        mine = page.locator(".log li.me img")
        assert (await mine.count()) == 1
        box = await mine.bounding_box()
        assert box is not None and 0 < box["width"] <= 160
        # The keyboard's first button shares the location, as Telegram's does.
        await page.locator("#keyboard button", has_text="Gửi vị trí").click()
        await bot_says(page, "Đã nhận vị trí")
        await page.locator(".log li.bot button", has_text="Phường Bỉm Sơn").last.click()
        await page.locator(".log li.bot button", has_text="Đốt rác").last.click()
        await say("Đốt rác thải nhựa mỗi tối sau chợ")
        await page.locator("#keyboard button", has_text="Đối tượng, tính chất").click()
        await page.locator(".log li.bot button", has_text="Thường xuyên").last.click()
        # "Send with my phone number" shares a number, not its own label.
        await page.locator("#keyboard button", has_text="Gửi kèm số điện thoại").click()
        await bot_says(page, "Mã theo dõi")
        assert "+84912345678" in await page.locator(".log li.bot").last.inner_text()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360
        # The chat scrolls inside its box, and the input stays on the screen.
        log = await page.evaluate(
            "(() => { const l = document.getElementById('log');"
            " return [l.scrollHeight, l.clientHeight, l.scrollTop]; })()"
        )
        assert log[0] > log[1] and log[2] > 0, log
        field = await page.locator("#text").bounding_box()
        assert field is not None and field["y"] + field["height"] <= 740

        async with sessions() as s:
            ticket = (await s.scalars(select(Ticket))).one()
        assert ticket.category_code == "burning" and ticket.ward_code == "14812"
        accounts = printed_accounts(capsys.readouterr().out)
        assert {"demo-operator", "demo-staff-14812", "demo-leader-26740"} <= set(accounts)
        # The README's walk-through: the operator finds it under «Mới»; the ward's staff
        # only under «Tất cả» until the operator classifies it, then under «Mới».
        pages = {}
        for username in ("demo-operator", "demo-staff-14812"):
            pages[username] = await log_in(browser, base, username, accounts[username])
            await pages[username].wait_for_url("**/queue")
        operator, staff = pages["demo-operator"], pages["demo-staff-14812"]

        async def listed(page: Page, view: str) -> int:
            await page.goto(f"/queue?view={view}")
            return await page.locator(f"text={ticket.code}").count()

        assert await listed(operator, "new") == 1
        assert (await listed(staff, "new"), await listed(staff, "all")) == (0, 1)
        await operator.goto(f"/tickets/{ticket.code}")
        await operator.select_option("form.action-classify select[name=competence]", "ward")
        await operator.click("form.action-classify button")
        await operator.wait_for_selector(".ok")
        assert await listed(staff, "new") == 1
    finally:
        await runner.cleanup()
