"""The first login in headless Chromium: a one-time password from `create-user` leads to
the change-password page (usable at 360 px), which refuses weak choices with a message
saying what to do; the change signs out the account's other browsers and keeps this one."""

from __future__ import annotations

from playwright.async_api import Browser
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.services.accounts import create_user
from tests.browser.conftest import ARTIFACTS, log_in
from tests.browser.test_dashboard import no_sideways_scroll

NAME = "nguyen.thi.lan"
CHOSEN = "Sông Mã xa rồi Tây Tiến ơi"


async def test_the_first_login_chooses_a_password_that_ends_other_sessions(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        once = (await create_user(s, NAME, "ward_staff", unit_code="W14812")).one_time_password
    elsewhere = await log_in(browser, served, NAME, once)
    await elsewhere.wait_for_url("**/password")
    page = await log_in(browser, served, NAME, once, width=360)
    await page.wait_for_url("**/password")
    assert "Bạn cần đặt mật khẩu mới" in await page.inner_text("main")

    # Nothing else opens until the password is changed.
    await page.goto("/queue")
    assert page.url.endswith("/password")
    answer = await page.evaluate(
        "async () => { const r = await fetch('/api/v1/tickets');"
        " return [r.status, (await r.json()).error]; }"
    )
    assert answer == [403, "password_change_required"]

    async def choose(new: str, again: str | None = None, current: str = once) -> str:
        await page.fill("input[name=current]", current)
        await page.fill("input[name=new]", new)
        await page.fill("input[name=again]", new if again is None else again)
        await page.click("form.password-change button[type=submit]")
        await page.wait_for_load_state()
        return await page.inner_text("main")

    assert "Mật khẩu hiện tại không đúng" in await choose(CHOSEN, current="not it")
    assert "hai lần không giống nhau" in await choose(CHOSEN, CHOSEN + "!")
    assert "ít nhất 12 ký tự" in await choose("ngắn quá")
    await no_sideways_scroll(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "password-360.png"), full_page=True)
    assert "quá phổ biến" in await choose("qwerty123456")
    assert "quá phổ biến" in await choose("Password2024!")
    assert "không được là tên đăng nhập" in await choose(NAME)
    assert "khác mật khẩu hiện tại" in await choose(once)
    shown = await choose(CHOSEN)
    assert "Đã đổi mật khẩu" in shown
    assert await page.locator("header a[href='/password']").count() == 1

    # This browser carries on; the one signed in before is signed out.
    await page.goto("/queue")
    assert page.url.endswith("/queue")
    await elsewhere.goto("/queue")
    assert elsewhere.url.endswith("/login")

    # The one-time password is gone; the chosen one opens the queue straight away.
    stale = await log_in(browser, served, NAME, once)
    assert "Sai tên đăng nhập hoặc mật khẩu" in await stale.inner_text(".error")
    fresh = await log_in(browser, served, NAME, CHOSEN)
    await fresh.wait_for_url("**/queue")
