"""The web report form in real headless Chromium on a 360 px phone: a photo from the
"camera", the browser's location (granted) or a pin on the map, the category, the
words, consent; the code and the case page's link; nothing wider than the screen."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Photo, Ticket
from tests.browser.test_csp import violations
from tests.e2e.conftest import running
from tests.e2e.staff_http import web_settings
from tests.fakes.images import image_bytes

PHONE_WIDTH = 360


async def fits(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE_WIDTH, width


async def fill_and_send(page: Page) -> None:
    await page.set_input_files(
        "#photos", {"name": "hien-truong.jpg", "mimeType": "image/jpeg", "buffer": image_bytes()}
    )
    await page.select_option("#category", "burning")
    await page.fill("#description", "Đốt rác thải nhựa mỗi tối sau chợ, khói đen.")
    await page.check("#consent")
    await page.wait_for_timeout(600)  # a person takes longer than the form's minimum
    await page.click("button.send")


async def choose_ward_and_send(page: Page) -> None:
    """The test database has no ward boundaries: the form asks which ward."""
    await page.wait_for_selector("#wards")
    await fits(page)
    # The photo was kept on the server; the typed fields stayed.
    assert await page.locator(".kept").count() == 1
    assert await page.input_value("#description") != ""
    assert await page.is_checked("#consent") is False  # consent is never pre-ticked
    await page.locator("#wards label", has_text="Bỉm Sơn").first.click()
    await page.check("#consent")
    await page.wait_for_timeout(600)
    await page.click("button.send")


async def test_a_report_from_a_phone_with_the_browsers_location(
    browser: Browser,
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = web_settings(database_url, tmp_path, report_form_min_seconds=0.5)
    base = settings.public_url or ""
    async with running(settings):
        context = await browser.new_context(
            viewport={"width": PHONE_WIDTH, "height": 740},
            base_url=base,
            geolocation={"latitude": 20.0740, "longitude": 105.9120},
            permissions=["geolocation"],
            is_mobile=True,
        )
        page = await context.new_page()
        await page.goto("/report")
        assert await page.is_checked("#consent") is False
        await fits(page)
        await page.click("#locate")
        await page.wait_for_function("document.getElementById('lat').value !== ''")
        assert await page.input_value("#lat") == "20.074000"
        assert await page.input_value("#lon") == "105.912000"
        await fill_and_send(page)
        await choose_ward_and_send(page)
        await page.wait_for_selector("#code")
        code = await page.inner_text("#code")
        assert await page.get_attribute("#case-link", "href") == f"/r/{code}"
        await fits(page)
        # From the code to the case page, where the reporter follows it.
        await page.click("#case-link")
        await page.wait_for_selector("ol.history")
        assert code in await page.inner_text("h1")
        assert await page.locator("dd.category").inner_text() == "Đốt rác, đốt rơm rạ"
        assert await page.locator("ol.history li").count() >= 1
        await fits(page)
        await context.close()
    async with sessions() as s:
        ticket = (await s.scalars(select(Ticket))).one()
        photos = list(await s.scalars(select(Photo).where(Photo.ticket_id == ticket.id)))
    assert (ticket.code, ticket.channel, ticket.category_code) == (code, "web", "burning")
    assert ticket.ward_code == "14812" and len(photos) == 1


async def test_a_pin_on_the_map_in_english_and_problems_fit_the_screen(
    browser: Browser,
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = web_settings(database_url, tmp_path, report_form_min_seconds=0.5)
    base = settings.public_url or ""
    port = base.rsplit(":", 1)[1]
    # Tiles from the configured host (another origin: localhost, not 127.0.0.1).
    tiles_url = f"http://localhost:{port}/tiles/{{z}}/{{x}}/{{y}}.png"
    settings = settings.model_copy(update={"map_tile_url": tiles_url})
    async with running(settings):
        context = await browser.new_context(
            viewport={"width": PHONE_WIDTH, "height": 740}, base_url=base, is_mobile=True
        )
        page = await context.new_page()
        refused = violations(page)
        tiles: list[str] = []
        page.on("request", lambda r: tiles.append(r.url) if "/tiles/" in r.url else None)
        await page.goto("/report?lang=en")
        # Sent without a place or consent (the category is required by the page itself):
        # every problem said, in English, and still 360 px wide.
        await page.select_option("#category", "noise")
        await page.wait_for_timeout(600)
        await page.click("button.send")
        await page.wait_for_selector(".problem")
        problems = " ".join(await page.locator(".problem").all_inner_texts())
        assert "consent box" in problems and "no place yet" in problems
        await fits(page)
        # A pin: the map is shown (JavaScript on) and a tap fills the place's fields.
        await page.wait_for_selector("#report-map.leaflet-container")
        box = await page.locator("#report-map").bounding_box()
        assert box is not None and box["width"] <= PHONE_WIDTH
        await page.locator("#report-map").click()
        assert await page.input_value("#lat") != ""
        # The tap is somewhere in Vietnam's middle at zoom 5; put it on Bỉm Sơn exactly.
        await page.fill("#lat", "20.0740")
        await page.fill("#lon", "105.9120")
        await fill_and_send(page)
        await choose_ward_and_send(page)
        await page.wait_for_selector("#code")
        code = await page.inner_text("#code")
        assert await page.get_attribute("#case-link", "href") == f"/r/{code}?lang=en"
        await fits(page)
        assert tiles and all(t.startswith(f"http://localhost:{port}/tiles/") for t in tiles)
        assert refused == []
        await context.close()
    async with sessions() as s:
        assert (await s.scalars(select(Ticket.channel))).one() == "web"
