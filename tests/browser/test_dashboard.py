"""The staff dashboard in headless Chromium: log in, claim, answer with a photo (the
reporter's chat gets it), scoping, escaping, CSRF, login throttling, and the 360 px
phone layout."""

from __future__ import annotations

import re

import aiohttp
from playwright.async_api import Browser, Page
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Ticket, utcnow
from backend.services.accounts import create_user, set_password
from backend.services.additions import add_to_report
from backend.services.deadlines import Policies
from backend.services.workflow import Action, Actor, apply
from tests.browser.conftest import ARTIFACTS, log_in
from tests.factories import PHOTO, make_ticket
from tests.fakes.images import image_bytes
from tests.fakes.telegram_api import FakeTelegram

POLICIES = Policies.load()


async def forwarded_ticket(
    sessions: async_sessionmaker[AsyncSession], *, chat: str, description: str = "Rác"
) -> str:
    """A chat report, classified and forwarded to Phường Bỉm Sơn."""
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id=chat)
        ticket.description = description
        await apply(s, ticket, Action("classify", competence="ward"), Actor.system(), POLICIES)
        await apply(s, ticket, Action("assign"), Actor.system(), POLICIES)
        return ticket.code


async def account(
    sessions: async_sessionmaker[AsyncSession], name: str, role: str, unit: str | None
) -> str:
    """An account whose owner has already replaced the one-time password with their own
    (tests/browser/test_login.py goes through that change); returns the password."""
    password = f"{name}'s own pass phrase"
    async with sessions() as s, s.begin():
        user = (await create_user(s, name, role, unit_code=unit)).user
        await set_password(s, user, password)
    return password


async def no_sideways_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"page is {width} px wide"


async def test_claim_and_answer_with_a_photo_reaches_the_reporter(
    browser: Browser,
    served: str,
    api: FakeTelegram,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    code = await forwarded_ticket(sessions, chat="7001")
    async with sessions() as s, s.begin():
        # The resident added a photo and a few words after sending it.
        reporter = await s.scalar(select(Ticket.reporter_id).where(Ticket.code == code))
        assert reporter is not None
        added = await add_to_report(s, code, reporter, [PHOTO], "Lại đổ thêm sáng nay.", utcnow())
        assert added is not None
    password = await account(sessions, "lan", "ward_staff", "W14812")
    page = await log_in(browser, served, "lan", password, width=360)
    await page.wait_for_url("**/queue")
    assert await page.locator(f"text={code}").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await no_sideways_scroll(page)
    await page.screenshot(path=str(ARTIFACTS / "queue-360.png"), full_page=True)

    await page.click(f"text={code}")
    await page.click("form.action-claim button")
    await page.click("form.action-verify button")
    await page.click("form.action-confirm button")
    answer = page.locator("form.action-answer")
    await answer.locator("select.template").select_option(index=1)
    assert "thu gom" in await answer.locator("textarea[name=result]").input_value()
    await answer.locator("input[type=file]").set_input_files(
        {"name": "ket-qua.jpg", "mimeType": "image/jpeg", "buffer": image_bytes("JPEG")}
    )
    await answer.locator("button").click()
    await page.wait_for_selector(".ok")
    assert "Đã trả lời" in await page.inner_text("h1")
    # The resident's photo and the result's, each under its own heading; when it was
    # answered against its due time; an anonymous reporter said to be one.
    assert await page.locator(".photos.evidence_photos img").count() == 1
    assert await page.locator(".photos.added_photos img").count() == 1
    assert await page.locator(".photos.result_photos img").count() == 1
    assert "Lại đổ thêm sáng nay." in await page.inner_text("ul.additions")
    # The timeline in words: who did each step, and what the notes mean.
    timeline = await page.inner_text("ol.timeline")
    assert "Người phản ánh bổ sung thông tin" in timeline
    assert "qua Telegram, 1 ảnh" in timeline
    assert "mức độ: Thông thường; thẩm quyền:" in timeline
    assert "tới UBND Phường Bỉm Sơn" in timeline
    assert "lan (Cán bộ xã/phường, UBND Phường Bỉm Sơn)" in timeline
    for raw in ("W14812", "photo(s)", "urgency=", "competence=", "user:", "reporter:"):
        assert raw not in timeline, raw
    assert "đúng hạn" in await page.inner_text("dd.answered")
    assert "Ẩn danh" in await page.inner_text("dl.facts")
    await no_sideways_scroll(page)
    await page.screenshot(path=str(ARTIFACTS / "ticket-360.png"), full_page=True)
    assert await page.locator(".photos img").count() == 3  # evidence, addition, result
    assert await page.locator(".map .leaflet-marker-icon").count() == 1

    sent = await api.wait_sent(7001, 2)  # "sent to the ward", then the answer
    assert sent[-1].method == "sendPhoto"
    assert "thu gom" in (sent[-1].text or "") and code in (sent[-1].text or "")


async def test_another_wards_ticket_is_refused_by_url_and_by_api(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code = await forwarded_ticket(sessions, chat="7002")
    password = await account(sessions, "hoa", "ward_staff", "W00004")
    page = await log_in(browser, served, "hoa", password)
    await page.wait_for_url("**/queue")
    assert await page.locator(f"text={code}").count() == 0
    # Another ward's ticket looks exactly like one that does not exist.
    response = await page.goto(f"/tickets/{code}")
    assert response is not None and response.status == 404
    assert "Không tìm thấy phản ánh" in await page.inner_text("h1")
    hidden = await response.text()
    missing = await page.goto("/tickets/38-0000-99999")
    assert missing is not None and missing.status == 404 and await missing.text() == hidden
    api_status = await page.evaluate(
        "async (code) => (await fetch('/api/v1/tickets/' + code)).status", code
    )
    assert api_status == 404


async def test_html_in_a_description_is_shown_as_text(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>đậm</b>'
    code = await forwarded_ticket(sessions, chat="7003", description=evil)
    password = await account(sessions, "minh", "ward_staff", "W14812")
    page = await log_in(browser, served, "minh", password)
    await page.wait_for_url("**/queue")
    await page.goto(f"/tickets/{code}")
    assert await page.inner_text(".description") == evil
    assert await page.locator(".description b").count() == 0
    assert await page.evaluate("window.pwned") is None


async def test_a_form_without_its_csrf_token_is_refused(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code = await forwarded_ticket(sessions, chat="7004")
    password = await account(sessions, "tuan", "ward_staff", "W14812")
    page = await log_in(browser, served, "tuan", password)
    await page.wait_for_url("**/queue")
    # The session cookie rides along, as it would from a forged form on another site.
    refused = await page.request.post(f"/tickets/{code}/act", form={"action": "claim"})
    assert refused.status == 403
    forged = await page.request.post(
        f"/tickets/{code}/act", form={"action": "claim", "csrf": "guess"}
    )
    assert forged.status == 403
    await page.goto(f"/tickets/{code}")
    assert "Chờ nhận xử lý" in await page.inner_text("h1")  # still not claimed
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{served}/login", data={"username": "tuan", "password": password}) as r,
    ):
        assert r.status == 403  # the login form has its token too


async def test_logins_are_throttled(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    password = await account(sessions, "ha", "ward_leader", "W14812")
    colleague = await account(sessions, "hung", "ward_staff", "W14812")
    page = await log_in(browser, served, "ha", "wrong password")

    async def again(typed: str) -> None:
        """The login form the answer shows, filled in and sent once more."""
        await page.fill("input[name=username]", "ha")
        await page.fill("input[name=password]", typed)
        async with page.expect_navigation():
            await page.click("button[type=submit]")

    assert "Sai tên đăng nhập" in await page.inner_text(".error")
    for _ in range(4):
        await again("wrong password")
        assert "Sai tên đăng nhập" in await page.inner_text(".error")
    # From the sixth, each failure doubles the wait (1 s, 2 s, 4 s …): a try that comes
    # before it ends is refused, with the wait. Tried until the wait is long enough
    # for the next try to come within it however slow the machine is.
    wait = 0
    for _ in range(40):
        await again("wrong password")
        error = await page.inner_text(".error")
        found = re.search(r"Hãy chờ (\d+) giây rồi thử lại", error)
        assert found or "Sai tên đăng nhập" in error, error
        wait = int(found[1]) if found else 0
        if wait >= 4:
            break
    assert wait >= 4
    # Within the wait, even the right password is refused without a look at it.
    await again(password)
    assert "Hãy chờ" in await page.inner_text(".error")
    assert page.url.endswith("/login")
    # A colleague at the same address is not held up by Ha's failures.
    other = await log_in(browser, served, "hung", colleague)
    await other.wait_for_url("**/queue")
    await page.wait_for_timeout((wait + 1) * 1000)
    await again(password)
    assert page.url.endswith("/queue")


async def test_an_operator_files_a_phone_report(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    password = await account(sessions, "thu", "operator", "P38")
    page = await log_in(browser, served, "thu", password, width=360)
    await page.wait_for_url("**/queue")
    await page.click("a[href='/intake/phone']")
    form = page.locator("form.phone-intake")
    await form.locator("input[name=name]").fill("Nguyễn Văn An")
    await form.locator("input[name=phone]").fill("0912 000 111")
    # The caller heard the consent script and agreed.
    await form.locator("input[name=consent]").check()
    # A click on the map picks a point (cleared again: the ward is named below).
    await form.locator(".map").click()
    picked = await form.locator("input[name=point]").input_value()
    assert re.fullmatch(r"-?\d+\.\d{6}, -?\d+\.\d{6}", picked), picked
    await form.locator("input[name=point]").fill("")
    await form.locator("input[name=ward]").fill("Bỉm Sơn")
    await form.locator("select[name=category]").select_option("burning")
    await form.locator("select[name=nature]").select_option("one_off")
    await form.locator("textarea[name=description]").fill("Đốt rác bốc khói gần trường học")
    await form.locator("input[type=file]").set_input_files(
        {"name": "anh.png", "mimeType": "image/png", "buffer": image_bytes("PNG")}
    )
    await no_sideways_scroll(page)
    await form.locator("button[type=submit]").click()
    await page.wait_for_url("**/tickets/38-*")
    heading = await page.inner_text("h1")
    assert "Đã tiếp nhận" in heading and "Khẩn" in heading  # one-off: urgent
    facts = await page.inner_text(".facts")
    assert "Phường Bỉm Sơn" in facts and "Nguyễn Văn An" not in await page.content()
    assert await page.locator(".photos img").count() == 1
    # The caller's details are sealed until a triage role asks, saying why, and asking is
    # audited with the reason.
    await page.fill(".unseal input[name=reason]", "Gọi lại để hẹn xác minh")
    await page.click(".unseal button")
    identity = await page.inner_text(".identity")
    assert "Nguyễn Văn An" in identity and "+84912000111" in identity
    timeline = await page.inner_text(".timeline")
    # Who looked, and why, in the same step of the timeline.
    looked = [line for line in timeline.splitlines() if "Xem danh tính" in line]
    assert len(looked) == 1 and looked[0].endswith("· Gọi lại để hẹn xác minh"), looked
    assert "Cán bộ tiếp nhận" in looked[0]


async def test_a_phone_report_without_a_place_keeps_what_was_typed(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    password = await account(sessions, "vy", "operator", "P38")
    page = await log_in(browser, served, "vy", password)
    await page.wait_for_url("**/queue")
    await page.goto("/intake/phone")
    await page.fill("textarea[name=description]", "Xả nước thải ra kênh")
    await page.fill("input[name=point]", "48.85, 2.35")  # Paris
    await page.click("form.phone-intake button[type=submit]")
    assert "Không xác định được xã/phường" in await page.inner_text(".error")
    assert await page.input_value("textarea[name=description]") == "Xả nước thải ra kênh"


async def test_an_admin_manages_accounts_and_group_links(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    admin_password = await account(sessions, "root", "admin", None)
    staff_password = await account(sessions, "nga", "ward_staff", "W14812")
    outsider = await log_in(browser, served, "nga", staff_password)
    await outsider.wait_for_url("**/queue")
    response = await outsider.goto("/admin")
    assert response is not None and response.status == 403

    page = await log_in(browser, served, "root", admin_password)
    await page.wait_for_url("**/queue")
    await page.click("a[href='/admin']")
    form = page.locator("form.new-user")
    await form.locator("input[name=username]").fill("binh")
    await form.locator("input[name=name]").fill("Anh Bình")
    await form.locator("select[name=role]").select_option("ward_leader")
    await form.locator("input[name=unit]").fill("W14812")
    await form.locator("input[name=telegram]").fill("8123")
    await form.locator("button").click()
    once = await page.inner_text(".secret code")
    assert len(once) >= 12 and "binh" in await page.inner_text(".users")
    await page.goto("/admin")  # shown once: not on the page any more
    assert await page.locator(".secret").count() == 0
    newcomer = await log_in(browser, served, "binh", once)
    await newcomer.wait_for_url("**/password")  # a one-time password: choose one first
    row = page.locator(".users li", has_text="binh")
    await row.locator("input[name=telegram]").fill("8124")
    await row.locator("button[value=telegram]").click()
    assert "Telegram 8124" in await page.locator(".users li", has_text="binh").inner_text()

    link = page.locator("form.link-code")
    await link.locator("input[name=unit]").fill("W14812")
    await link.locator("button").click()
    code = await page.inner_text(".secret code")
    assert len(code) == 8
    await link.locator("input[name=unit]").fill("W99999")
    await link.locator("button").click()
    assert "no unit W99999" in await page.inner_text(".error")


async def test_a_leader_who_transfers_a_report_away_is_told_where_it_went(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code = await forwarded_ticket(sessions, chat="7051")
    password = await account(sessions, "hoa", "ward_leader", "W14812")
    page = await log_in(browser, served, "hoa", password)
    await page.wait_for_url("**/queue")
    await page.goto(f"{served}/tickets/{code}")
    transfer = page.locator("form.action-transfer")
    await transfer.locator("select[name=competence]").select_option("province")
    await transfer.locator("input[name=reason]").fill("Vượt thẩm quyền của phường")
    await transfer.locator("button").click()
    await page.wait_for_url("**/queue?**")
    status = await page.inner_text("p.ok[role=status]")
    assert code in status and "Sở Nông nghiệp và Môi trường" in status, status
    assert await page.locator(f"text={code}").count() == 1  # the message only, not the list


async def test_classifying_needs_a_competence(
    browser: Browser, served: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        code = (await make_ticket(s, chat_id="7061")).code
    password = await account(sessions, "tam", "operator", "P38")
    page = await log_in(browser, served, "tam", password)
    await page.wait_for_url("**/queue")
    await page.goto(f"{served}/tickets/{code}")
    classify = page.locator("form.action-classify")
    await classify.locator("button").click()
    # The browser holds the form back: nothing chosen, nothing sent.
    assert await classify.locator("select[name=competence]:invalid").count() == 1
    assert page.url.endswith(f"/tickets/{code}")
    await classify.locator("select[name=competence]").select_option("ward")
    await classify.locator("button").click()
    await page.wait_for_selector(".ok")
    async with sessions() as s:
        ticket = await s.scalar(select(Ticket).where(Ticket.code == code))
    assert ticket is not None and ticket.classified_at is not None
    assert ticket.competence == "ward"
