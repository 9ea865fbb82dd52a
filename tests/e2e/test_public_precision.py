"""What every public answer tells of a report's place: the point rounded to 3 decimals
(about 100 m) on the case page, the map's clusters, points and distances, and Open311 in
JSON and XML; never the address text someone typed. And the small things found in the
same review: Open311's dates out of range, the count of a joined case's reports, a NUL
byte on /map/data, and Open311's per-address limit by IPv6 /64."""

from __future__ import annotations

import json
from ipaddress import ip_network
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Ticket, utcnow
from tests.e2e.conftest import running
from tests.e2e.open311_http import FORMATS, IN_BIM_SON, ROOT, errors_of, partner_key
from tests.e2e.staff_http import base_url, web_settings
from tests.e2e.test_open311 import _clear_of_minute_end
from tests.factories import make_ticket

# A resident's own position, to 7 decimals (a phone's GPS).
LAT, LON = 20.0812345, 105.8634567
# What would tell it to better than about 100 m.
EXACT = ("20.0812", "105.8634")
# What someone typed for the place: a person, a phone number and the polluter.
TYPED = "Sau nha ong Nguyen Van Bao, 0987654321, canh xuong go POLLUTERCO"
TYPED_PARTS = ("Nguyen Van Bao", "0987654321", "POLLUTERCO")
BOX = f"{LON - 0.01},{LAT - 0.01},{LON + 0.01},{LAT + 0.01}"


def leaks(body: str) -> list[str]:
    return [s for s in (*EXACT, *TYPED_PARTS) if s in body]


async def _text(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as r:
        return r.status, await r.text()


async def public_answers(http: aiohttp.ClientSession, base: str, code: str) -> dict[str, str]:
    """Every public answer that shows this report, by what was asked."""
    answers: dict[str, str] = {}
    for lang in ("vi", "en"):
        answers[f"page {lang}"] = (await _text(http, f"{base}/r/{code}?lang={lang}"))[1]
    for zoom in (6, 10, 13, 15, 17, 19):
        answers[f"map z{zoom}"] = (await _text(http, f"{base}/map/data?bbox={BOX}&zoom={zoom}"))[1]
        # The box's edge moved across the exact point must not tell it either.
        for edge in (LAT - 0.0003, LAT + 0.0003):
            box = f"{LON - 0.01},{edge},{LON + 0.01},{LAT + 0.01}"
            answers[f"map z{zoom} {edge}"] = (
                await _text(http, f"{base}/map/data?bbox={box}&zoom={zoom}")
            )[1]
    for near in (f"{LAT},{LON}", f"{LAT + 0.00004},{LON - 0.00003}", "20.1,105.9"):
        answers[f"near {near}"] = (
            await _text(http, f"{base}/map/data?bbox={BOX}&zoom=19&near={quote(near)}")
        )[1]
    for fmt in FORMATS:
        answers[f"open311 {fmt}"] = (
            await _text(http, f"{base}{ROOT}/requests/{code}.{fmt}?jurisdiction_id=38")
        )[1]
        answers[f"open311 list {fmt}"] = (
            await _text(http, f"{base}{ROOT}/requests.{fmt}?jurisdiction_id=38")
        )[1]
    return answers


async def test_no_public_answer_tells_the_exact_point_or_the_typed_address(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    key = await partner_key(sessions)
    async with sessions() as s, s.begin():
        chat = await make_ticket(s, lat=LAT, lon=LON)
        # A typed address kept on a chat report too (the geocoder's fallback).
        chat.address = f"{TYPED} (gọi 0987654321)"
        chat.location_source = "address"
        chat_code = chat.code
    async with running(settings), aiohttp.ClientSession() as http:
        base = base_url(settings)
        form = {
            "api_key": key,
            "service_code": "debris",
            "lat": str(LAT),
            "long": str(LON),
            "address_string": TYPED,
        }
        async with http.post(f"{base}{ROOT}/requests.json", data=form) as r:
            assert r.status == 200, await r.text()
            posted = (await r.json())[0]["service_request_id"]
        for code in (posted, chat_code):
            answers = await public_answers(http, base, code)
            assert {k: leaks(v) for k, v in answers.items() if leaks(v)} == {}
            # The place is still shown: rounded, on the page, the map and Open311.
            assert "20.081, 105.863" in answers["page vi"]
            assert "(rounded to about 100 m)" in answers["page en"]
            points = json.loads(answers["map z19"])["points"]
            assert [(p["lat"], p["lon"]) for p in points if p["code"] == code] == [
                (20.081, 105.863)
            ]
            single = json.loads(answers["map z13"])["clusters"]
            assert {(c["lat"], c["lon"]) for c in single} == {(20.081, 105.863)}
            items = json.loads(answers[f"near {LAT},{LON}"])["list"]["items"]
            # About 55 m from the rounded point, told to 0.1 km.
            assert {i["distance_km"] for i in items} == {0.1}
            one = json.loads(answers["open311 json"])[0]
            assert (one["lat"], one["long"]) == (20.081, 105.863)
            assert one["address"].endswith(", Thanh Hóa")  # the ward and province
    async with sessions() as s:
        # The text is kept for staff, only never shown publicly.
        kept = await s.scalar(select(Ticket.address).where(Ticket.code == posted))
        assert kept is not None and "0987654321" in kept


async def test_a_place_given_by_its_ward_only_says_within_the_ward(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, lat=LAT, lon=LON)
        ticket.location_source, ticket.address = "ward_name", TYPED
    async with running(settings), aiohttp.ClientSession() as http:
        status, page = await _text(http, f"{base_url(settings)}/r/{ticket.code}?lang=en")
    assert status == 200
    assert "within the ward" in page and leaks(page) == []


@pytest.mark.parametrize("fmt", FORMATS)
async def test_open311_dates_out_of_range_are_a_400_in_the_specs_format(
    fmt: str, database_url: str, tmp_path: Path
) -> None:
    settings = web_settings(database_url, tmp_path)
    dates = [
        {"start_date": "0001-01-01T00:00:00+07:00"},
        {"end_date": "9999-12-31T23:59:59-07:00"},
        {"start_date": "0001-01-01T00:00:00+07:00", "end_date": "9999-12-31T23:59:59-07:00"},
    ]
    async with running(settings), aiohttp.ClientSession() as http:
        for query in dates:
            async with http.get(f"{base_url(settings)}{ROOT}/requests.{fmt}", params=query) as r:
                body = await r.read()
                assert r.status == 400, (query, body)
                assert r.content_type == ("application/json" if fmt == "json" else "text/xml")
                assert [c for c, _ in errors_of(fmt, body)] == [400]


async def test_a_joined_reports_page_counts_only_the_reports_shown(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    async with sessions() as s, s.begin():
        case = await make_ticket(s)
        joined = await make_ticket(s)
        hidden = await make_ticket(s)
        await s.flush()
        joined.state, joined.case_id = "merged", case.id
        hidden.state, hidden.case_id = "merged", case.id
        hidden.hidden_at, hidden.hidden_reason = utcnow(), "names a neighbour"
    async with running(settings), aiohttp.ClientSession() as http:
        status, page = await _text(http, f"{base_url(settings)}/r/{joined.code}?lang=en")
    assert status == 200
    assert f"({case.code}, 2 reports)" in page


async def test_a_nul_byte_on_the_map_is_a_json_400(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    async with sessions() as s, s.begin():
        await make_ticket(s)
    queries = [
        f"bbox={quote(BOX)}&category=%00",
        f"bbox={quote(BOX)}&ward=0000%00",
        f"bbox={quote(BOX)}&near=20%00,105",
        f"bbox={quote(BOX)}&status=open%00",
        f"bbox={quote(BOX)}&zoom=1%00",
        f"bbox={quote(BOX)}&lang=en%00",
        f"bbox={quote(BOX)}%00",
        "bbox=%00",
        f"bbox={quote(BOX)}&%00=1",
    ]
    async with running(settings), aiohttp.ClientSession() as http:
        for query in queries:
            async with http.get(f"{base_url(settings)}/map/data?{query}") as r:
                body = await r.text()
                assert r.status in (200, 400), (query, body)
                assert r.content_type == "application/json", (query, r.status, body)
                if r.status == 400:
                    assert json.loads(body)["error"].startswith("bad_"), (query, body)
        # The ward's figures answer JSON too.
        async with http.get(f"{base_url(settings)}/map/wards/14812%00") as r:
            assert (r.status, r.content_type) == (400, "application/json")


async def test_open311_posts_from_one_ipv6_64_share_the_per_address_limit(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(
        database_url,
        tmp_path,
        trusted_proxies=[ip_network("127.0.0.1")],
        open311_posts_per_address_per_minute=2,
    )
    key = await partner_key(sessions)
    form = {"api_key": key, "service_code": "noise", **IN_BIM_SON}
    url = f"{base_url(settings)}{ROOT}/requests.json"
    statuses = []
    await _clear_of_minute_end()
    async with running(settings), aiohttp.ClientSession() as http:
        # Three addresses of one household's /64, then one of another network.
        for client in (
            "2001:db8:1:2::1",
            "2001:db8:1:2::abcd",
            "2001:db8:1:2:ffff::9",
            "2001:db8:1:3::1",
        ):
            async with http.post(url, data=form, headers={"X-Forwarded-For": client}) as r:
                statuses.append(r.status)
    assert statuses == [200, 200, 429, 200]
    async with sessions() as s:
        assert await s.scalar(select(func.count()).where(Ticket.channel == "open311")) == 3
