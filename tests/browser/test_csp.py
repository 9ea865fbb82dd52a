"""The Content-Security-Policy holds in a real browser: every page of the dashboard and the
simulator works without inline script or style, and map tiles load from the configured
host only."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, ConsoleMessage, Page
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.services.deadlines import Policies
from backend.services.workflow import Action, Actor, apply
from tests.browser.conftest import log_in
from tests.e2e.conftest import running
from tests.e2e.staff_http import web_settings
from tests.e2e.test_demo import serving
from tests.factories import make_ticket, make_user

POLICIES = Policies.load()
PASSWORD = "a long and private passphrase"


def violations(page: Page) -> list[str]:
    """The browser's CSP refusals on this page, as they are logged."""
    found: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            found.append(message.text)

    page.on("console", keep)
    return found


async def test_the_dashboard_runs_under_its_policy(
    browser: Browser, chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert chat_settings.public_url is not None
    port = chat_settings.public_url.rsplit(":", 1)[1]
    # Tiles from another origin (localhost, not 127.0.0.1) that the policy must allow.
    settings = chat_settings.model_copy(
        update={"map_tile_url": f"http://localhost:{port}/tiles/{{z}}/{{x}}/{{y}}.png"}
    )
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="9301")
        await apply(s, ticket, Action("classify", competence="ward"), Actor.system(), POLICIES)
        await apply(s, ticket, Action("assign"), Actor.system(), POLICIES)
        code = ticket.code
        operator = (await make_user(s, "operator", "P38", password=PASSWORD)).username
        staff = (await make_user(s, "ward_staff", "W14812", password=PASSWORD)).username
    async with running(settings):
        base = settings.public_url or ""
        page = await log_in(browser, base, operator, PASSWORD)
        refused = violations(page)
        await page.wait_for_url("**/queue")
        tiles: list[str] = []
        page.on("request", lambda r: tiles.append(r.url) if "/tiles/" in r.url else None)
        for path in (f"/tickets/{code}", "/intake/phone", "/stats", "/queue?view=all"):
            await page.goto(path)
            await page.wait_for_load_state("networkidle")
        assert await page.locator("text=" + code).count() >= 1
        await page.goto(f"/tickets/{code}")
        assert await page.locator(".map .leaflet-marker-icon").count() == 1
        await page.goto("/intake/phone")
        await page.locator("[data-map]").click()  # a click on the map picks the point
        assert "," in await page.input_value("input[name=point]")

        staff_page = await log_in(browser, base, staff, PASSWORD)
        staff_refused = violations(staff_page)
        await staff_page.wait_for_url("**/queue")
        await staff_page.goto(f"/tickets/{code}")
        await staff_page.click("form.action-claim button")
        await staff_page.click("form.action-verify button")
        await staff_page.click("form.action-confirm button")
        answer = staff_page.locator("form.action-answer")
        await answer.locator("select.template").select_option(index=1)
        # The template fills the answer by the page's script, not an inline handler.
        assert await answer.locator("textarea[name=result]").input_value() != ""
    assert refused == [] and staff_refused == []
    assert tiles and all(t.startswith(f"http://localhost:{port}/tiles/") for t in tiles)


async def test_the_simulator_runs_under_its_policy(
    browser: Browser, database_url: str, tmp_path: Path
) -> None:
    settings = web_settings(database_url, tmp_path, demo=True, telegram_rate_per_chat=100.0)
    async with serving(settings) as base:
        context = await browser.new_context(base_url=base)
        page = await context.new_page()
        refused = violations(page)
        await page.goto("/demo/chat")
        await page.fill("#text", "/start")
        await page.press("#text", "Enter")
        await page.locator(".log li.bot button", has_text="Tôi đồng ý").wait_for(timeout=15_000)
    assert refused == []
