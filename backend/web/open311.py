"""Open311 GeoReport v2 at /open311/v2/ (http://wiki.open311.org/GeoReport_v2): our
categories as services, tickets as service requests, in JSON and XML; partner systems
post requests with a key scoped to a province. No reporter data is ever returned: only
what the public case page could show, and the description to the partner that posted it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiMapping
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from backend.geo import public_point
from backend.i18n import Catalogues
from backend.models import AuditEvent, Category, PartnerKey, Province, Ticket, Unit, Ward, utcnow
from backend.services.geocoding import GeocoderDown, find_place
from backend.services.intake import ReportDraft, submit_report
from backend.services.limits import DAY, HOUR, Limit, take_all
from backend.services.logins import address_lookup
from backend.services.partners import find_key
from backend.services.tickets import public_where
from backend.services.workflow import OPEN_STATES
from backend.timeutil import local
from backend.web.app import GEOCODER, POLICIES, SESSIONS, SETTINGS, WARDS
from backend.web.auth import client_address
from backend.web.bodies import FORM_LIMIT, read_body
from backend.web.public import PUBLIC_TEXT, language

ROOT = "/open311/v2"
SPEC = "http://wiki.open311.org/GeoReport_v2"
# When this interface last changed (discovery's changeset).
CHANGESET = "2026-12-02T00:00:00+07:00"
FORMATS = {"json": "application/json", "xml": "text/xml"}
WEB_TEXT = Catalogues(PUBLIC_TEXT.locales_dir, "web")
# The action of the audit event that records which partner posted a ticket; its actor is
# "open311:<key id>".
POSTED = "open311_post"
MAX_DESCRIPTION = 4000
MAX_IDS = 100
MAX_PAGE_SIZE = 1000
SPAN = timedelta(days=90)
# Any other state is closed: answered, closed, rejected (a merged report takes its case's).
OPEN = frozenset(OPEN_STATES)
# Characters XML 1.0 cannot carry at all.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_PROVINCE = re.compile(r"[0-9]{2}")
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class Open311Error(Exception):
    """An answer in the spec's error format: [{"code", "description"}]."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


# --- rendering ------------------------------------------------------------------------------


def _address(request: web.Request) -> str:
    """The client's address as a limit counts it (an IPv6 /64 as one), by its keyed
    look-up: the counts do not keep addresses."""
    return address_lookup("open311-address", client_address(request))


def _xml_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))


def _xml_fill(parent: ET.Element, fields: Mapping[str, Any], lists: Mapping[str, str]) -> None:
    """Fields as child elements; a list field as a wrapper of elements named by `lists`."""
    for name, value in fields.items():
        child = ET.SubElement(parent, name)
        if isinstance(value, list):
            for item in value:
                element = ET.SubElement(child, lists[name])
                if isinstance(item, dict):
                    _xml_fill(element, item, lists)
                else:
                    element.text = _xml_value(item)
        else:
            child.text = _xml_value(value)


def _xml(root: str, item: str | None, data: Any, lists: Mapping[str, str]) -> bytes:
    top = ET.Element(root)
    if item is None:
        _xml_fill(top, data, lists)
    else:
        for entry in data:
            _xml_fill(ET.SubElement(top, item), entry, lists)
    # The spec asks for this declaration before the root element, UTF-8 named.
    return XML_DECLARATION + ET.tostring(top, encoding="unicode").encode("utf-8")


def respond(
    fmt: str,
    data: Any,
    *,
    root: str,
    item: str | None = None,
    lists: Mapping[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    """The same data as JSON, or as XML under `root` (one `item` element per entry)."""
    if fmt == "xml":
        return web.Response(
            body=_xml(root, item, data, lists or {}),
            status=status,
            content_type="text/xml",
            charset="utf-8",
        )
    return web.Response(
        text=json.dumps(data, ensure_ascii=False),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def error_response(fmt: str, status: int, description: str) -> web.Response:
    errors = [{"code": status, "description": description}]
    return respond(fmt, errors, root="errors", item="error", status=status)


def _w3c(dt: datetime | None) -> str | None:
    """W3C date and time with its offset, in Vietnam's time."""
    return local(dt).isoformat(timespec="seconds") if dt is not None else None


def _fmt(request: web.Request) -> str:
    fmt = request.match_info.get("fmt", "")
    return fmt if fmt in FORMATS else _guess_format(request.path)


def _guess_format(path: str) -> str:
    return "xml" if path.lower().endswith(".xml") else "json"


# --- what is asked -------------------------------------------------------------------------


def _one(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise Open311Error(400, f"{name} is given more than once")
    return str(values[0]) if values else None


async def _jurisdiction(
    request: web.Request, session: AsyncSession, given: str | None, key: PartnerKey | None
) -> list[str] | None:
    """The provinces asked about: the one named (404 unless known and served), else the
    key's, else the one province served; None for every province."""
    settings = request.app[SETTINGS]
    if given is not None and given != "":
        if not _PROVINCE.fullmatch(given) or await session.get(Province, given) is None:
            raise Open311Error(404, "unknown jurisdiction_id (a province code)")
        if settings.served_provinces and given not in settings.served_provinces:
            raise Open311Error(404, "unknown jurisdiction_id (a province code)")
        return [given]
    if key is not None:
        return [key.province_code]
    if settings.served_provinces:
        return list(settings.served_provinces)
    return None


async def _key(session: AsyncSession, given: str | None) -> PartnerKey | None:
    """The key given (403 when it is not a live one), or None when none (or an empty one)
    is given: reading needs no key."""
    if not given:
        return None
    key = await find_key(session, given)
    if key is None:
        raise Open311Error(403, "api_key is not valid")
    return key


async def _within_limit(request: web.Request, name: str, limits: list[Limit]) -> None:
    """Count one under the limits in a transaction of its own (it holds however the
    request ends); 429 when over."""
    async with request.app[SESSIONS]() as session, session.begin():
        allowed = await take_all(session, name, limits)
    if not allowed:
        raise Open311Error(429, "too many requests: try again later")


async def _read_limit(request: web.Request, key: PartnerKey | None) -> None:
    per_minute = Limit(request.app[SETTINGS].open311_reads_per_minute, 60)
    who = f"key:{key.id}" if key is not None else f"addr:{_address(request)}"
    await _within_limit(request, f"open311:read:{who}", [per_minute])


# --- discovery and services ----------------------------------------------------------------


def _base(request: web.Request) -> str:
    public = request.app[SETTINGS].public_url
    origin = public.rstrip("/") if public else f"{request.scheme}://{request.host}"
    return f"{origin}{ROOT}"


async def discovery(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    data = {
        "changeset": CHANGESET,
        "contact": settings.open311_contact or settings.public_url or "",
        "key_service": settings.open311_key_service,
        "endpoints": [
            {
                "specification": SPEC,
                "url": _base(request),
                "changeset": CHANGESET,
                "type": "production",
                "formats": list(FORMATS.values()),
            }
        ],
    }
    lists = {"endpoints": "endpoint", "formats": "format"}
    return respond(_fmt(request), data, root="discovery", lists=lists)


def _service(category: Category, lang: str) -> dict[str, Any]:
    name = category.name_en if lang == "en" else category.name_vi
    return {
        "service_code": category.code,
        "service_name": name,
        "description": f"{category.name_vi} ({category.name_en})",
        "metadata": True,
        "type": "realtime",
        "keywords": "",
        "group": "pollution",
    }


async def services(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        await _read_limit(request, None)
        await _jurisdiction(request, session, _one(request.query, "jurisdiction_id"), None)
        rows = list(await session.scalars(select(Category).order_by(Category.sort_order)))
    lang = language(request)
    data = [_service(c, lang) for c in rows]
    return respond(_fmt(request), data, root="services", item="service")


NATURES = ("one_off", "recurring")


def _attributes(lang: str) -> list[dict[str, Any]]:
    def t(key: str) -> str:
        return PUBLIC_TEXT.translate(lang, key)

    return [
        {
            "variable": True,
            "code": "nature",
            "datatype": "singlevaluelist",
            "required": False,
            "datatype_description": t("open311.nature.datatype"),
            "order": 1,
            "description": t("open311.nature"),
            "values": [{"key": n, "name": t(f"open311.nature.{n}")} for n in NATURES],
        }
    ]


async def service_definition(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    async with request.app[SESSIONS]() as session:
        await _read_limit(request, None)
        await _jurisdiction(request, session, _one(request.query, "jurisdiction_id"), None)
        if await session.get(Category, code) is None:
            raise Open311Error(404, "unknown service_code")
    data = {"service_code": code, "attributes": _attributes(language(request))}
    lists = {"attributes": "attribute", "values": "value"}
    return respond(_fmt(request), data, root="service_definition", lists=lists)


# --- service requests ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    ticket: Ticket
    case: Ticket | None
    category: Category
    unit_name: str
    ward_name: str
    province_name: str


def _rows_query() -> tuple[Any, Any]:
    case = aliased(Ticket)
    shown = aliased(Ticket)  # the ticket whose status is shown: the case, else the report
    query = (
        select(Ticket, case, Category, Unit.name, Ward.name, Province.short_name)
        .outerjoin(case, case.id == Ticket.case_id)
        .join(shown, shown.id == func.coalesce(Ticket.case_id, Ticket.id))
        .join(Category, Category.code == Ticket.category_code)
        .join(Unit, Unit.id == shown.unit_id)
        .join(Ward, Ward.code == Ticket.ward_code)
        .join(Province, Province.code == Ward.province_code)
    )
    return query.where(public_where(Ticket, case)), shown


def _status(ticket: Ticket) -> str:
    return "open" if ticket.state in OPEN else "closed"


def _request(row: _Row, lang: str, own: set[int]) -> dict[str, Any]:
    """A ticket as a service request: never its reporter, polluter or internal notes; the
    description only to the partner that posted it (`own`)."""
    ticket = row.ticket
    shown = row.case if row.case is not None else ticket
    notes = WEB_TEXT.translate(lang, f"state.{shown.state}")
    if row.case is not None:
        notes = PUBLIC_TEXT.translate(lang, "open311.merged", code=row.case.code, status=notes)
    name = row.category.name_en if lang == "en" else row.category.name_vi
    point = public_point(ticket.lat, ticket.lon)
    return {
        "service_request_id": ticket.code,
        "status": _status(shown),
        "status_notes": notes,
        "service_name": name,
        "service_code": ticket.category_code,
        "description": ticket.description if ticket.id in own else "",
        "agency_responsible": row.unit_name,
        "service_notice": "",
        "requested_datetime": _w3c(ticket.created_at),
        "updated_datetime": _w3c(max(ticket.updated_at, shown.updated_at)),
        "expected_datetime": _w3c(shown.due_at) if shown.state in OPEN else None,
        # The ward, never the words a reporter typed for the place (they may name people).
        "address": f"{row.ward_name}, {row.province_name}",
        "address_id": "",
        "zipcode": "",
        # The public point (backend.geo.public_point), as on the case page and the map.
        "lat": point[0],
        "long": point[1],
        "media_url": "",
    }


async def _own(session: AsyncSession, key: PartnerKey | None, ids: Sequence[int]) -> set[int]:
    """Which of these tickets the key's partner posted."""
    if key is None or not ids:
        return set()
    found = await session.scalars(
        select(AuditEvent.ticket_id).where(
            AuditEvent.action == POSTED,
            AuditEvent.actor == f"open311:{key.id}",
            AuditEvent.ticket_id.in_(ids),
        )
    )
    return {i for i in found if i is not None}


def _requests_response(
    request: web.Request, rows: list[_Row], own: set[int], status: int = 200
) -> web.Response:
    lang = language(request)
    data = [_request(r, lang, own) for r in rows]
    return respond(_fmt(request), data, root="service_requests", item="request", status=status)


def _date(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Open311Error(400, f"{name} is not a W3C date and time") from None
    if parsed.tzinfo is None:
        raise Open311Error(400, f"{name} needs its time zone (e.g. 2026-12-01T00:00:00+07:00)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC, 9999-12-31 west of it
        raise Open311Error(400, f"{name} is out of range") from None


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The period asked, by default the last 90 days; at most 90 days."""
    try:
        if start is None:
            end = end or utcnow()
            start = end - SPAN
        elif end is None:
            end = start + SPAN
    except OverflowError:
        raise Open311Error(400, "start_date or end_date is out of range") from None
    if end < start:
        raise Open311Error(400, "end_date is before start_date")
    if end - start > SPAN:
        raise Open311Error(400, "start_date and end_date are more than 90 days apart")
    return start, end


def _number(value: str | None, name: str, default: int, top: int) -> int:
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 9 or not 1 <= int(value) <= top:
        raise Open311Error(400, f"{name} must be a whole number from 1 to {top}")
    return int(value)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


async def list_requests(request: web.Request) -> web.Response:
    query = request.query
    async with request.app[SESSIONS]() as session:
        key = await _key(session, _one(query, "api_key"))
        await _read_limit(request, key)
        provinces = await _jurisdiction(request, session, _one(query, "jurisdiction_id"), key)
        stmt, shown = _rows_query()
        if provinces is not None:
            stmt = stmt.where(Province.code.in_(provinces))
        ids = _split(_one(query, "service_request_id"))
        page_size = _number(_one(query, "page_size"), "page_size", MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        page = _number(_one(query, "page"), "page", 1, 10**6)
        if ids:
            # It overrides every other filter.
            if len(ids) > MAX_IDS:
                raise Open311Error(400, f"at most {MAX_IDS} service_request_id at once")
            stmt = stmt.where(Ticket.code.in_(ids))
        else:
            stmt = await _filters(session, stmt, shown, query)
        stmt = stmt.order_by(Ticket.created_at.desc(), Ticket.id.desc())
        stmt = stmt.limit(page_size).offset((page - 1) * page_size)
        rows = [_Row(*r) for r in (await session.execute(stmt)).all()]
        own = await _own(session, key, [r.ticket.id for r in rows])
    return _requests_response(request, rows, own)


async def _filters(session: AsyncSession, stmt: Any, shown: Any, query: Any) -> Any:
    codes = _split(_one(query, "service_code"))
    if codes:
        known = set(await session.scalars(select(Category.code).where(Category.code.in_(codes))))
        if unknown := [c for c in codes if c not in known]:
            raise Open311Error(404, f"unknown service_code {unknown[0][:40]!r}")
        stmt = stmt.where(Ticket.category_code.in_(codes))
    statuses = set(_split(_one(query, "status")))
    if statuses - {"open", "closed"}:
        raise Open311Error(400, "status is open, closed, or both (comma-separated)")
    if statuses == {"open"}:
        stmt = stmt.where(shown.state.in_(OPEN))
    elif statuses == {"closed"}:
        stmt = stmt.where(shown.state.not_in(OPEN))
    start, end = _period(
        _date(_one(query, "start_date"), "start_date"), _date(_one(query, "end_date"), "end_date")
    )
    return stmt.where(and_(Ticket.created_at >= start, Ticket.created_at <= end))


async def one_request(request: web.Request) -> web.Response:
    code = request.match_info["id"]
    async with request.app[SESSIONS]() as session:
        key = await _key(session, _one(request.query, "api_key"))
        await _read_limit(request, key)
        provinces = await _jurisdiction(
            request, session, _one(request.query, "jurisdiction_id"), key
        )
        stmt, _ = _rows_query()
        stmt = stmt.where(Ticket.code == code)
        if provinces is not None:
            stmt = stmt.where(Province.code.in_(provinces))
        found = (await session.execute(stmt)).first()
        if found is None:
            raise Open311Error(404, "unknown service_request_id")
        row = _Row(*found)
        own = await _own(session, key, [row.ticket.id])
    return _requests_response(request, [row], own)


# --- posting a request ---------------------------------------------------------------------


async def _form(request: web.Request) -> dict[str, str]:
    """The form-encoded body, each field at most once; 400 for anything else."""
    kind = request.content_type
    if kind != "application/x-www-form-urlencoded":
        raise Open311Error(400, "the body must be application/x-www-form-urlencoded")
    try:
        body = await read_body(request, FORM_LIMIT)
    except web.HTTPRequestEntityTooLarge:
        raise Open311Error(413, f"the body is larger than {FORM_LIMIT} bytes") from None
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, errors="strict", encoding="utf-8", max_num_fields=200
        )
    except (UnicodeDecodeError, ValueError):
        raise Open311Error(400, "the body is not a UTF-8 form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise Open311Error(400, "NUL characters are not accepted")
        if name in form:
            raise Open311Error(400, f"{name[:40]} is given more than once")
        form[name] = value
    return form


@dataclass(frozen=True, slots=True)
class _Place:
    ward_code: str
    province_code: str
    lat: float
    lon: float
    source: str
    address: str | None


def _float(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise Open311Error(400, f"{name} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise Open311Error(400, f"{name} is not a number")
    return number


async def _place(request: web.Request, form: Mapping[str, str]) -> _Place:
    """Where the request is: lat and long, else address_string (geocoded); 400 when
    neither is given or the place is not in Vietnam."""
    wards = request.app[WARDS]
    lat_text, lon_text = form.get("lat", "").strip(), form.get("long", "").strip()
    typed = " ".join(form.get("address_string", "").split())[:300]
    if lat_text or lon_text:
        if not (lat_text and lon_text):
            raise Open311Error(400, "lat and long are given together")
        lat, lon = _float(lat_text, "lat"), _float(lon_text, "long")
        placed = wards.place(lat, lon)
        if not placed.in_vietnam or placed.nearest is None:
            raise Open311Error(400, "the location is outside Vietnam")
        ward = placed.nearest
        return _Place(ward.code, ward.province_code, lat, lon, "map", typed or None)
    if typed:
        try:
            spot = await find_place(request.app[GEOCODER], wards, typed)
        except GeocoderDown:
            raise Open311Error(400, "address_string could not be looked up now") from None
        if spot is None:
            raise Open311Error(400, "address_string was not found in Vietnam")
        placed = wards.place(spot.lat, spot.lon)
        if not placed.in_vietnam or placed.nearest is None:
            raise Open311Error(400, "the location is outside Vietnam")
        ward = placed.nearest
        source = "address" if spot.source == "nominatim" else "ward_name"
        return _Place(ward.code, ward.province_code, spot.lat, spot.lon, source, typed)
    if form.get("address_id", "").strip():
        raise Open311Error(400, "address_id is not known here: give lat and long")
    raise Open311Error(400, "a location is required: lat and long, or address_string")


def _media_url(value: str) -> str | None:
    """A link for staff to open themselves (never fetched here): http(s) only."""
    url = value.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or len(url) > 2000:
        raise Open311Error(400, "media_url must be an http or https URL")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise Open311Error(400, "media_url must be an http or https URL")
    return url


async def post_request(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    per_address = Limit(settings.open311_posts_per_address_per_minute, 60)
    await _within_limit(request, f"open311:post:addr:{_address(request)}", [per_address])
    form = await _form(request)
    async with request.app[SESSIONS]() as session:
        key = await find_key(session, form.get("api_key"))
    if key is None:
        raise Open311Error(403, "api_key is missing or not valid")
    limits = [
        Limit(settings.open311_posts_per_hour, HOUR),
        Limit(settings.open311_posts_per_day, DAY),
    ]
    await _within_limit(request, f"open311:post:key:{key.id}", limits)
    async with request.app[SESSIONS]() as session:
        given = form.get("jurisdiction_id")
        provinces = await _jurisdiction(request, session, given, key)
        if provinces != [key.province_code]:
            raise Open311Error(403, "this api_key is for another jurisdiction_id")
        code = form.get("service_code", "").strip()
        if not code:
            raise Open311Error(400, "service_code is required")
        if await session.get(Category, code) is None:
            raise Open311Error(404, "unknown service_code")
    nature = form.get("attribute[nature]", "").strip() or "recurring"
    if nature not in NATURES:
        raise Open311Error(400, "attribute[nature] is one_off or recurring")
    description = form.get("description", "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise Open311Error(400, f"description is longer than {MAX_DESCRIPTION} characters")
    media = _media_url(form.get("media_url", ""))
    place = await _place(request, form)
    if place.province_code != key.province_code:
        raise Open311Error(400, "the location is outside this api_key's province")
    if media is not None:
        description = f"{description}\n\nmedia_url: {media}".strip()
    now = utcnow()
    async with request.app[SESSIONS]() as session, session.begin():
        submitted = await submit_report(
            session,
            ReportDraft(
                category_code=code,
                ward_code=place.ward_code,
                lat=place.lat,
                lon=place.lon,
                location_source=place.source,
                address=place.address,
                description=description,
                nature=nature,
            ),
            # The partner's resident is not a reporter here: their name, e-mail and phone
            # are not stored, so nothing can be asked of or told to them by us.
            reporter_id=None,
            channel="open311",
            now=now,
            policies=request.app[POLICIES],
        )
        session.add(
            AuditEvent(
                ticket_id=submitted.ticket_id,
                actor=f"open311:{key.id}",
                action=POSTED,
                note=f"{key.name} (key {key.key_hint}…)",
                created_at=now,
            )
        )
    data = [{"service_request_id": submitted.code, "service_notice": "", "account_id": None}]
    return respond(_fmt(request), data, root="service_requests", item="request")


# --- the routes ----------------------------------------------------------------------------


@web.middleware
async def open311_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer under /open311/ in the spec's error format, whatever went wrong."""
    if not request.path.startswith(f"{ROOT}/") and request.path != ROOT:
        return await handler(request)
    fmt = _fmt(request)
    try:
        return await handler(request)
    except Open311Error as exc:
        return error_response(fmt, exc.status, exc.description)
    except web.HTTPMethodNotAllowed:
        return error_response(fmt, 405, "method not allowed")
    except web.HTTPNotFound:
        return error_response(fmt, 404, "unknown resource")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(fmt, exc.status, exc.reason)
        raise


def mount_open311(app: web.Application) -> None:
    fmt = "{fmt:(?:json|xml)}"
    # Outermost: the refusals of other middlewares (a NUL in the query) in the spec's format.
    app.middlewares.insert(0, open311_errors)
    app.router.add_get(f"{ROOT}/discovery.{fmt}", discovery)
    app.router.add_get(f"{ROOT}/services.{fmt}", services)
    app.router.add_get(f"{ROOT}/services/{{code:[A-Za-z0-9_-]{{1,32}}}}.{fmt}", service_definition)
    app.router.add_get(f"{ROOT}/requests.{fmt}", list_requests)
    app.router.add_post(f"{ROOT}/requests.{fmt}", post_request)
    app.router.add_get(f"{ROOT}/requests/{{id:[A-Za-z0-9-]{{1,40}}}}.{fmt}", one_request)
