"""The statistics page in headless Chromium: the figures and the four server-drawn charts
for a month of tickets, the filters, the XLSX and CSV downloads, scope, and the 360 px
phone layout."""

from __future__ import annotations

import io

from openpyxl import load_workbook
from playwright.async_api import Browser
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import utcnow
from tests.browser.conftest import ARTIFACTS, log_in
from tests.browser.test_dashboard import account, no_sideways_scroll
from tests.stats_month import OCT_FIRST, OCT_LAST, W1, build_month, chosen, expected, overdue_now


async def test_a_supervisor_reads_and_downloads_the_month(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        await build_month(s)
    password = await account(sessions, "hoa", "supervisor", "P38")
    stories = chosen(OCT_FIRST, OCT_LAST, province="38")
    figures = expected(stories)
    page = await log_in(browser, served, "hoa", password, width=360)
    await page.click("text=Thống kê")
    await page.fill("input[name=month]", "2026-10")
    await page.click("button:has-text('Xem')")
    await page.wait_for_url("**/stats?month=2026-10*")
    assert await page.text_content("#kpi-received") == str(figures["received"])
    assert await page.text_content("#kpi-cases") == str(figures["cases"])
    # Numbers written the Vietnamese way: a decimal comma.
    share = figures["answered"] / figures["cases"] * 100
    answered = f"{figures['answered']} · {share:.1f} %".replace(".", ",")
    assert await page.text_content("#kpi-answered") == answered
    on_time = f"{figures['on_time'] / figures['answered'] * 100:.1f} %".replace(".", ",")
    assert await page.text_content("#kpi-on-time") == on_time
    assert "." not in on_time
    assert await page.text_content("#kpi-overdue") == str(overdue_now(stories, utcnow()))
    rating = f"{figures['mean_rating']:.2f}".replace(".", ",")
    assert await page.text_content("#kpi-rating") == rating

    # The charts: a bar per category and per ward with reports, 12 months of columns,
    # and the on-time line.
    categories = {s.category for s in stories}
    assert await page.locator("#chart-category svg g").count() == len(categories)
    labels = await page.locator("#chart-category svg text.label").all_text_contents()
    assert "Đổ rác, xả rác trái phép" in labels
    values = await page.locator("#chart-category svg text.value").all_text_contents()
    assert values[0] == str(sum(s.category == "dumping" for s in stories))
    ward_labels = await page.locator("#chart-ward svg text.label").all_text_contents()
    assert sorted(ward_labels) == ["Phường Bỉm Sơn", "Phường Hạc Thành"]
    ticks = await page.locator("#chart-trend svg text.tick:not(.axis-count)").all_text_contents()
    assert ticks[0] == "11/25" and ticks[-1] == "10/26" and len(ticks) == 12
    # A y-axis: from 0 to the busiest month's reports.
    counts = await page.locator("#chart-trend svg text.axis-count").all_text_contents()
    assert counts[0] == str(figures["received"]) and counts[-1] == "0", counts
    assert await page.locator("#chart-on-time polyline").count() == 1
    # Every column of every table, the rates at the right end included, is on the
    # 360 px screen, each value under its column's name.
    cells = page.locator(".report-table td")
    edges = await cells.evaluate_all(
        "cells => cells.map(c => { const r = c.getBoundingClientRect();"
        " return [r.left, r.right, r.width, c.innerText,"
        " getComputedStyle(c, '::before').content]; })"
    )
    assert edges and all(left >= 0 and right <= 360 and w > 0 for left, right, w, *_ in edges)
    rates = [label for *_, text, label in edges if text.endswith("%")]
    assert rates and all("Tỷ lệ" in label or "đúng hạn" in label for label in rates), rates[:3]
    await no_sideways_scroll(page)
    await page.screenshot(path=str(ARTIFACTS / "stats-360.png"), full_page=True)

    # The download buttons give the same report as files.
    async with page.expect_download() as xlsx_info:
        await page.click("text=Tải XLSX")
    download = await xlsx_info.value
    assert download.suggested_filename == "bao-cao-2026-10-38.xlsx"
    book = load_workbook(io.BytesIO((await download.path()).read_bytes()))
    assert book.sheetnames == ["Tổng hợp", "Theo lĩnh vực", "Theo xã, phường", "Thời gian xử lý"]
    assert book["Tổng hợp"]["C8"].value == figures["received"]
    async with page.expect_download() as csv_info:
        await page.click("text=Tải CSV")
    text = (await (await csv_info.value).path()).read_text(encoding="utf-8-sig")
    assert "Đơn vị: Tỉnh Thanh Hóa" in text.splitlines()[1]

    # Filters: one ward, one category.
    await page.select_option("select[name=ward]", W1)
    await page.select_option("select[name=category]", "dumping")
    await page.click("button:has-text('Xem')")
    mine = [s for s in chosen(OCT_FIRST, OCT_LAST, ward=W1) if s.category == "dumping"]
    assert await page.text_content("#kpi-received") == str(len(mine))
    assert "Lĩnh vực: Đổ rác, xả rác trái phép" in (await page.text_content(".report-title") or "")


async def test_ward_staff_see_their_ward_only(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        await build_month(s)
    password = await account(sessions, "lan", "ward_staff", f"W{W1}")
    page = await log_in(browser, served, "lan", password)
    await page.goto("/stats?month=2026-10")
    mine = expected(chosen(OCT_FIRST, OCT_LAST, ward=W1))
    assert await page.text_content("#kpi-received") == str(mine["received"])
    assert "Đơn vị: Phường Bỉm Sơn, Tỉnh Thanh Hóa" in (
        await page.text_content(".report-title") or ""
    )
    assert await page.locator("select[name=ward]").count() == 0
    refused = await page.goto("/stats?month=2026-10&province=01")
    assert refused is not None and refused.status == 403
    refused = await page.goto("/stats.xlsx?month=2026-10&ward=14797")
    assert refused is not None and refused.status == 403
    bad = await page.goto("/stats?month=2026-13")
    assert bad is not None and bad.status == 400
