"""Open311 GeoReport v2 over real HTTP: the documents' shapes in JSON and XML, posting with
a partner key, every refusal in the spec's error format, hidden and merged cases, and no
reporter data in any answer."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import AuditEvent, OutboxMessage, PartnerKey, Ticket, utcnow
from backend.services.partners import revoke_key
from tests.e2e.conftest import Staff, running
from tests.e2e.open311_http import (
    FORMATS,
    IN_BIM_SON,
    IN_PARIS,
    IN_SAI_GON,
    ROOT,
    errors_of,
    parse_xml,
    partner_key,
    requests_of,
    resident_ticket,
)
from tests.e2e.staff_http import base_url, web_settings
from tests.factories import make_ticket, make_user
from tests.fakes.images import image_bytes


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return web_settings(database_url, tmp_path)


async def _get(http: aiohttp.ClientSession, url: str, **query: str) -> tuple[int, str, bytes]:
    async with http.get(url, params=query) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def _post(
    http: aiohttp.ClientSession, url: str, form: dict[str, str]
) -> tuple[int, str, bytes]:
    async with http.post(url, data=form) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


CONTENT_TYPES = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}


@pytest.mark.parametrize("fmt", FORMATS)
async def test_discovery_services_and_a_definition_have_the_specs_shape(
    settings: Settings, fmt: str
) -> None:
    settings = settings.model_copy(
        update={"open311_contact": "PAHT desk, 0237 000 000", "open311_key_service": "Ask us"}
    )
    base = f"{base_url(settings)}{ROOT}"
    async with running(settings), aiohttp.ClientSession() as http:
        status, kind, body = await _get(http, f"{base}/discovery.{fmt}")
        assert (status, kind) == (200, CONTENT_TYPES[fmt])
        if fmt == "json":
            document = json.loads(body)
            endpoint = document["endpoints"][0]
            formats = endpoint["formats"]
        else:
            root = parse_xml(body)
            assert root.tag == "discovery"
            document = {c.tag: c.text for c in root}
            endpoint_el = root.find("endpoints/endpoint")
            assert endpoint_el is not None
            endpoint = {c.tag: c.text for c in endpoint_el}
            formats = [f.text for f in endpoint_el.findall("formats/format")]
        assert document["contact"] == "PAHT desk, 0237 000 000"
        assert document["key_service"] == "Ask us"
        assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
        assert endpoint["url"] == base
        assert endpoint["type"] == "production"
        assert formats == ["application/json", "text/xml"]

        status, kind, body = await _get(http, f"{base}/services.{fmt}", lang="en")
        assert (status, kind) == (200, CONTENT_TYPES[fmt])
        if fmt == "json":
            services = json.loads(body)
        else:
            root = parse_xml(body)
            assert root.tag == "services" and all(s.tag == "service" for s in root)
            services = [{c.tag: c.text for c in s} for s in root]
        by_code = {s["service_code"]: s for s in services}
        assert len(by_code) == 13
        assert by_code["dumping"]["service_name"] == "Illegal dumping of household waste"
        assert by_code["dumping"]["metadata"] in (True, "true")
        assert by_code["dumping"]["type"] == "realtime"

        status, _, body = await _get(http, f"{base}/services/noise.{fmt}")
        assert status == 200
        if fmt == "json":
            definition = json.loads(body)
            attribute = definition["attributes"][0]
            values = [v["key"] for v in attribute["values"]]
        else:
            root = parse_xml(body)
            assert root.tag == "service_definition"
            definition = {"service_code": root.findtext("service_code")}
            found = root.find("attributes/attribute")
            assert found is not None
            attribute = {c.tag: c.text for c in found}
            values = [v.findtext("key") for v in found.findall("values/value")]
        assert definition["service_code"] == "noise"
        assert attribute["code"] == "nature"
        assert attribute["datatype"] == "singlevaluelist"
        assert attribute["required"] in (False, "false")
        assert values == ["one_off", "recurring"]


async def test_a_posted_request_is_a_routed_ticket_on_the_open311_channel(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key = await partner_key(sessions)
    base = f"{base_url(settings)}{ROOT}"
    form = {
        "api_key": key,
        "service_code": "burning",
        **IN_BIM_SON,
        "attribute[nature]": "one_off",
        "description": "Khói đen từ bãi đất trống",
        "first_name": "Lan",
        "last_name": "Nguyễn",
        "email": "lan@example.org",
        "phone": "0987654321",
        "device_id": "device-1",
        "account_id": "acct-1",
        "media_url": "https://partner.example/photo/1.jpg",
    }
    async with running(settings), aiohttp.ClientSession() as http:
        status, kind, body = await _post(http, f"{base}/requests.xml", form)
        assert (status, kind) == (200, CONTENT_TYPES["xml"]), body
        posted = requests_of("xml", body)
        assert len(posted) == 1 and set(posted[0]) == {
            "service_request_id",
            "service_notice",
            "account_id",
        }
        code = posted[0]["service_request_id"]
        assert code.startswith("38-")
        # Read back: the partner that posted it sees its description, others do not.
        _, _, own = await _get(http, f"{base}/requests/{code}.json", api_key=key)
        _, _, public = await _get(http, f"{base}/requests/{code}.json")
    mine, theirs = json.loads(own)[0], json.loads(public)[0]
    assert mine["description"].startswith("Khói đen từ bãi đất trống")
    assert theirs["description"] == ""
    assert mine["status"] == "open" and mine["service_code"] == "burning"
    assert mine["agency_responsible"] == "UBND Phường Bỉm Sơn"
    async with sessions() as s:
        ticket = await s.scalar(select(Ticket).where(Ticket.code == code))
        assert ticket is not None
        assert (ticket.channel, ticket.nature, ticket.urgency) == ("open311", "one_off", "urgent")
        assert ticket.reporter_id is None
        # The link is kept for staff to open; nothing of the partner's resident is kept.
        assert "media_url: https://partner.example/photo/1.jpg" in ticket.description
        stored = json.dumps([getattr(ticket, c.key) for c in Ticket.__table__.columns], default=str)
        for personal in ("Lan", "Nguyễn", "lan@example.org", "0987654321", "device-1", "acct-1"):
            assert personal not in stored
        posted_by = await s.scalar(
            select(AuditEvent).where(
                AuditEvent.ticket_id == ticket.id, AuditEvent.action == "open311_post"
            )
        )
        assert posted_by is not None and posted_by.note is not None
        assert posted_by.note.startswith("Cổng PAHT")


def _cases(key: str, revoked: str, other: str) -> list[tuple[str, str, dict[str, str], int]]:
    """(method, path without the format, fields, status): every refusal the spec names."""
    good = {"api_key": key, "service_code": "dumping", **IN_BIM_SON}
    return [
        ("GET", "/services/nope", {}, 404),
        ("GET", "/nothing-here", {}, 404),
        ("GET", "/requests/38-0000-99999", {}, 404),
        ("GET", "/services", {"jurisdiction_id": "99"}, 404),
        ("GET", "/services", {"jurisdiction_id": "abc"}, 404),
        ("GET", "/requests", {"jurisdiction_id": "00"}, 404),
        ("GET", "/requests", {"service_code": "dumping,nope"}, 404),
        ("GET", "/requests", {"api_key": "not-a-key"}, 403),
        ("GET", "/requests", {"start_date": "yesterday"}, 400),
        ("GET", "/requests", {"start_date": "2026-11-01T00:00:00"}, 400),
        ("GET", "/requests", {"end_date": "2026-13-01T00:00:00Z"}, 400),
        (
            "GET",
            "/requests",
            {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"},
            400,
        ),
        (
            "GET",
            "/requests",
            {"start_date": "2026-06-01T00:00:00Z", "end_date": "2026-05-01T00:00:00Z"},
            400,
        ),
        ("GET", "/requests", {"start_date": "9999-12-31T23:59:59+00:00"}, 400),
        ("GET", "/requests", {"status": "pending"}, 400),
        ("GET", "/requests", {"page_size": "0"}, 400),
        ("GET", "/requests", {"page": "-1"}, 400),
        ("POST", "/requests", {k: v for k, v in good.items() if k != "api_key"}, 403),
        ("POST", "/requests", {**good, "api_key": "x" * 43}, 403),
        ("POST", "/requests", {**good, "api_key": revoked}, 403),
        ("POST", "/requests", {**good, "jurisdiction_id": "79"}, 403),
        ("POST", "/requests", {**good, "jurisdiction_id": "99"}, 404),
        ("POST", "/requests", {k: v for k, v in good.items() if k != "service_code"}, 400),
        ("POST", "/requests", {**good, "service_code": "potholes"}, 404),
        ("POST", "/requests", {"api_key": key, "service_code": "dumping"}, 400),
        ("POST", "/requests", {"api_key": key, "service_code": "dumping", "lat": "20.07"}, 400),
        ("POST", "/requests", {**good, "address_id": "12", "lat": "", "long": ""}, 400),
        ("POST", "/requests", {**good, **IN_PARIS}, 400),
        ("POST", "/requests", {**good, **IN_SAI_GON}, 400),
        ("POST", "/requests", {**good, "description": "x" * 4001}, 400),
        ("POST", "/requests", {**good, "attribute[nature]": "weekly"}, 400),
        ("POST", "/requests", {**good, "media_url": "file:///etc/passwd"}, 400),
        ("POST", "/requests", {**good, "api_key": other, **IN_BIM_SON}, 400),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_every_refusal_is_in_the_specs_error_format(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], fmt: str
) -> None:
    key = await partner_key(sessions)
    revoked = await partner_key(sessions, name="old portal")
    other = await partner_key(sessions, province="79", name="Hồ Chí Minh portal")
    async with sessions() as s, s.begin():
        revoked_id = await s.scalar(select(PartnerKey.id).where(PartnerKey.name == "old portal"))
        assert revoked_id is not None and await revoke_key(s, revoked_id)
    base = f"{base_url(settings)}{ROOT}"
    wrong: list[str] = []
    async with running(settings), aiohttp.ClientSession() as http:
        for method, path, fields, expected in _cases(key, revoked, other):
            url = f"{base}{path}.{fmt}"
            if method == "GET":
                status, kind, body = await _get(http, url, **fields)
            else:
                status, kind, body = await _post(http, url, fields)
            errors = errors_of(fmt, body)
            if status != expected or errors[0][0] != expected or kind != CONTENT_TYPES[fmt]:
                wrong.append(f"{method} {path} {fields}: {status} {kind} {errors}")
    assert wrong == [], "\n".join(wrong)
    async with sessions() as s:
        # Nothing refused was stored.
        assert await s.scalar(select(func.count()).where(Ticket.channel == "open311")) == 0


async def test_hidden_cases_are_not_served_and_merged_reports_follow_their_case(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        shown = await make_ticket(s)
        hidden = await make_ticket(s)
        case = await make_ticket(s)
        merged = await make_ticket(s)
        merged_into_hidden = await make_ticket(s)
        hidden_case = await make_ticket(s)
        hidden.hidden_at = hidden_case.hidden_at = utcnow()
        hidden.hidden_reason = hidden_case.hidden_reason = "names a neighbour"
        case.state, case.answered_at = "answered", utcnow()
        merged.state, merged.case_id = "merged", case.id
        merged_into_hidden.state, merged_into_hidden.case_id = "merged", hidden_case.id
        names = {
            shown.code: "shown",
            hidden.code: "hidden",
            case.code: "case",
            merged.code: "merged",
            merged_into_hidden.code: "merged_into_hidden",
            hidden_case.code: "hidden_case",
        }
    base = f"{base_url(settings)}{ROOT}"
    async with running(settings), aiohttp.ClientSession() as http:
        for fmt in FORMATS:
            status, _, body = await _get(http, f"{base}/requests.{fmt}")
            assert status == 200
            listed = {r["service_request_id"]: r for r in requests_of(fmt, body)}
            assert {names[c] for c in listed} == {"shown", "case", "merged"}
            # A merged report shows where its case stands, and which case it is.
            assert listed[merged.code]["status"] == "closed"
            assert (
                listed[merged.code]["status_notes"] == f"Đã gộp vào vụ việc {case.code}: Đã trả lời"
            )
            assert listed[case.code]["status"] == "closed"
            for code in (hidden.code, merged_into_hidden.code, hidden_case.code):
                status, _, body = await _get(http, f"{base}/requests/{code}.{fmt}")
                assert status == 404 and errors_of(fmt, body)[0][0] == 404
            # Asked by id, a hidden one is not there either.
            status, _, body = await _get(
                http, f"{base}/requests.{fmt}", service_request_id=f"{hidden.code},{shown.code}"
            )
            assert [r["service_request_id"] for r in requests_of(fmt, body)] == [shown.code]
            status, _, body = await _get(http, f"{base}/requests/{shown.code}.{fmt}")
            assert status == 200 and len(requests_of(fmt, body)) == 1


async def test_the_filters_and_paging(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = utcnow()
    async with sessions() as s, s.begin():
        old = await make_ticket(s, now=now - timedelta(days=100))
        noise = await make_ticket(s, category="noise", now=now - timedelta(days=2))
        closed = await make_ticket(s, now=now - timedelta(days=1))
        closed.state, closed.closed_at = "closed", now
        in_saigon = await make_ticket(s, ward="26740", lat=10.7805, lon=106.704)
    base = f"{base_url(settings)}{ROOT}"

    async def codes(**query: str) -> list[str]:
        status, _, body = await _get(http, f"{base}/requests.json", **query)
        assert status == 200, body
        return [r["service_request_id"] for r in json.loads(body)]

    async with running(settings), aiohttp.ClientSession() as http:
        # The last 90 days by default, newest first.
        assert await codes() == [in_saigon.code, closed.code, noise.code]
        # An empty api_key is no key: reading needs none.
        assert await codes(api_key="") == [in_saigon.code, closed.code, noise.code]
        assert await codes(service_code="noise") == [noise.code]
        assert await codes(status="closed") == [closed.code]
        assert await codes(status="open,closed") == [in_saigon.code, closed.code, noise.code]
        assert await codes(jurisdiction_id="79") == [in_saigon.code]
        start = (now - timedelta(days=120)).isoformat()
        end = (now - timedelta(days=50)).isoformat()
        assert await codes(start_date=start, end_date=end) == [old.code]
        assert await codes(start_date=(now - timedelta(days=101)).isoformat()) == [old.code]
        # The ids override every other filter.
        assert await codes(service_request_id=f"{old.code},{noise.code}", status="closed") == [
            noise.code,
            old.code,
        ]
        assert await codes(page_size="2") == [in_saigon.code, closed.code]
        assert await codes(page_size="2", page="2") == [noise.code]
        assert await codes(page_size="2", page="3") == []


async def test_no_reporter_data_in_any_answer(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    resident = await resident_ticket(sessions)
    key = await partner_key(sessions)
    base = f"{base_url(settings)}{ROOT}"
    answers: list[tuple[str, bytes]] = []
    async with running(settings), aiohttp.ClientSession() as http:
        for fmt in FORMATS:
            queries: list[tuple[str, dict[str, str]]] = [
                (f"requests.{fmt}", {}),
                (f"requests.{fmt}", {"api_key": key}),
                (f"requests.{fmt}", {"service_request_id": resident.code}),
                (f"requests.{fmt}", {"service_code": "dumping", "status": "open"}),
                (f"requests.{fmt}", {"jurisdiction_id": "38", "lang": "en"}),
                (f"requests/{resident.code}.{fmt}", {}),
                (f"requests/{resident.code}.{fmt}", {"api_key": key}),
                (f"services.{fmt}", {}),
                (f"services/dumping.{fmt}", {}),
                (f"discovery.{fmt}", {}),
            ]
            for path, query in queries:
                status, _, body = await _get(http, f"{base}/{path}", **query)
                assert status == 200, (path, body)
                answers.append((path, body))
    seen = [a for a in answers if resident.code.encode() in a[1]]
    assert len(seen) == 14  # seven answers per format carry the ticket, without its reporter
    for path, body in answers:
        text = body.decode()
        for secret in resident.secrets():
            assert secret not in text, (path, secret)


async def test_the_description_goes_only_to_the_partner_that_posted_it(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    poster = await partner_key(sessions, name="Portal A")
    other = await partner_key(sessions, name="Portal B")
    base = f"{base_url(settings)}{ROOT}"
    # Characters XML cannot carry are left out of XML, and it still parses.
    words = "Gọi 0911222333 \x01\x1b bên cạnh chợ"
    async with running(settings), aiohttp.ClientSession() as http:
        form = {"api_key": poster, "service_code": "noise", **IN_BIM_SON, "description": words}
        status, _, body = await _post(http, f"{base}/requests.json", form)
        assert status == 200, body
        code = json.loads(body)[0]["service_request_id"]
        seen: dict[tuple[str, str], Any] = {}
        for fmt in FORMATS:
            for who, key in (("poster", poster), ("other", other), ("public", "")):
                query = {"api_key": key} if key else {}
                _, _, body = await _get(http, f"{base}/requests/{code}.{fmt}", **query)
                seen[fmt, who] = requests_of(fmt, body)[0]["description"]
    assert seen["json", "poster"] == words
    assert seen["xml", "poster"] == "Gọi 0911222333  bên cạnh chợ"
    for fmt in FORMATS:
        assert seen[fmt, "other"] in ("", None)
        assert seen[fmt, "public"] in ("", None)


async def test_an_address_string_is_placed_and_jurisdiction_defaults_to_the_served_province(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # No geocoder: a typed address is placed by the ward it names, at the ward's centre.
    settings = web_settings(database_url, tmp_path, served_provinces=["38"])
    key = await partner_key(sessions)
    async with sessions() as s, s.begin():
        in_saigon = await make_ticket(s, ward="26740", lat=10.7805, lon=106.704)
    base = f"{base_url(settings)}{ROOT}"
    form = {"api_key": key, "service_code": "debris"}
    async with running(settings), aiohttp.ClientSession() as http:
        status, _, body = await _post(
            http, f"{base}/requests.json", {**form, "address_string": "Phường Bỉm Sơn, Thanh Hóa"}
        )
        assert status == 200, body
        code = json.loads(body)[0]["service_request_id"]
        status, _, body = await _post(
            http, f"{base}/requests.json", {**form, "address_string": "Nowhere Street 1"}
        )
        assert (status, errors_of("json", body)[0][0]) == (400, 400)
        # Without jurisdiction_id, the one province served; another one is unknown here.
        status, _, body = await _get(http, f"{base}/requests.json")
        assert [r["service_request_id"] for r in json.loads(body)] == [code]
        status, _, body = await _get(http, f"{base}/requests/{in_saigon.code}.json")
        assert status == 404
        status, _, body = await _get(http, f"{base}/requests.json", jurisdiction_id="79")
        assert (status, errors_of("json", body)[0][0]) == (404, 404)
    async with sessions() as s:
        ticket = await s.scalar(select(Ticket).where(Ticket.code == code))
        assert ticket is not None
        assert (ticket.ward_code, ticket.location_source) == ("14812", "ward_name")


async def test_a_partners_request_is_handled_like_any_ticket_and_its_status_follows(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key = await partner_key(sessions)
    async with sessions() as s, s.begin():
        operator = (await make_user(s, "operator", "P38")).username
        staff_name = (await make_user(s, "ward_staff", "W14812")).username
    base = f"{base_url(settings)}{ROOT}"
    form = {"api_key": key, "service_code": "dumping", **IN_BIM_SON, "description": "Rác"}
    async with running(settings), aiohttp.ClientSession() as http:
        _, _, body = await _post(http, f"{base}/requests.json", form)
        code = json.loads(body)[0]["service_request_id"]

        async def status() -> tuple[str, str, str | None]:
            _, _, body = await _get(http, f"{base}/requests/{code}.json", lang="en")
            found = json.loads(body)[0]
            return found["status"], found["status_notes"], found["expected_datetime"]

        assert (await status())[:2] == ("open", "Received")
        triage = Staff(http, base_url(settings), operator)
        staff = Staff(http, base_url(settings), staff_name)
        await triage.act(code, "classify", urgency="normal", competence="ward")
        step = await status()
        assert step[:2] == ("open", "Assigned") and step[2] is not None
        for action in ("claim", "verify", "confirm"):
            await staff.act(code, action)
        photo = await staff.upload(image_bytes("JPEG", (80, 60), "green"))
        await staff.act(code, "answer", result="Đã thu dọn.", photos=[photo])
        assert await status() == ("closed", "Answered", None)
    async with sessions() as s:
        # No one to tell: the partner reads the status.
        assert await s.scalar(select(func.count()).select_from(OutboxMessage)) == 0


async def test_posts_from_one_address_are_limited_whatever_the_key(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path, open311_posts_per_address_per_minute=3)
    key = await partner_key(sessions)
    base = f"{base_url(settings)}{ROOT}"
    good = {"api_key": key, "service_code": "noise", **IN_BIM_SON}
    await _clear_of_minute_end()
    async with running(settings), aiohttp.ClientSession() as http:
        statuses = [(await _post(http, f"{base}/requests.json", {"api_key": "guess"}))[0]]
        statuses.append((await _post(http, f"{base}/requests.json", good))[0])
        statuses.append((await _post(http, f"{base}/requests.xml", {"junk": "x"}))[0])
        status, _, body = await _post(http, f"{base}/requests.xml", good)
        statuses.append(status)
        assert errors_of("xml", body) == [(429, "too many requests: try again later")]
    assert statuses == [403, 200, 403, 429]
    async with sessions() as s:
        assert await s.scalar(select(func.count()).where(Ticket.channel == "open311")) == 1


async def _clear_of_minute_end(margin: float = 10.0) -> None:
    """Wait if the minute's window (a limit's) ends within margin."""
    left = 60 - time.time() % 60
    if left < margin:
        await asyncio.sleep(left + 0.5)


async def test_a_keys_post_refused_for_its_content_still_counts(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path, open311_posts_per_hour=2)
    key = await partner_key(sessions)
    base = f"{base_url(settings)}{ROOT}"
    good = {"api_key": key, "service_code": "noise", **IN_BIM_SON}
    if 3600 - time.time() % 3600 < 10:
        await asyncio.sleep(11)  # not across the hour's window end
    async with running(settings), aiohttp.ClientSession() as http:
        statuses = [(await _post(http, f"{base}/requests.json", {**good, "service_code": "x"}))[0]]
        statuses.append((await _post(http, f"{base}/requests.json", good))[0])
        statuses.append((await _post(http, f"{base}/requests.json", good))[0])
    assert statuses == [404, 200, 429]
