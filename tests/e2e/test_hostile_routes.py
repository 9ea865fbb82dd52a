"""A hostile request on every route of the web app (the chat webhooks have their own fuzz
test): odd path values, hostile query strings, and bodies that are too long, not UTF-8,
not a form, or a form with every field filled with junk, sent anonymously and with a
signed-in session and its CSRF token. No answer may be a server error."""

from __future__ import annotations

import asyncio
import io
import re
from collections import Counter
from itertools import product

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.cli import build_app
from backend.config import Settings
from tests.e2e.conftest import running
from tests.e2e.staff_http import sign_in
from tests.factories import make_ticket, make_user

PASSWORD = "a long and private passphrase"
JUNK = (
    "x" * 1_500,
    "-1",
    "99999999999999999999999999999",
    "1e400",
    "NaN",
    "9999-99-99",
    "2026-02-30",
    "'; DROP TABLE tickets; --",
    "<script>alert(1)</script>",
    "🌊" * 100,
    "\u202e\ufeff\ud7ff",
    "../../etc/passwd",
    " ",
)
FIELDS = (
    "action", "reason", "result", "note", "text", "due", "case", "competence", "urgency",
    "unit", "username", "role", "name", "telegram", "do", "phone", "description", "ward",
    "point", "place", "category", "polluter", "nature", "address", "password", "current",
    "new", "again", "new_password", "confirm", "photo", "photos",
)  # fmt: skip
QUERIES = (
    "view=all&category=" + "x" * 5000,
    "view=%FF%FE&state=closed&urgency=urgent&from=9999-99-99&to=0000-00-00",
    "month=2999-12&period=cut25&province=99&ward=99999&category=dumping",
    "month=9999-12&lang=en",
    "from=2026-01-01&to=2025-01-01&category=%E1%BB%93",
    "next=//evil.example&error=" + "e" * 3000 + "&done=1",
)


def paths(canonical: str, code: str) -> list[str]:
    """Concrete paths for a route pattern, with ordinary and odd values."""
    if "{" not in canonical:
        return [canonical]
    values = {
        "code": [code, "x" * 3000, "38-2612-" + "9" * 40, "%F0%9F%8C%8A", "..%2F..%2Fetc"],
        "id": ["1", "9" * 40],
        "sha256": ["0" * 64],
        "ext": ["csv", "xlsx"],
        "kind": ["full"],
        "expires": ["9" * 12],
        "signature": ["0" * 32],
    }
    names = re.findall(r"\{(\w+)\}", canonical)
    found = []
    for combo in product(*(values.get(n, ["1"]) for n in names)):
        path = canonical
        for name, value in zip(names, combo, strict=True):
            path = path.replace("{" + name + "}", value, 1)
        found.append(path)
    return found


MULTIPART = "multipart/form-data; boundary=x"


def bodies(csrf: str) -> list[tuple[bytes | aiohttp.FormData, str | None]]:
    """(body, content type): forms of junk with the right CSRF token, and worse."""
    made: list[tuple[bytes | aiohttp.FormData, str | None]] = []
    for junk in JUNK:
        form = aiohttp.FormData({"csrf": csrf, **dict.fromkeys(FIELDS, junk)})
        made.append((form, None))
    multipart = aiohttp.FormData()
    multipart.add_field("csrf", csrf)
    for name in FIELDS:
        multipart.add_field(name, io.BytesIO(b"\x00\xff" * 100), filename="../x.jpg")
    made.append((multipart, None))
    made += [
        (b"csrf=" + csrf.encode() + b"&text=%FF%00&do=%C0", "application/x-www-form-urlencoded"),
        (b'{"csrf": "' + csrf.encode() + b'", "action": "claim"}', "application/json"),
        (b"[" * 5000, "application/json"),
        (b"\xff\xfe\x00garbage", "text/plain"),
        (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n", MULTIPART),
        (b"", None),
        (
            b"--x\r\nContent-Disposition: form-data; name=text\r\n"
            b"Content-Type: text/plain; charset=bogus-charset\r\n\r\nabc\r\n--x--\r\n",
            MULTIPART,
        ),
        (
            b"--x\r\nContent-Disposition: form-data; name=_charset_\r\n\r\n"
            + b"u" * 40 + b"\r\n--x--\r\n",
            MULTIPART,
        ),
        (b"--x\r\nno colon in this header line\r\n\r\nabc\r\n--x--\r\n", MULTIPART),
        (b"--x\r\nX-Long: " + b"h" * 9000 + b"\r\n\r\nabc\r\n--x--\r\n", MULTIPART),
    ]  # fmt: skip
    return made


@pytest.fixture
def mode() -> str:
    return "polling"


async def test_no_route_answers_a_hostile_request_with_a_server_error(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        code = (await make_ticket(s, chat_id="9601")).code
        admin = (await make_user(s, "admin", None, password=PASSWORD)).username
    app = build_app(chat_settings)
    routes = sorted(
        {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None
            and route.method in ("GET", "POST")
            # The chat platforms' webhooks have a fuzz test of their own.
            and not route.resource.canonical.startswith(("/telegram/", "/zalo/", "/static"))
        }
    )
    # What changes the session, then what ends it, last: the sweep keeps its session.
    routes.sort(key=lambda r: ("logout" in r[1], "password" in r[1], r))
    seen: Counter[int] = Counter()
    failures: list[str] = []
    async with (
        running(chat_settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        aiohttp.ClientSession() as anonymous,
    ):
        base = chat_settings.public_url or ""
        csrf = await sign_in(http, base, admin, PASSWORD)
        # Fields that pass the first checks and are wrong further in.
        for field, junk in (("name", "x" * 1_500), ("telegram", "1" * 100), ("unit", "W" * 90)):
            form = {"csrf": csrf, "username": "trainee", "role": "ward_staff", "unit": "W14812"}
            async with http.post(f"{base}/admin/users", data={**form, field: junk}) as r:
                seen[r.status] += 1
                if r.status >= 500:
                    failures.append(f"POST /admin/users {field}: {r.status}")
        for (method, canonical), client in product(routes, (http, anonymous)):
            for path in paths(canonical, code):
                tries: list[tuple[str, bytes | aiohttp.FormData | None, str | None]]
                if method == "GET":
                    tries = [(f"{base}{path}?{q}", None, None) for q in ("", *QUERIES)]
                else:
                    tries = [(f"{base}{path}", b, t) for b, t in bodies(csrf)]
                for url, body, content_type in tries:
                    headers: dict[str, str] = {"Content-Type": content_type} if content_type else {}
                    async with client.request(
                        method, url, data=body, headers=headers, allow_redirects=False
                    ) as r:
                        await r.read()
                        seen[r.status] += 1
                        if r.status >= 500:
                            failures.append(f"{method} {url[:120]} {content_type}: {r.status}")
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
    print(f"hostile routes: {sum(seen.values())} requests, statuses {dict(sorted(seen.items()))}")
    assert failures == [], "\n".join(failures)


async def raw(base: str, request: bytes) -> bytes:
    """Send bytes as they are (what a client library would not) and read the answer."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    return answer


async def test_cookies_headers_and_lengths_that_are_not_what_they_say(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Cookies and a CSRF header that are not UTF-8, a form sent in chunks without a
    length, a length far over the limit: client errors, never a server error."""
    async with sessions() as s, s.begin():
        code = (await make_ticket(s, chat_id="9602")).code
    cookies = (
        b"hotline_session=\xff\xfe",
        b"hotline_device=\xff\xfe.abc",
        b"hotline_login_csrf=\xff\xfe",
        b"hotline_session=" + b"a" * 43 + b"; hotline_login_csrf=\xc3\x28",
    )
    targets = (
        b"GET /queue",
        b"GET /login",
        b"POST /login",
        b"POST /logout",
        b"GET /api/v1/tickets",
        b"POST /api/v1/tickets/" + code.encode() + b"/actions",
        b"POST /tickets/" + code.encode() + b"/notes",
    )
    answers: Counter[bytes] = Counter()
    async with running(chat_settings):
        base = chat_settings.public_url or ""
        body = b"csrf=\xff\xfe&username=a&password=b&text=x"
        for target, cookie in product(targets, cookies):
            request = (
                target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Cookie: " + cookie + b"\r\nX-CSRF-Token: \xff\xfe\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            answers[(await raw(base, request)).split(b" ", 2)[1]] += 1
        chunked = await raw(
            base,
            b"POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\na=b&c\r\n0\r\n\r\n",
        )
        huge = await raw(
            base,
            b"POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 99999999999\r\n\r\na=b",
        )
    assert not [status for status in answers if status.startswith(b"5")], answers
    assert chunked.split(b" ", 2)[1] == b"411"
    assert huge.split(b" ", 2)[1] == b"413"
