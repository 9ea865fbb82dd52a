"""The public case page /r/{code} against the running service: a report through its life,
hiding and showing again, photos blurred on the server until published, hostile paths,
and a search of every public answer for the reporter, the polluter, notes and staff."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import (
    AuditEvent,
    Photo,
    Reporter,
    ReporterIdentity,
    Ticket,
    TicketNote,
    Unit,
    utcnow,
)
from backend.services.deadlines import Policies
from backend.services.media_store import LocalStore
from backend.services.photos import StoredImage, read_photo, store_photo
from backend.services.workflow import Action, Actor, apply
from backend.timeutil import format_local
from tests.e2e.conftest import running
from tests.e2e.staff_http import Visitor, base_url, form_token, staff_account, web_settings
from tests.factories import PHOTO, make_ticket, make_user
from tests.fakes.telegram_api import FakeTelegram

POLICIES = Policies.load()


@pytest.fixture
def mode() -> str:
    return "polling"


PASSWORD = "a long and private passphrase"
# What the reporter, the polluter and staff left: none of it is ever public.
PHONE = "+84912345678"
CHAT_ID = "777001234"
NAME = "Nguyễn Văn Bí Mật"
POLLUTER = "Công ty Hóa Chất Kín Đáo"
NOTE = "Ghi chú nội bộ: hàng xóm nghi ngờ"
STAFF_NAME = "Trần Thị Cán Bộ"
DESCRIPTION = "Bãi rác sau nhà số 12 của tôi"


def noisy_jpeg(seed: int = 1, size: tuple[int, int] = (800, 600)) -> bytes:
    """A photo with detail (noise), so that a blurred copy is much smaller."""
    image = Image.effect_noise(size, 80 + seed).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


async def stored(settings: Settings, seed: int) -> StoredImage:
    return await store_photo(LocalStore(settings.media_dir), noisy_jpeg(seed), 10**7)


@dataclass
class World:
    code: str
    ticket_id: int
    pseudonym: str
    evidence: StoredImage


async def reported(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    days_ago: int = 40,
    chat_id: str = CHAT_ID,
) -> World:
    """A report made days_ago with a photo, by a reporter with a name, phone and chat,
    naming a polluter."""
    evidence = await stored(settings, 1)
    async with sessions() as s, s.begin():
        ticket = await make_ticket(
            s,
            chat_id=chat_id,
            photo=evidence.as_dict(),
            now=utcnow() - timedelta(days=days_ago),
        )
        ticket.polluter = POLLUTER
        ticket.description = DESCRIPTION
        identity = await s.get(ReporterIdentity, ticket.reporter_id)
        assert identity is not None
        identity.display_name, identity.phone = NAME, PHONE
        reporter = await s.get(Reporter, ticket.reporter_id)
        assert reporter is not None
        return World(ticket.code, ticket.id, reporter.pseudonym, evidence)


async def act(
    sessions: async_sessionmaker[AsyncSession],
    ticket_id: int,
    action: Action,
    actor: Actor,
    after: timedelta,
) -> None:
    """An action taken `after` the report was received."""
    async with sessions() as s, s.begin():
        ticket = await s.get(Ticket, ticket_id)
        assert ticket is not None
        await apply(s, ticket, action, actor, POLICIES, now=ticket.created_at + after)


async def page(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as r:
        return r.status, await r.text()


def steps(html: str) -> list[str]:
    """The history's lines, as text."""
    found = re.findall(r'<li class="(?:step [^"]*|next)">(.*?)</li>', html, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", f).split()) for f in found]


async def test_a_report_through_its_life_on_its_public_page(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    world = await reported(sessions, settings)
    async with sessions() as s, s.begin():
        staff = await make_user(s, "ward_staff", "W14812")
        handler = await Actor.of_user(s, staff)
    await staff_account(sessions, "leader", PASSWORD, role="ward_leader")
    async with running(settings), Visitor() as visitor:
        http = visitor.http
        url = f"{base}/r/{world.code}"
        status, html = await page(http, url)
        assert status == 200
        assert "Đổ rác, xả rác trái phép" in html and "Phường Bỉm Sơn" in html
        assert "Thanh Hóa" in html and "20.074, 105.912" in html
        lines = steps(html)
        assert lines[0].endswith("Tiếp nhận phản ánh")
        # Received 40 days ago and never classified: the next step is overdue.
        assert lines[-1].startswith("Tiếp theo: phân loại phản ánh") and "quá hạn" in lines[-1]
        assert "Kết quả xử lý" not in html

        system = Actor.system()
        classify = Action("classify", competence="ward")
        await act(sessions, world.ticket_id, classify, system, timedelta(hours=1))
        await act(sessions, world.ticket_id, Action("assign"), system, timedelta(hours=1))
        # Taken up thirty days later: well past the 8 working hours it had.
        await act(sessions, world.ticket_id, Action("claim"), handler, timedelta(days=30))
        lines = steps((await page(http, url))[1])
        assert "Phân loại phản ánh" in lines[1] and lines[1].endswith("đúng hạn")
        assert "Chuyển tới UBND Phường Bỉm Sơn để xử lý" in lines[2]
        assert lines[2].endswith("đúng hạn")
        assert "Đơn vị xử lý nhận phản ánh" in lines[3] and lines[3].endswith("trễ hạn")
        assert lines[-1].startswith("Tiếp theo: trả lời kết quả xử lý")

        result = await stored(settings, 2)
        minute = timedelta(days=30, minutes=1)
        for action in ("verify", "confirm"):
            await act(sessions, world.ticket_id, Action(action), handler, minute)
        answer = Action("answer", result="Đã thu gom 2 tấn rác.", photos=[result.as_dict()])
        await act(sessions, world.ticket_id, answer, handler, timedelta(days=30, minutes=2))
        status, html = await page(http, url)
        lines = steps(html)
        assert "Trả lời kết quả xử lý" in lines[-1] and lines[-1].endswith("đúng hạn")
        assert "Đã thu gom 2 tấn rác." in html and "Đã có kết quả" in html
        assert "Tiếp theo" not in html
        # The result photo is public only once staff publish it.
        async with sessions() as s:
            result_id = await s.scalar(
                select(Photo.id).where(Photo.ticket_id == world.ticket_id, Photo.kind == "result")
            )
        photo_url = f"{base}/r/{world.code}/photos/{result_id}.jpg"
        assert "Ảnh kết quả xử lý" not in html
        assert (await page(http, photo_url))[0] == 404
        await visitor.log_in(base, "leader", PASSWORD)
        published = await visitor.post_form(
            base,
            f"/tickets/{world.code}",
            f"/tickets/{world.code}/photos/{result_id}/public",
            {"do": "publish"},
        )
        assert published.status == 303
        status, html = await page(http, url)
        assert "Ảnh kết quả xử lý" in html and f"/photos/{result_id}.jpg" in html
        async with http.get(photo_url) as r:
            assert r.status == 200 and await r.read() == result_bytes(settings, result)

        status, english = await page(http, f"{url}?lang=en")
        lines = steps(english)
        assert lines[0].endswith("Report received")
        assert lines[3].endswith("late") and lines[-1].endswith("on time")
        assert "Illegal dumping" in english and "Photos of the result" in english
    async with sessions() as s:
        audited = list(
            await s.scalars(
                select(AuditEvent.note).where(
                    AuditEvent.ticket_id == world.ticket_id, AuditEvent.action == "publish_photo"
                )
            )
        )
    assert audited == [f"result {result_id}"]


def result_bytes(settings: Settings, image: StoredImage) -> bytes:
    """What the media store holds for a photo."""
    name = f"{image.sha256[:2]}/{image.sha256}.jpg"
    return (settings.media_dir / name).read_bytes()


async def test_a_hidden_case_answers_exactly_as_an_unknown_code_until_shown_again(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    world = await reported(sessions, settings, days_ago=1)
    await staff_account(sessions, "operator1", PASSWORD, role="operator", unit="P38")
    await staff_account(sessions, "clerk", PASSWORD, role="ward_staff")
    ticket_page = f"/tickets/{world.code}"
    visibility = f"/tickets/{world.code}/public"
    async with running(settings), Visitor() as visitor, Visitor() as clerk:
        http = visitor.http
        url = f"{base}/r/{world.code}"
        unknown = await page(http, f"{base}/r/38-2601-99999")
        malformed = await page(http, f"{base}/r/not-a-code")
        # The same page, but for the address it echoes in its language switch.
        assert unknown[0] == malformed[0] == 404
        assert unknown[1].replace("38-2601-99999", "") == malformed[1].replace("not-a-code", "")
        assert (await page(http, url))[0] == 200
        # Ward staff may not hide a case; nobody may without a reason.
        await clerk.log_in(base, "clerk", PASSWORD)
        # (The form is not on their page: sent with the token of one that is.)
        clerk_page = (await clerk.get(f"{base}{ticket_page}")).text
        assert f'action="{visibility}"' not in clerk_page
        token = form_token(clerk_page, f"{ticket_page}/notes")
        form = {"do": "hide", "reason": "Không muốn công khai", "csrf": token}
        refused = await clerk.request("POST", f"{base}{visibility}", data=form)
        assert refused.status == 403
        await visitor.log_in(base, "operator1", PASSWORD)
        hide = {"do": "hide", "reason": "x"}
        short = await visitor.post_form(base, ticket_page, visibility, hide)
        assert short.status == 422
        assert (await page(http, url))[0] == 200
        done = await visitor.post_form(
            base, ticket_page, visibility, {"do": "hide", "reason": "Đang có tranh chấp đất"}
        )
        assert done.status == 303
        async with aiohttp.ClientSession() as anonymous:
            for query in ("", "?lang=en"):
                status, hidden = await page(anonymous, f"{url}{query}")
                _, missing = await page(anonymous, f"{base}/r/38-2601-99999{query}")
                assert status == 404
                assert hidden.replace(world.code, "") == missing.replace("38-2601-99999", "")
            photo_id = await evidence_id(sessions, world.ticket_id)
            blurred = f"{url}/photos/{photo_id}/blurred.jpg"
            assert (await page(anonymous, blurred))[0] == 404
        staff_view = await visitor.get(f"{base}{ticket_page}")
        assert "Đang có tranh chấp đất" in staff_view.text
        shown = await visitor.post_form(
            base, ticket_page, visibility, {"do": "unhide", "reason": "Đã giải quyết tranh chấp"}
        )
        assert shown.status == 303
        assert (await page(http, url))[0] == 200
    async with sessions() as s:
        trail = list(
            await s.execute(
                select(AuditEvent.action, AuditEvent.note)
                .where(AuditEvent.ticket_id == world.ticket_id)
                .where(AuditEvent.action.in_(["hide", "unhide"]))
                .order_by(AuditEvent.id)
            )
        )
    assert [tuple(r) for r in trail] == [
        ("hide", "Đang có tranh chấp đất"),
        ("unhide", "Đã giải quyết tranh chấp"),
    ]


async def evidence_id(sessions: async_sessionmaker[AsyncSession], ticket_id: int) -> int:
    async with sessions() as s:
        found = await s.scalar(
            select(Photo.id).where(Photo.ticket_id == ticket_id, Photo.kind == "evidence")
        )
    assert found is not None
    return found


async def test_evidence_is_blurred_on_the_server_until_published(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    world = await reported(sessions, settings, days_ago=1)
    other = await reported(sessions, settings, days_ago=2, chat_id="777005555")
    mine, theirs = (
        await evidence_id(sessions, world.ticket_id),
        await evidence_id(sessions, other.ticket_id),
    )
    original = await read_photo(LocalStore(settings.media_dir), world.evidence.sha256)
    assert original is not None
    await staff_account(sessions, "leader", PASSWORD, role="ward_leader")
    async with running(settings), Visitor() as staff, aiohttp.ClientSession() as http:
        url = f"{base}/r/{world.code}"
        html = (await page(http, url))[1]
        assert f"/photos/{mine}/blurred.jpg" in html and f"/photos/{mine}.jpg" not in html
        async with http.get(f"{url}/photos/{mine}/blurred.jpg") as r:
            assert r.status == 200 and r.content_type == "image/jpeg"
            blurred = await r.read()
        assert blurred != original.data and len(blurred) < len(original.data) // 4
        with Image.open(io.BytesIO(blurred)) as shown:
            assert max(shown.size) <= 240
        # Every way to the original is closed while it is unpublished.
        for path in (
            f"{url}/photos/{mine}.jpg",
            f"{base}/r/{other.code}/photos/{mine}.jpg",
            f"{base}/r/{other.code}/photos/{mine}/blurred.jpg",
        ):
            assert (await page(http, path))[0] == 404, path
        async with http.get(f"{base}/media/{world.evidence.sha256}", allow_redirects=False) as r:
            assert r.status == 303 and original.data not in await r.read()
        # Another report's photo is not reachable through this report's address.
        assert (await page(http, f"{url}/photos/{theirs}/blurred.jpg"))[0] == 404
        await staff.log_in(base, "leader", PASSWORD)
        form = {"do": "publish"}
        action = f"/tickets/{world.code}/photos/{mine}/public"
        assert (await staff.post_form(base, f"/tickets/{world.code}", action, form)).status == 303
        # Not a photo of this ticket: refused, and nothing changes.
        wrong = f"{base}/tickets/{world.code}/photos/{theirs}/public"
        token = form_token((await staff.get(f"{base}/tickets/{world.code}")).text, action)
        refused = await staff.request("POST", wrong, data={**form, "csrf": token})
        assert refused.status == 404
        async with http.get(f"{url}/photos/{mine}.jpg") as r:
            assert r.status == 200 and await r.read() == original.data
        assert (await page(http, f"{base}/r/{other.code}/photos/{theirs}.jpg"))[0] == 404
        unpublish = {"do": "unpublish"}
        assert (
            await staff.post_form(base, f"/tickets/{world.code}", action, unpublish)
        ).status == 303
        assert (await page(http, f"{url}/photos/{mine}.jpg"))[0] == 404


async def test_hostile_paths_and_methods(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    world = await reported(sessions, settings, days_ago=1)
    photo = await evidence_id(sessions, world.ticket_id)
    async with running(settings), aiohttp.ClientSession() as http:
        _, unknown = await page(http, f"{base}/r/38-2601-99999")
        for path in (
            "/r/..%2F..%2Fetc%2Fpasswd",
            "/r/%00",
            f"/r/{world.code}%00",
            "/r/" + "9" * 5000,
            "/r/38-2601-" + "0" * 200,
            f"/r/%20{world.code}",
            f"/r/{world.code}%0A",
            "/r/%E2%80%AE38-2601-00001",
        ):
            async with http.get(f"{base}{path}") as r:
                # (A NUL in the path is refused before any route: 400 for every path.)
                assert r.status in (400, 404, 414), path
                if r.status == 404:
                    body = await r.text()
                    assert body.split("</header>")[1] == unknown.split("</header>")[1], path
        for path in (
            f"/r/{world.code}/photos/{'9' * 40}.jpg",
            f"/r/{world.code}/photos/-1.jpg",
            f"/r/{world.code}/photos/{photo}/../../{photo}.jpg",
            f"/r/{world.code}/photos/{photo}%00.jpg",
            f"/r/{world.code}/photos/{photo}/sharp.jpg",
        ):
            async with http.get(f"{base}{path}") as r:
                assert r.status in (400, 404), path
                assert not r.content_type.startswith("image/"), path
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            async with http.request(method, f"{base}/r/{world.code}", data=b"x") as r:
                assert r.status == 405, method
        async with http.get(f"{base}/r/{world.code}?lang=xx&lang=en&x=%3Cscript%3E") as r:
            html = await r.text()
            assert r.status == 200 and 'lang="vi"' in html and "<script>" not in html


async def test_no_public_answer_carries_the_reporter_the_polluter_notes_or_staff(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    world = await reported(sessions, settings, days_ago=3)
    result = await stored(settings, 3)
    async with sessions() as s, s.begin():
        staff = await make_user(s, "ward_staff", "W14812")
        staff.display_name = STAFF_NAME
        operator = await make_user(s, "operator", "P38")
        operator.display_name = STAFF_NAME + " Hai"
        handler = await Actor.of_user(s, staff)
        triage = await Actor.of_user(s, operator)
        s.add(TicketNote(ticket_id=world.ticket_id, user_id=staff.id, text=NOTE))
        # A second report of the same problem, joined with the first.
        joined = await make_ticket(s, chat_id="777009999")
        joined_code, joined_id = joined.code, joined.id
    await act(sessions, world.ticket_id, Action("classify", competence="ward"), triage, timedelta())
    await act(sessions, world.ticket_id, Action("assign"), triage, timedelta())
    await act(sessions, joined_id, Action("merge", case_code=world.code), triage, timedelta())
    for step in ("claim", "verify", "confirm"):
        await act(sessions, world.ticket_id, Action(step), handler, timedelta(minutes=1))
    answer = Action("answer", result="Đã xử lý xong.", photos=[result.as_dict()])
    await act(sessions, world.ticket_id, answer, handler, timedelta(minutes=2))
    async with sessions() as s, s.begin():
        for photo in await s.scalars(select(Photo).where(Photo.ticket_id == world.ticket_id)):
            photo.public = photo.kind == "result"
        joined_pseudonym = await s.scalar(
            select(Reporter.pseudonym)
            .join(Ticket, Ticket.reporter_id == Reporter.id)
            .where(Ticket.id == joined_id)
        )
    secrets = [PHONE, PHONE[3:], CHAT_ID, NAME, POLLUTER, NOTE, STAFF_NAME, DESCRIPTION]
    secrets += [world.pseudonym, str(joined_pseudonym)]
    async with running(settings), aiohttp.ClientSession() as http:
        bodies: dict[str, bytes] = {}
        urls = []
        for code in (world.code, joined_code):
            for query in ("", "?lang=en"):
                urls.append(f"{base}/r/{code}{query}")
        for url in list(urls):
            async with http.get(url) as r:
                assert r.status == 200, url
                html = await r.text()
            bodies[url] = html.encode()
            urls += [f"{base}{src}" for src in re.findall(r'src="(/r/[^"]+)"', html)]
        urls.append(f"{base}/r/38-2601-99999")
        for url in urls:
            async with http.get(url) as r:
                bodies[url] = await r.read() + str(r.headers).encode()
        assert any(u.endswith("/blurred.jpg") for u in urls)
        assert any(re.search(r"/photos/\d+\.jpg$", u) for u in urls)
        joined_page = bodies[f"{base}/r/{joined_code}"].decode()
        assert f"({world.code}, 2 phản ánh)" in joined_page
        assert "Gộp cùng các phản ánh khác" in joined_page and "Đã xử lý xong." in joined_page
    for url, body in bodies.items():
        for secret in secrets:
            assert secret.encode() not in body, (url, secret)
            assert secret.encode("utf-16-le") not in body


async def test_a_notice_through_telegram_links_to_the_case_page(
    chat_settings: Settings, api: FakeTelegram, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The outbox worker words a notice when it sends it, with the public address."""
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="8201", language="en")
        code = ticket.code
        classify = Action("classify", competence="ward")
        await apply(s, ticket, classify, Actor.system(), POLICIES)
        await apply(s, ticket, Action("assign"), Actor.system(), POLICIES)
    async with running(chat_settings):
        [sent] = await api.wait_sent(8201, 1)
    assert sent.text is not None and f"Report {code} has been sent to" in sent.text
    assert f"{chat_settings.public_url}/r/{code}?lang=en" in sent.text


async def test_a_rejection_and_an_extension_say_public_words_and_no_typed_reason(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    rejected = await reported(sessions, settings, days_ago=1)
    extended = await reported(sessions, settings, days_ago=1, chat_id="777006666")
    typed = "theo lời ông Tư hàng xóm"
    async with sessions() as s, s.begin():
        operator = await Actor.of_user(s, await make_user(s, "operator", "P38"))
        leader = await Actor.of_user(s, await make_user(s, "ward_leader", "W14812"))
    refusal = Action("reject", reason="spam", note=typed)
    await act(sessions, rejected.ticket_id, refusal, operator, timedelta(hours=1))
    for step in (Action("classify", competence="ward"), Action("assign")):
        await act(sessions, extended.ticket_id, step, operator, timedelta(hours=1))
    until = utcnow() + timedelta(days=20)
    longer = Action("extend", reason=typed, due=until)
    await act(sessions, extended.ticket_id, longer, leader, timedelta(hours=2))
    async with running(settings), aiohttp.ClientSession() as http:
        html = (await page(http, f"{base}/r/{rejected.code}"))[1]
        lines = steps(html)
        assert "Không tiếp nhận xử lý: tin rác hạn" in lines[-1]
        assert lines[-1].endswith("đúng hạn")
        assert "Tiếp theo" not in html and "Không tiếp nhận xử lý" in html
        english = (await page(http, f"{base}/r/{rejected.code}?lang=en"))[1]
        assert "Not taken up: spam" in english
        html = (await page(http, f"{base}/r/{extended.code}"))[1]
        assert f"Gia hạn thời gian xử lý đến {format_local(until)}" in html
        assert f"hạn {format_local(until)}" in steps(html)[-1]
    for body in (html, english):
        assert typed not in body


async def test_a_reopening_is_worded_by_who_reopened(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Only a reporter's reopening says the reporter found it not fixed; one by staff
    says staff are looking at the result again."""
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    by_reporter = await reported(sessions, settings, days_ago=2)
    by_staff = await reported(sessions, settings, days_ago=2, chat_id="777007777")
    async with sessions() as s, s.begin():
        operator = await Actor.of_user(s, await make_user(s, "operator", "P38"))
        staff = await Actor.of_user(s, await make_user(s, "ward_staff", "W14812"))
        reporter_id = (await s.get(Ticket, by_reporter.ticket_id)).reporter_id  # type: ignore[union-attr]
    reporter = Actor(role="reporter", reporter_id=reporter_id)
    for world, who in ((by_reporter, reporter), (by_staff, operator)):
        for n, (step, actor) in enumerate(
            [
                (Action("classify", competence="ward"), operator),
                (Action("assign"), operator),
                (Action("claim"), staff),
                (Action("verify"), staff),
                (Action("confirm"), staff),
                (Action("answer", result="Đã thu gom.", photos=[PHOTO]), staff),
                (Action("reopen"), who),
            ],
            1,
        ):
            await act(sessions, world.ticket_id, step, actor, timedelta(hours=n))
    async with running(settings), aiohttp.ClientSession() as http:
        mine = " | ".join(steps((await page(http, f"{base}/r/{by_reporter.code}"))[1]))
        theirs = " | ".join(steps((await page(http, f"{base}/r/{by_staff.code}"))[1]))
        english = " | ".join(steps((await page(http, f"{base}/r/{by_staff.code}?lang=en"))[1]))
    assert "Mở lại: người phản ánh báo chưa được khắc phục" in mine
    assert "Mở lại: cán bộ xem xét lại kết quả" in theirs and "người phản ánh" not in theirs
    assert "Reopened: staff are looking at the result again" in english


async def test_staff_see_no_public_link_for_a_report_joined_with_a_hidden_case(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    case = await reported(sessions, settings, days_ago=1)
    joined = await reported(sessions, settings, days_ago=1, chat_id="777008888")
    await staff_account(sessions, "operator1", PASSWORD, role="operator", unit="P38")
    async with sessions() as s, s.begin():
        report = await s.get(Ticket, joined.ticket_id)
        assert report is not None
        report.case_id = case.ticket_id
    async with running(settings), Visitor() as visitor:
        await visitor.log_in(base, "operator1", PASSWORD)
        link = 'class="public-link"'
        assert link in (await visitor.get(f"{base}/tickets/{joined.code}")).text
        async with sessions() as s, s.begin():
            hidden = await s.get(Ticket, case.ticket_id)
            assert hidden is not None
            hidden.hidden_at = utcnow()
        for code in (case.code, joined.code):
            assert link not in (await visitor.get(f"{base}/tickets/{code}")).text
            async with aiohttp.ClientSession() as anonymous:
                assert (await page(anonymous, f"{base}/r/{code}"))[0] == 404


async def test_a_reclassification_to_another_unit_is_said_and_one_that_keeps_it_is_not(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    world = await reported(sessions, settings, days_ago=2)
    async with sessions() as s, s.begin():
        operator = await Actor.of_user(s, await make_user(s, "operator", "P38"))
    for n, step in enumerate(
        [
            Action("classify", competence="ward"),
            Action("assign"),
            Action("reclassify", urgency="urgent", competence="ward"),  # the same unit
            Action("reclassify", competence="province"),
        ],
        1,
    ):
        await act(sessions, world.ticket_id, step, operator, timedelta(hours=n))
    async with sessions() as s:
        ticket = await s.get(Ticket, world.ticket_id)
        assert ticket is not None
        unit = await s.get(Unit, ticket.unit_id)
        assert unit is not None and "Sở" in unit.name
    async with running(settings), aiohttp.ClientSession() as http:
        lines = steps((await page(http, f"{base}/r/{world.code}"))[1])
        english = steps((await page(http, f"{base}/r/{world.code}?lang=en"))[1])
    passed = [line for line in lines if "Chuyển lại tới" in line]
    assert len(passed) == 1 and unit.name in passed[0]
    assert any(f"Passed on to {unit.name} for handling" in line for line in english)
