"""Hostile requests on every Open311 route: huge, NUL bytes, broken UTF-8, wrong types,
duplicate fields, wrong content types and methods. Each is refused in the spec's error
format, never with a server error, and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Ticket
from tests.e2e.conftest import running
from tests.e2e.open311_http import FORMATS, ROOT, errors_of, partner_key
from tests.e2e.staff_http import base_url, web_settings
from tests.factories import make_ticket

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # More bodies than one address may post in a minute by default: that limit has its
    # own test.
    return web_settings(database_url, tmp_path, open311_posts_per_address_per_minute=1000)


def _bodies(key: str) -> list[tuple[bytes, str | None, int]]:
    """(body, content type, status) for POST requests."""
    good = f"api_key={key}&service_code=dumping&lat=20.0745&long=105.9125".encode()
    return [
        (good + b"&description=" + b"x" * 70_000, FORM, 413),
        (good + b"&description=a%00b", FORM, 400),
        (good + b"&description=a\x00b", FORM, 400),
        (good + b"&descr%00iption=ab", FORM, 400),
        (good + b"&description=%FF%FE", FORM, 400),
        (good + b"\xff\xfe", FORM, 400),
        (good + b"&service_code=noise", FORM, 400),
        (good + b"&lat=20.0745", FORM, 400),
        (good + b"&api_key=" + key.encode(), FORM, 400),
        (good.replace(b"lat=20.0745", b"lat=abc"), FORM, 400),
        (good.replace(b"lat=20.0745", b"lat=NaN"), FORM, 400),
        (good.replace(b"lat=20.0745", b"lat=1e999"), FORM, 400),
        (good.replace(b"lat=20.0745", b"lat=-inf"), FORM, 400),
        (good.replace(b"lat=20.0745", b"lat=91"), FORM, 400),
        (good.replace(b"long=105.9125", b"long=" + b"9" * 400), FORM, 400),
        (good.replace(b"dumping", b"x" * 5000), FORM, 404),
        (good.replace(b"dumping", b"%F0%9F%8C%8A"), FORM, 404),
        (good + b"&attribute[nature]=" + b"z" * 3000, FORM, 400),
        (good + b"&media_url=javascript:alert(1)", FORM, 400),
        (good + b"&media_url=http://" + b"h" * 3000, FORM, 400),
        (good.replace(key.encode(), b"k" * 10_000), FORM, 403),
        (good.replace(key.encode(), b"%00"), FORM, 400),
        (b"&" * 5000, FORM, 400),
        (b"", FORM, 403),
        (b'{"api_key": "' + key.encode() + b'"}', "application/json", 400),
        (good, "text/plain", 400),
        (good, None, 400),
        (b"--x\r\nContent-Disposition: form-data; name=api_key\r\n\r\n" + key.encode()
         + b"\r\n--x--\r\n", "multipart/form-data; boundary=x", 400),
        (good, FORM + "; charset=latin-1", 200),
    ]  # fmt: skip


QUERIES = [
    ("jurisdiction_id=38&jurisdiction_id=79", 400),
    ("page_size=" + "9" * 40, 400),
    ("page=1e3", 400),
    ("page_size=%F0%9F%8C%8A", 400),
    ("start_date=" + "2" * 3000, 400),
    ("service_request_id=" + ",".join(["38-2612-00001"] * 101), 400),
    ("service_code=" + "%00", 400),
    ("status=open%00", 400),
    ("api_key=" + "a" * 5000, 403),
    ("jurisdiction_id=" + "3" * 5000, 404),
    ("lang=%FF", 200),
]


async def test_hostile_requests_on_every_route(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key = await partner_key(sessions)
    async with sessions() as s, s.begin():
        code = (await make_ticket(s)).code
    base = f"{base_url(settings)}{ROOT}"
    wrong: list[str] = []
    posted = 0
    async with running(settings), aiohttp.ClientSession() as http:

        async def check(method: str, url: str, fmt: str, expected: int, **kw: object) -> None:
            async with http.request(method, url, **kw) as r:  # type: ignore[arg-type]
                body = await r.read()
                if r.status != expected:
                    wrong.append(
                        f"{method} {url[:100]} {kw.get('headers')}: {r.status} {body[:200]!r}"
                    )
                elif expected >= 400 and errors_of(fmt, body)[0][0] != expected:
                    wrong.append(f"{method} {url[:100]}: {body[:200]!r}")

        for fmt in FORMATS:
            routes = [
                f"discovery.{fmt}",
                f"services.{fmt}",
                f"services/dumping.{fmt}",
                f"requests.{fmt}",
                f"requests/{code}.{fmt}",
            ]
            for route in routes:
                url = f"{base}/{route}"
                for method in ("PUT", "DELETE", "PATCH"):
                    await check(method, url, fmt, 405, data=b"x")
                if route != f"requests.{fmt}":
                    await check("POST", url, fmt, 405, data={"api_key": key})
                await check("GET", f"{url}?x=%00", fmt, 400)
            for query, expected in QUERIES:
                await check("GET", f"{base}/requests.{fmt}?{query}", fmt, expected)
            for junk in ("x" * 300, "..%2F..%2Fetc", "%F0%9F%8C%8A", "38-2612-" + "9" * 40):
                await check("GET", f"{base}/requests/{junk}.{fmt}", fmt, 404)
                await check("GET", f"{base}/services/{junk}.{fmt}", fmt, 404)
            # A NUL in the path: the spec's error all the same.
            await check("GET", f"{base}/requests/a%00b.{fmt}", fmt, 400)
            await check("GET", f"{base}/services/a%00b.{fmt}", fmt, 400)
            for body, kind, expected in _bodies(key):
                headers = {"Content-Type": kind} if kind else {"Content-Type": ""}
                await check(
                    "POST", f"{base}/requests.{fmt}", fmt, expected, data=body, headers=headers
                )
                posted += expected == 200
        async with http.get(f"{base_url(settings)}/healthz") as r:
            assert r.status == 200
    assert wrong == [], "\n".join(wrong)
    async with sessions() as s:
        stored = await s.scalar(select(func.count()).where(Ticket.channel == "open311"))
    # Only the well-formed ones (latin-1 named, ASCII sent) were stored.
    assert stored == posted == 2
