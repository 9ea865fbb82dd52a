"""The public case page in headless Chromium on a 360 px phone, and the staff's hide and
show-again flow on the ticket page."""

from __future__ import annotations

from datetime import timedelta

from playwright.async_api import Browser
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Ticket, utcnow
from backend.services.deadlines import Policies
from backend.services.workflow import Action, Actor, apply
from tests.browser.conftest import ARTIFACTS, log_in
from tests.browser.test_dashboard import account, no_sideways_scroll
from tests.factories import PHOTO, make_ticket, make_user
from tests.fakes.telegram_api import FakeTelegram

POLICIES = Policies.load()
ANSWER = "Đã thu gom toàn bộ rác thải và lắp biển cấm đổ rác tại khu vực này. " * 3


async def answered_ticket(sessions: async_sessionmaker[AsyncSession]) -> str:
    """A report answered a few days after it came, with a long address."""
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="7401", now=utcnow() - timedelta(days=5))
        ticket.address = "Ngõ 123456789 đường Nguyễn Huệ, khu phố Bắc Sơn, Phường Bỉm Sơn"
        staff = await Actor.of_user(s, await make_user(s, "ward_staff", "W14812"))
        at = ticket.created_at
        for n, (action, who) in enumerate(
            [
                (Action("classify", competence="ward"), Actor.system()),
                (Action("assign"), Actor.system()),
                (Action("claim"), staff),
                (Action("verify"), staff),
                (Action("confirm"), staff),
                (Action("answer", result=ANSWER, photos=[PHOTO]), staff),
            ]
        ):
            await apply(s, ticket, action, who, POLICIES, now=at + timedelta(minutes=10 + n))
        return ticket.code


async def test_the_case_page_fits_a_phone(
    browser: Browser, served: str, api: FakeTelegram, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code = await answered_ticket(sessions)
    context = await browser.new_context(viewport={"width": 360, "height": 740}, base_url=served)
    page = await context.new_page()
    response = await page.goto(f"/r/{code}")
    assert response is not None and response.status == 200
    await no_sideways_scroll(page)
    history = page.locator("ol.history li")
    assert await history.count() == 7
    assert await history.first.is_visible()
    assert "Tiếp nhận phản ánh" in await history.first.inner_text()
    assert "đúng hạn" in await history.nth(1).inner_text()
    # Verification is not a step with a due time of its own.
    assert "hạn" not in await history.nth(4).inner_text()
    answer = page.locator("p.answer")
    await answer.scroll_into_view_if_needed()
    assert await answer.is_visible() and "lắp biển cấm" in await answer.inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "case-page-360.png"), full_page=True)
    await page.click("header >> text=English")
    assert "Answer given" in await page.locator("ol.history").inner_text()
    await no_sideways_scroll(page)
    await context.close()


async def test_staff_hide_a_case_and_show_it_again(
    browser: Browser, served: str, api: FakeTelegram, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code = await answered_ticket(sessions)
    password = await account(sessions, "hoa", "ward_leader", "W14812")
    staff = await log_in(browser, served, "hoa", password, width=360)
    await staff.wait_for_url("**/queue")
    public = await browser.new_page(base_url=served)
    assert (await public.goto(f"/r/{code}")).status == 200  # type: ignore[union-attr]

    await staff.goto(f"/tickets/{code}")
    await no_sideways_scroll(staff)
    form = staff.locator("form.case-visibility")
    await form.locator("input[name=reason]").fill("Đang xác minh lại thông tin")
    await form.locator("button").click()
    await staff.wait_for_url(f"**/tickets/{code}?done=ok")
    hidden = staff.locator(".hidden-case")
    assert "Đang xác minh lại thông tin" in await hidden.inner_text()
    await staff.screenshot(path=str(ARTIFACTS / "ticket-hidden-360.png"), full_page=True)
    assert "Ẩn khỏi trang công khai" in await staff.locator("ol.timeline").inner_text()
    gone = await public.goto(f"/r/{code}")
    assert gone is not None and gone.status == 404

    await form.locator("input[name=reason]").fill("Đã xác minh xong")
    await form.locator("button").click()
    await staff.wait_for_url(f"**/tickets/{code}?done=ok")
    assert await staff.locator(".hidden-case").count() == 0
    assert "Hiện lại trên trang công khai" in await staff.locator("ol.timeline").inner_text()
    back = await public.goto(f"/r/{code}")
    assert back is not None and back.status == 200
    async with sessions() as s:
        hidden_at = await s.scalar(select(Ticket.hidden_at).where(Ticket.code == code))
    assert hidden_at is None
