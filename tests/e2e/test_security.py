"""What a security review tries against the running service: photo references that point
outside the media store, the body of an unauthenticated request, security headers and
the server banner, tickets and photos out of scope, download names, hostile query
strings and form values, and the access log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.cli import build_app
from backend.config import Settings
from backend.models import Photo, Ticket
from backend.services.deadlines import Policies
from backend.services.media_store import LocalStore
from backend.services.photos import read_photo, store_photo
from backend.services.workflow import Action, Actor, apply
from backend.web.api import TEST_USER_HEADER
from backend.web.security import ACCESS_LOG, REQUEST_ID_HEADER, JsonAccessLog, access_logger
from tests.e2e.conftest import running
from tests.e2e.staff_http import sign_in
from tests.factories import make_ticket, make_user
from tests.fakes.images import image_bytes
from tests.fakes.telegram_api import FakeTelegram

POLICIES = Policies.load()
PASSWORD = "a long and private passphrase"


class _Keep(logging.Handler):
    """Keeps the records a logger emits (formatted with their tracebacks)."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def mode() -> str:
    return "polling"


async def handling_ticket(
    sessions: async_sessionmaker[AsyncSession], chat: str
) -> tuple[str, str, str]:
    """A chat report in Phường Bỉm Sơn that its ward staff is handling: (code, the
    staff's username, another staff member's username in the same ward)."""
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id=chat)
        staff = await make_user(s, "ward_staff", "W14812")
        colleague = await make_user(s, "ward_staff", "W14812")
        actor = await Actor.of_user(s, staff)
        for action in ("classify", "assign"):
            await apply(s, ticket, Action(action, competence="ward"), Actor.system(), POLICIES)
        for action in ("claim", "verify", "confirm"):
            await apply(s, ticket, Action(action), actor, POLICIES)
        return ticket.code, staff.username, colleague.username


async def test_an_answer_cannot_send_a_file_from_outside_the_media_store(
    chat_settings: Settings,
    api: FakeTelegram,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    secret = image_bytes("JPEG", color="red")
    outside = tmp_path / "elsewhere" / "private"
    outside.parent.mkdir()
    outside.with_suffix(".jpg").write_bytes(secret)
    code, staff, colleague = await handling_ticket(sessions, "8101")
    media_dir = chat_settings.media_dir
    media_dir.mkdir(parents=True, exist_ok=True)
    relative = "../" * len(media_dir.resolve().parts) + str(outside.resolve()).lstrip("/")
    # read_photo never builds a path from text that is not a photo id.
    assert await read_photo(LocalStore(media_dir), relative) is None
    assert await read_photo(LocalStore(media_dir), "../elsewhere/private") is None

    async with running(chat_settings), aiohttp.ClientSession() as http:
        url = f"{chat_settings.public_url}/api/v1/tickets/{code}/actions"

        async def answer(user: str, photos: list[str]) -> tuple[int, str]:
            body = {"action": "answer", "result": "Đã dọn", "photos": photos}
            async with http.post(url, json=body, headers={TEST_USER_HEADER: user}) as r:
                return r.status, (await r.json())["error"] if r.status != 200 else ""

        for reference in (relative, "../elsewhere/private", "B" * 64, "b" * 63, "b" * 65):
            assert (await answer(staff, [reference]))[0] == 422
        # A real photo id, but uploaded by someone else and not on this ticket.
        async with http.post(
            f"{chat_settings.public_url}/api/v1/media",
            data=image_bytes("PNG"),
            headers={TEST_USER_HEADER: colleague},
        ) as r:
            theirs = (await r.json())["sha256"]
        assert await answer(staff, [theirs]) == (422, "unknown_photo")
        async with http.post(
            f"{chat_settings.public_url}/api/v1/media",
            data=image_bytes("JPEG", color="blue"),
            headers={TEST_USER_HEADER: staff},
        ) as r:
            mine = (await r.json())["sha256"]
        assert await answer(staff, [mine]) == (200, "")
        sent = await api.wait_sent(8101, 2)
    photos = [s.photo for s in sent if s.photo is not None]
    assert photos and secret not in photos
    async with sessions() as s:
        ticket = (await s.scalars(select(Ticket).where(Ticket.code == code))).one()
        kept = list(await s.scalars(select(Photo.sha256).where(Photo.ticket_id == ticket.id)))
    assert mine in kept and theirs not in kept


async def test_without_a_login_the_answer_does_not_depend_on_the_body(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    code, _, _ = await handling_ticket(sessions, "8102")
    stored = await store_photo(LocalStore(chat_settings.media_dir), image_bytes(), 10**7)
    bodies: list[bytes] = [
        json.dumps({"action": "answer", "result": "x", "photos": [stored.sha256]}).encode(),
        json.dumps({"action": "answer", "result": "x", "photos": ["../../etc/hostname"]}).encode(),
        json.dumps({"action": "answer", "result": "x", "photos": ["f" * 64]}).encode(),
        b"{not json",
        b"[" * 5000,
        b"x" * (2 * 1024 * 1024),
    ]
    async with running(chat_settings), aiohttp.ClientSession() as http:
        answers = set()
        for body in bodies:
            async with http.post(
                f"{chat_settings.public_url}/api/v1/tickets/{code}/actions",
                data=io.BytesIO(body),
                headers={"Content-Type": "application/json"},
            ) as r:
                answers.add((r.status, await r.read()))
    assert len(answers) == 1
    assert next(iter(answers))[0] == 401


async def test_every_response_carries_the_security_headers(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = chat_settings.model_copy(
        update={"map_tile_url": "https://{s}.tiles.example.vn/{z}/{x}/{y}.png"}
    )
    async with running(settings), aiohttp.ClientSession() as http:
        base = settings.public_url
        for path in ("/login", "/healthz", "/api/v1/tickets", "/nowhere", "/static/app.css"):
            async with http.get(f"{base}{path}", allow_redirects=False) as r:
                headers = r.headers
                await r.read()
            csp = headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
            assert "frame-ancestors 'none'" in csp
            assert "img-src 'self' data: blob: https://*.tiles.example.vn" in csp
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "same-origin"
            assert "geolocation=(self)" in headers["Permissions-Policy"]
            assert "camera=(self)" in headers["Permissions-Policy"]
            assert "Server" not in headers, path
            assert "Strict-Transport-Security" not in headers  # served over plain HTTP
            assert re.fullmatch(r"[0-9a-f]{16}", headers[REQUEST_ID_HEADER])
            if path.startswith("/static/"):
                assert headers.get("Cache-Control") != "no-store"
            else:
                assert headers["Cache-Control"] == "no-store", path
        # A request the server cannot even parse names no software either, and its
        # request line (a query may hold personal data) and address stay out of the log.
        logged: list[logging.LogRecord] = []
        keep = _Keep(logged)
        logging.getLogger("aiohttp.server").addHandler(keep)
        try:
            host, port = (base or "").removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /queue?phone=0912345678\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        finally:
            logging.getLogger("aiohttp.server").removeHandler(keep)
    assert raw.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    assert b"aiohttp" not in raw.lower() and b"python" not in raw.lower()
    assert logged, "the refusal is logged"
    for record in logged:
        line = keep.format(record)
        assert "0912345678" not in line and "127.0.0.1" not in line, line


async def test_https_deployments_send_hsts(chat_settings: Settings) -> None:
    port = chat_settings.public_url.rsplit(":", 1)[1] if chat_settings.public_url else ""
    settings = chat_settings.model_copy(
        update={"public_url": f"https://127.0.0.1:{port}", "telegram_mode": "polling"}
    )
    async with (
        running(settings),
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as r,
    ):
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_a_ticket_or_photo_out_of_scope_looks_missing(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="8103")
        code = ticket.code
        evidence = (await s.scalars(select(Photo.sha256).where(Photo.ticket_id == ticket.id))).one()
        outsider = (await make_user(s, "ward_staff", "W00004", password=PASSWORD)).username
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = chat_settings.public_url or ""
        csrf = await sign_in(http, base, outsider, PASSWORD)
        answers = {}
        for name, path in (
            ("hidden", f"/tickets/{code}"),
            ("missing", "/tickets/38-0000-99999"),
            ("hidden photo", f"/media/{evidence}"),
            ("missing photo", f"/media/{'0' * 64}"),
        ):
            async with http.get(f"{base}{path}") as r:
                answers[name] = (r.status, await r.read())
        for name, code_used in (("hidden note", code), ("missing note", "38-0000-99999")):
            async with http.post(
                f"{base}/tickets/{code_used}/notes",
                data={"csrf": csrf, "text": "xem"},
                allow_redirects=False,
            ) as r:
                answers[name] = (r.status, await r.read())
    assert answers["hidden"] == answers["missing"] and answers["hidden"][0] == 404
    assert answers["hidden photo"] == answers["missing photo"]
    assert answers["hidden photo"][0] == 404
    assert answers["hidden note"] == answers["missing note"]
    assert answers["hidden note"][0] == 404


async def test_download_names_hold_no_raw_query_text(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        admin = (await make_user(s, "admin", None, password=PASSWORD)).username
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = chat_settings.public_url or ""
        await sign_in(http, base, admin, PASSWORD)
        async with http.get(f"{base}/stats.csv?month=2026-10&category=dumping") as r:
            assert r.status == 200
            disposition = r.headers["Content-Disposition"]
        # Not a category code at all: 400; one that looks like a code but is none: 404.
        for hostile, status in (
            ('dump"ing', 400),
            ("x%0D%0ASet-Cookie:%20a=b", 400),
            ("%E1%BB%93", 400),
            ("no_such_category", 404),
        ):
            async with http.get(f"{base}/stats.csv?month=2026-10&category={hostile}") as r:
                assert r.status == status, hostile
                assert "Set-Cookie" not in r.headers
                assert "Content-Disposition" not in r.headers
    assert disposition == (
        'attachment; filename="bao-cao-2026-10-dumping.csv"; '
        "filename*=UTF-8''bao-cao-2026-10-dumping.csv"
    )


def test_a_content_disposition_cannot_be_broken_by_its_name() -> None:
    from backend.web.stats import content_disposition

    header = content_disposition('bá"o\r\ncáo;.csv')
    assert "\r" not in header and "\n" not in header
    fallback = re.search(r'filename="([^"]*)"', header)
    assert fallback is not None and fallback.group(1) == "b__o__c_o_.csv"
    assert header.endswith("filename*=UTF-8''b%C3%A1%22o%0D%0Ac%C3%A1o%3B.csv")


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        # An unknown category; what was typed is kept (without the NUL).
        (
            {"category": "no-such-category", "description": "Khói đen\x00 từ lò gạch"},
            ["Hãy chọn một loại ô nhiễm trong danh sách.", "Khói đen từ lò gạch"],
        ),
        # A place in another province (Hà Nội) for a Thanh Hóa operator.
        (
            {"category": "dumping", "description": "Rác", "ward": "00004"},
            ["Nơi này thuộc tỉnh/thành khác"],
        ),
        # The caller's details without their consent, or with a text they were not read.
        (
            {"category": "dumping", "description": "Rác", "phone": "0912 000 222"},
            ["Chỉ ghi thông tin người gọi khi họ đã nghe và đồng ý"],
        ),
        (
            {"category": "dumping", "description": "Rác", "name": "Bà Tư", "consent": "v0"},
            ["Chỉ ghi thông tin người gọi khi họ đã nghe và đồng ý", "Bà Tư"],
        ),
    ],
)
async def test_a_phone_report_the_operator_cannot_file_is_refused_with_a_message(
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    fields: dict[str, str],
    shown: list[str],
) -> None:
    async with sessions() as s, s.begin():
        operator = (await make_user(s, "operator", "P38", password=PASSWORD)).username
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = chat_settings.public_url or ""
        csrf = await sign_in(http, base, operator, PASSWORD)
        form = {"csrf": csrf, "ward": "14812", **fields}
        async with http.post(f"{base}/intake/phone", data=form) as r:
            status, page = r.status, await r.text()
    assert status == 422
    for words in shown:
        assert words in page
    async with sessions() as s:
        assert list(await s.scalars(select(Ticket))) == []


@pytest.mark.parametrize(
    "query", ["state=%00", "state=a%00b", "%00=1", "overdue=%00&state=received"]
)
async def test_nul_in_a_query_is_a_client_error(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession], query: str
) -> None:
    async with sessions() as s, s.begin():
        staff = (await make_user(s, "ward_staff", "W14812")).username
    async with running(chat_settings), aiohttp.ClientSession() as http:
        base = chat_settings.public_url
        async with http.get(
            f"{base}/api/v1/tickets?{query}", headers={TEST_USER_HEADER: staff}
        ) as r:
            assert r.status == 400
        async with http.get(f"{base}/api/v1/tickets/38%00", headers={TEST_USER_HEADER: staff}) as r:
            assert r.status == 400


async def test_the_access_log_is_json_without_queries_bodies_or_identities(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id="8104")
        code = ticket.code
        staff = (await make_user(s, "ward_staff", "W14812")).username
    records: list[logging.LogRecord] = []
    logger = access_logger()
    keep = _Keep(records)
    logger.addHandler(keep)
    assert chat_settings.public_url is not None
    port = int(chat_settings.public_url.rsplit(":", 1)[1])
    runner = web.AppRunner(
        build_app(chat_settings), access_log_class=JsonAccessLog, access_log=logger
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            base = chat_settings.public_url
            async with http.get(
                f"{base}/api/v1/tickets/{code}?secret-query=1",
                headers={TEST_USER_HEADER: staff},
            ) as r:
                request_id = r.headers[REQUEST_ID_HEADER]
            async with http.post(
                f"{base}/login", data={"username": staff, "password": "private-words"}
            ) as r:
                assert r.status == 403  # no login token: refused
            async with http.get(f"{base}/nowhere") as r:
                assert r.status == 404
    finally:
        await runner.cleanup()
        logger.removeHandler(keep)
    lines = [json.loads(r.getMessage()) for r in records]
    assert [(x["method"], x["route"], x["status"]) for x in lines] == [
        ("GET", "/api/v1/tickets/{code}", 200),
        ("POST", "/login", 403),
        ("GET", None, 404),
    ]
    assert all(set(x) == {"at", "method", "route", "status", "ms", "request_id"} for x in lines)
    assert lines[0]["request_id"] == request_id
    text = "\n".join(r.getMessage() for r in records)
    for private in (code, "secret-query", staff, "private-words", "127.0.0.1"):
        assert private not in text
    assert logger.name == ACCESS_LOG


async def test_security_txt_names_the_configured_contact_only(chat_settings: Settings) -> None:
    async with (
        running(chat_settings),
        aiohttp.ClientSession() as http,
        http.get(f"{chat_settings.public_url}/.well-known/security.txt") as r,
    ):
        assert r.status == 404  # nothing configured: no contact is made up
    settings = chat_settings.model_copy(
        update={"security_contact": "mailto:an-toan@stnmt.thanhhoa.gov.vn"}
    )
    async with (
        running(settings),
        aiohttp.ClientSession() as http,
        http.get(f"{settings.public_url}/.well-known/security.txt") as r,
    ):
        assert r.status == 200
        lines = (await r.text()).splitlines()
    assert lines[0] == "Contact: mailto:an-toan@stnmt.thanhhoa.gov.vn"
    assert lines[1].startswith("Expires: ") and lines[2] == "Preferred-Languages: vi, en"
    with pytest.raises(ValueError, match="security_contact"):
        Settings(security_contact="javascript:alert(1)")


def test_https_is_recognised_in_any_case() -> None:
    from backend.web.security import security_headers

    for url, https in (
        ("HTTPS://Hotline.Example.vn", True),
        ("https://hotline.example.vn/", True),
        ("http://hotline.example.vn", False),
        ("httpsx://hotline.example.vn", False),
    ):
        settings = Settings(public_url=url)
        assert settings.served_over_https is https
        assert ("Strict-Transport-Security" in security_headers(settings)) is https
