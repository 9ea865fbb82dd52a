"""The public map in headless Chromium on a 360 px phone: the list below the map, a
filter that changes both the markers and the list, a list item that opens the case page,
and "cases near me" from a granted location ordering the list by distance."""

from __future__ import annotations

from playwright.async_api import Browser, Geolocation, Page, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.browser.test_dashboard import no_sideways_scroll
from tests.e2e.test_public_map import BA_DINH, add_case

# Where the phone says it is: Bỉm Sơn, Thanh Hóa.
HERE: Geolocation = {"latitude": 20.0740, "longitude": 105.9120}


async def marker_total(page: Page) -> int:
    """The cases the map's markers stand for: cluster counts, or one per point."""
    counts = await page.locator(".cluster-icon").all_text_contents()
    points = await page.locator("path.leaflet-interactive").count()
    return sum(int(c) for c in counts) + points


async def test_the_map_and_list_on_a_phone_with_a_filter_and_near_me(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        # Around the phone, 1.3 km, 550 m and 110 m away, and two farther off.
        far = await add_case(s, at=(20.0857, 105.9120))
        middle = await add_case(s, at=(20.0790, 105.9120), category="burning")
        near = await add_case(s, at=(20.0750, 105.9120))
        answered = await add_case(
            s, ward=BA_DINH, state="answered", answered_days_ago=2, category="noise"
        )
        elsewhere = await add_case(s, at=(20.30, 105.60))
        hidden = await add_case(s, hidden=True)
    context = await browser.new_context(
        viewport={"width": 360, "height": 740},
        base_url=served,
        geolocation=HERE,
        permissions=["geolocation"],
    )
    page = await context.new_page()
    await page.goto("/map")
    items = page.locator("ol.cases li[data-code]")  # drawn by the script
    await expect(items).to_have_count(5)
    assert hidden.code not in await page.locator("ol.cases").inner_text()
    assert await marker_total(page) == 5
    await no_sideways_scroll(page)
    # On a phone the list comes below the map, as wide as the screen.
    map_box = await page.locator("[data-public-map]").bounding_box()
    list_box = await page.locator("section.case-list").bounding_box()
    assert map_box is not None and list_box is not None
    assert list_box["y"] >= map_box["y"] + map_box["height"] and list_box["width"] > 300

    # A filter changes the markers and the list together.
    await page.select_option("select[name=category]", "noise")
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text(answered.code)
    await expect(page.locator(".cluster-icon")).to_have_text(["1"])
    assert "category=noise" in page.url  # a reload keeps the filter
    await page.select_option("select[name=category]", "")
    await expect(items).to_have_count(5)

    # Cases near me: the map goes to the phone's place, and the list is nearest first.
    await page.click("button.near")
    await expect(items).to_have_count(3)  # the view around the phone
    assert await items.evaluate_all("els => els.map(e => e.dataset.code)") == [
        near.code,
        middle.code,
        far.code,
    ]
    distances = await page.locator("ol.cases .distance").all_text_contents()
    assert distances[0] == "cách 0,1 km" and distances[-1] == "cách 1,3 km"
    assert elsewhere.code not in await page.locator("ol.cases").inner_text()
    await no_sideways_scroll(page)

    # A ward: its public figures (every case received there this year, the hidden one
    # too), and the map goes to it.
    await page.select_option("select[name=province]", "38")
    await expect(page.locator("select[name=ward] option[value='14812']")).to_have_count(1)
    await page.select_option("select[name=ward]", "14812")
    figures = page.locator("section.ward-figures")
    await expect(figures).to_be_visible()
    await expect(figures.locator(".ward-name")).to_have_text("Phường Bỉm Sơn, Thanh Hóa")
    await expect(figures.locator(".ward-cases")).to_have_text("5")
    await expect(figures.locator(".ward-on-time")).to_have_text("chưa có")
    assert "ward=14812" in page.url
    await expect(items).to_have_count(3)
    await no_sideways_scroll(page)

    # A list item opens the public case page.
    await items.first.locator("a").click()
    await page.wait_for_url(f"**/r/{near.code}")
    await context.close()
