"""The web report form at /report, for residents without Telegram or Zalo.

The page collects what a chat collects (photos, the place, the category, the words, an
optional phone, consent) and hands it to the conversation core as the channel "web"
(bot/web_form.py): the rules, the consent record, the photos, the routing and the
ticket are the chat's. This module is the page: the form, its token, its limits, the
photos' upload, and the messages.

Abuse, without a third-party service:
- a form token sealed with the installation's data key (AES-GCM: nobody else can make
  one or read it): it is bound to the browser's cookie (SameSite=Strict), so a page on
  another site cannot file a report through a visitor's browser; it must be at least
  `report_form_min_seconds` old (a script that posts at once is refused; no JavaScript
  needed) and at most TOKEN_HOURS; and it files one report only;
- forms filed per client address per hour and per day, counted in the database
  (backend.services.limits) so that every process keeps the same count; and tries (a
  POST that stores photos or reaches the filing, filed or not) per address, up to
  TRIES_PER_FORM times those limits, and per token: each counted in its own committed
  transaction before the photos are stored, so failing forms are held back too;
- the token, the cookie and the limits are checked before a photo's bytes are read: the
  token field comes first in the page's form, and a body with photos first is refused.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.config import Settings
from backend.crypto import DataKeyError, keys
from backend.db import is_sqlite
from backend.models import RateCount
from backend.services.deadlines import Policies
from backend.services.limits import DAY, HOUR, Limit, next_allowed, take, take_all
from backend.services.logins import address_lookup
from backend.services.media_store import MediaUnavailable
from backend.services.photos import ACCEPTED_NAMES, NotAnImage, TooLarge, store_photo
from backend.services.reporters import CONSENT_TEXT_VERSION, normalise_phone
from backend.services.units import WardIndex
from backend.services.upsert import insert_for
from backend.web.app import MEDIA, POLICIES, SESSIONS, SETTINGS, WARDS
from backend.web.auth import client_address, secure_cookies
from backend.web.bodies import FORM_LIMIT, read_form
from backend.web.public import language, linker, public_translator, render_public

COOKIE = "hotline_report"
TOKEN_PURPOSE = "report-form"  # noqa: S105 - a sealing purpose, not a secret
SENT_PURPOSE = "report-sent"
# How long a form stays good to send, from the moment it was shown.
TOKEN_HOURS = 6
# A form's parts: its fields, and the photos (each a part); more is not a browser's form.
MAX_PARTS = 40
# A text field's bytes (the description's 2000 characters are at most 8000 bytes).
FIELD_BYTES = 16 * 1024
TEXT_FIELDS = ("token", "lat", "lon", "ward", "category", "description", "phone", "consent")
# The place's fields as typed: a number, with room for a sign and digits.
PLACE_CHARS = 32
# Tries (POSTs that store photos or reach the filing) per address, as a multiple of the
# forms' limits: a form may take a few (the ward asked, a photo refused, a fix).
TRIES_PER_FORM = 3
# POSTs that store photos, per form token.
PHOTO_POSTS_PER_TOKEN = 8


@dataclass(frozen=True, slots=True)
class FormProblem:
    """Something the form cannot be filed with: the field, the message key, its values."""

    where: str
    key: str
    params: dict[str, str | int] = field(default_factory=dict)


@dataclass(slots=True)
class WebForm:
    """What the resident sent, as the core takes it."""

    language: str
    lat: float
    lon: float
    category: str
    description: str
    phone: str | None = None
    ward: str | None = None
    # Stored photos (StoredImage fields); and the uploads that were refused, by why.
    photos: list[dict[str, Any]] = field(default_factory=list)
    photo_errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FiledForm:
    """What became of a form: a ticket's code, problems, or the wards to choose from."""

    code: str | None = None
    category: str = ""
    problems: list[FormProblem] = field(default_factory=list)
    ward_choices: list[tuple[str, str]] = field(default_factory=list)


class ReportChannel(Protocol):
    """The conversation core as the form uses it (bot/web_form.py WebChannel)."""

    max_photos: int
    max_description: int

    def consent_text(self, language: str, months: int) -> str: ...
    def categories(self, language: str) -> list[tuple[str, str]]: ...
    async def file(
        self,
        session: AsyncSession,
        form: WebForm,
        *,
        wards: WardIndex,
        policies: Policies,
        settings: Settings,
    ) -> FiledForm: ...


CHANNEL = web.AppKey("report_channel", ReportChannel)
FILING = web.AppKey("report_filing", asyncio.Lock)


# --- the token ---------------------------------------------------------------------------


def _browser_key(cookie: str) -> str:
    return keys().lookup("report-browser", cookie)


def new_token(cookie: str, kept: list[dict[str, Any]], issued: float | None = None) -> str:
    """A form token for this browser, carrying the photos already accepted (sealed: their
    EXIF position is evidence, not something to hand back)."""
    body = {
        "n": secrets.token_urlsafe(16),
        "t": time.time() if issued is None else issued,
        "b": _browser_key(cookie),
        "p": kept,
    }
    return keys().seal_json(body, TOKEN_PURPOSE)


class TokenRefused(Exception):
    """The form's token is missing, not ours, for another browser, too new or too old."""

    def __init__(self, why: str, token: dict[str, Any] | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.token = token


def open_token(text: str, cookie: str | None, min_seconds: float) -> dict[str, Any]:
    """The token's contents, or TokenRefused."""
    if not text or not cookie:
        raise TokenRefused("missing")
    try:
        body = keys().open_json(text, TOKEN_PURPOSE)
    except (DataKeyError, ValueError, UnicodeDecodeError):
        raise TokenRefused("forged") from None
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("n"), str)
        or not isinstance(body.get("t"), int | float)
        or not isinstance(body.get("p"), list)
        or not secrets.compare_digest(str(body.get("b")), _browser_key(cookie))
    ):
        raise TokenRefused("forged")
    age = time.time() - float(body["t"])
    if age > TOKEN_HOURS * HOUR:
        raise TokenRefused("expired")
    if age < min_seconds:
        raise TokenRefused("early", body)
    return body


def _token_mark(nonce: str) -> str:
    return f"report-token:{nonce}"[:128]


async def use_token_once(session: AsyncSession, nonce: str, issued: float) -> bool:
    """Mark the token used (in the filing's transaction); False when it was already. The
    mark lives in rate_counts until the token could no longer be sent anyway."""
    expires = datetime.fromtimestamp(issued + TOKEN_HOURS * HOUR + 60, UTC)
    stmt = (
        insert_for(session, RateCount)
        .values(name=_token_mark(nonce), window=0, count=1, expires_at=expires)
        .on_conflict_do_nothing(index_elements=["name", "window"])
        .returning(RateCount.count)
    )
    return (await session.execute(stmt)).first() is not None


async def note_filed(session: AsyncSession, nonce: str, code: str) -> None:
    """Keep the code filed with the token's mark (same transaction): a second send of the
    same form, from the same browser, is answered with this code."""
    await session.execute(
        update(RateCount)
        .where(RateCount.name == _token_mark(nonce), RateCount.window == 0)
        .values(note=code)
    )


async def token_use(session: AsyncSession, nonce: str) -> tuple[bool, str | None]:
    """Whether the token was used, and the code it filed (None if not known)."""
    row = (
        await session.execute(
            select(RateCount.note).where(
                RateCount.name == _token_mark(nonce), RateCount.window == 0
            )
        )
    ).first()
    return (row is not None, row[0] if row is not None else None)


# --- the per-address limit -----------------------------------------------------------------


def address_key(address: str) -> str:
    """The limit's name for a client: its IPv4 address, or its IPv6 /64 (one household's
    network hands out many addresses), kept only as a keyed hash."""
    return "report-form:" + address_lookup("report-address", address)


def limits(settings: Settings, times: int = 1) -> list[Limit]:
    return [
        Limit(settings.report_form_per_hour * times, HOUR),
        Limit(settings.report_form_per_day * times, DAY),
    ]


def tries_key(address: str) -> str:
    return address_key(address) + ":try"


async def within_limit(request: web.Request) -> str | None:
    """What holds the client back now ("forms" filed or "tries"), or None: a look only
    (no write, so no wait for SQLite's write lock); the counts are taken after."""
    address = client_address(request)
    settings = request.app[SETTINGS]
    now = time.time()
    counted = [
        ("forms", address_key(address), limits(settings)),
        ("tries", tries_key(address), limits(settings, TRIES_PER_FORM)),
    ]
    async with request.app[SESSIONS]() as session:
        for kind, name, each in counted:
            if await next_allowed(session, name, each, now) is not None:
                return kind
    return None


async def take_try(request: web.Request, nonce: str, stores_photos: bool) -> bool:
    """Count one try under the address (and, when it stores photos, under the token), in
    its own committed transaction: counted whatever becomes of the form."""
    settings = request.app[SETTINGS]
    async with _one_writer(request), request.app[SESSIONS]() as session, session.begin():
        ok = await take_all(
            session, tries_key(client_address(request)), limits(settings, TRIES_PER_FORM)
        )
        if stores_photos:
            per_token = Limit(PHOTO_POSTS_PER_TOKEN, TOKEN_HOURS * HOUR)
            ok = await take(session, f"report-photos:{nonce}"[:128], per_token) and ok
    return ok


# --- reading the form ------------------------------------------------------------------------


@dataclass(slots=True)
class Posted:
    fields: dict[str, str] = field(default_factory=dict)
    uploads: list[bytes] = field(default_factory=list)
    # Photos refused while reading (over the size); and whether more were sent than taken.
    too_large: int = 0
    too_many: bool = False
    # Whether the checks before the photos ran (at the first photos part).
    gated: bool = False


# Checks the token, the cookie and the limits, from the fields read so far, before any
# photo is read; raises to refuse.
Gate = Callable[[dict[str, str]], Awaitable[None]]


class BadForm(Exception):
    """A body no browser sends for this form (its answer is a plain 400)."""


def body_limit(settings: Settings, max_photos: int) -> int:
    """The largest form: every photo at the largest size, and the fields."""
    return max_photos * settings.max_photo_bytes + FORM_LIMIT


async def _read_part(part: BodyPartReader, limit: int) -> bytes | None:
    """The part's bytes, or None (the rest drained) when over limit."""
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            await part.release()
            return None
    return bytes(data)


async def read_report(request: web.Request, max_photos: int, gate: Gate) -> Posted:
    """The posted form (multipart, as the page sends it; urlencoded without photos), or
    BadForm, or 411/413 when its length is not given or is over the largest form. The
    gate runs at the first photos part, before its bytes are read; photos before the
    token are BadForm."""
    settings = request.app[SETTINGS]
    posted = Posted()
    if request.content_type == "application/x-www-form-urlencoded":
        form = await read_form(request)
        for name in TEXT_FIELDS:
            value = form.get(name)
            if isinstance(value, str):
                posted.fields[name] = value
        _check_text(posted.fields)
        return posted
    if request.content_type != "multipart/form-data":
        raise BadForm("not a form")
    limit = body_limit(settings, max_photos)
    if request.content_length is None:
        raise web.HTTPLengthRequired(text="send the form with its Content-Length")
    if request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        reader = await request.multipart()
        for _ in range(MAX_PARTS):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise BadForm("a form inside a form")
            await _take_part(posted, part, settings.max_photo_bytes, max_photos, gate)
        else:
            raise BadForm("too many parts")
    except (ValueError, AssertionError, HttpProcessingError, LookupError, RuntimeError) as exc:
        # A part whose headers do not parse, a "_charset_" aiohttp cannot take: the client's.
        raise BadForm("not a form this page sends") from exc
    _check_text(posted.fields)
    return posted


async def _take_part(
    posted: Posted, part: BodyPartReader, max_bytes: int, max_photos: int, gate: Gate
) -> None:
    name = part.name or ""
    if name == "photos":
        if not posted.gated:
            if "token" not in posted.fields:
                raise BadForm("photos before the token")
            _check_text(posted.fields)
            await gate(posted.fields)
            posted.gated = True
        data = await _read_part(part, max_bytes)
        if data is None:
            posted.too_large += 1
        elif data:  # an empty part: no file chosen
            if len(posted.uploads) >= max_photos:
                posted.too_many = True
            else:
                posted.uploads.append(data)
        return
    if name not in TEXT_FIELDS or name in posted.fields:
        await part.release()
        if name in posted.fields:
            raise BadForm(f"{name} twice")
        return
    data = await _read_part(part, FIELD_BYTES)
    if data is None:
        raise BadForm(f"{name} too long")
    posted.fields[name] = data.decode("utf-8")


def _check_text(fields: dict[str, str]) -> None:
    for name, value in fields.items():
        if "\x00" in value:
            raise BadForm(f"NUL in {name}")


def _coordinate(text: str, bound: float) -> float | None:
    text = text.strip().replace(",", ".")
    if not text or len(text) > PLACE_CHARS:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and -bound <= value <= bound else None


# --- the page ----------------------------------------------------------------------------------


def _cookie(request: web.Request) -> str:
    value = request.cookies.get(COOKIE, "")
    return value if 20 <= len(value) <= 64 and value.isascii() and value.isalnum() else ""


def _form_page(
    request: web.Request,
    *,
    status: int = 200,
    cookie: str = "",
    token: str | None = None,
    kept: list[dict[str, Any]] | None = None,
    values: dict[str, str] | None = None,
    problems: list[FormProblem] | None = None,
    ward_choices: list[tuple[str, str]] | None = None,
) -> web.Response:
    """The form, with what was typed, the problems found and the photos kept."""
    settings = request.app[SETTINGS]
    channel = request.app[CHANNEL]
    lang = language(request)
    cookie = cookie or secrets.token_hex(16)
    kept = kept or []
    token = token or new_token(cookie, kept)
    values = values or {}
    t = public_translator(lang)
    by_field: dict[str, list[str]] = {}
    for problem in problems or []:
        key = problem.key if problem.key.startswith("report.") else f"report.problem.{problem.key}"
        params = {"formats": ACCEPTED_NAMES, "max_mb": _max_mb(settings), **problem.params}
        by_field.setdefault(problem.where, []).append(t(key, **params))
    response = render_public(
        request,
        "report_form.html",
        status=status,
        token=token,
        values=values,
        problems=by_field,
        # Said first, above the form, each linking to its field: the page opens at the top.
        summary=[(where, m) for where, messages in by_field.items() if where for m in messages],
        ward_choices=ward_choices or [],
        kept=len(kept),
        categories=channel.categories(lang),
        consent_text=channel.consent_text(lang, settings.retention_identity_months),
        consent_version=CONSENT_TEXT_VERSION,
        max_photos=channel.max_photos,
        max_description=channel.max_description,
        max_mb=_max_mb(settings),
        formats=ACCEPTED_NAMES,
        tiles=settings.map_tile_url,
    )
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request),
        path="/report",
        max_age=TOKEN_HOURS * HOUR,
    )
    return response


def _max_mb(settings: Settings) -> int:
    return max(1, settings.max_photo_bytes // (1024 * 1024))


async def report_page(request: web.Request) -> web.Response:
    """GET /report: the form."""
    return _form_page(request, cookie=_cookie(request))


class _Undo(Exception):
    """Roll the filing's transaction back, and answer with this page."""

    def __init__(self, page: web.Response) -> None:
        self.page = page


async def send_report(request: web.Request) -> web.StreamResponse:
    """POST /report: check the token and the limits (before a photo is read), count the
    try, store the photos, and file the form through the conversation core; the form
    again with its problems, or the code."""
    app = request.app
    settings = app[SETTINGS]
    channel = app[CHANNEL]
    cookie = _cookie(request)
    admitted: list[dict[str, Any]] = []

    async def gate(fields: dict[str, str]) -> None:
        admitted.append(await _admit(request, cookie, fields))

    try:
        posted = await read_report(request, channel.max_photos, gate)
        token = admitted[0] if admitted else await _admit(request, cookie, posted.fields)
    except (BadForm, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text="not a form this page sends") from exc
    except _Undo as undo:
        return undo.page
    values = _values(posted.fields)
    kept: list[dict[str, Any]] = [p for p in token["p"] if isinstance(p, dict)]
    stores = bool(posted.uploads) and not _too_many(posted, kept, channel.max_photos)
    form, problems = _form(request, posted, kept, [])
    if (stores or (form is not None and not problems)) and not await take_try(
        request, token["n"], stores
    ):
        return _over_limit(request, cookie, values, "tries")
    problems, photo_errors = await _store_photos(request, posted, kept, channel.max_photos)
    form, form_problems = _form(request, posted, kept, photo_errors)
    problems += form_problems
    if form is None or problems:
        # The page's own problems refuse the form: the core is not asked (no filing, no
        # lock); what it says of the rest comes once these are put right.
        return _form_page(
            request, status=400, cookie=cookie, kept=kept, values=values, problems=problems
        )
    try:
        async with _one_writer(request), app[SESSIONS]() as session, session.begin():
            if not await use_token_once(session, token["n"], float(token["t"])):
                raise _Undo(await _used(request, cookie, token, values))
            if not await take_all(session, address_key(client_address(request)), limits(settings)):
                raise _Undo(_over_limit(request, cookie, values))
            filed = await channel.file(
                session, form, wards=app[WARDS], policies=app[POLICIES], settings=settings
            )
            if filed.code is None:
                raise _Undo(
                    _form_page(
                        request,
                        status=400,
                        cookie=cookie,
                        kept=kept,
                        values=values,
                        problems=filed.problems,
                        ward_choices=filed.ward_choices,
                    )
                )
            await note_filed(session, token["n"], filed.code)
    except _Undo as undo:
        return undo.page
    # Filed and committed: only now is the resident told.
    raise _sent(request, filed.code, phone=form.phone is not None)


def _values(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in ("token", "consent")}


def _sent(request: web.Request, code: str, *, phone: bool) -> web.HTTPSeeOther:
    """The answer to a filed form: to the page with its code and the case page's link."""
    sent = keys().seal_json({"code": code, "phone": phone, "t": time.time()}, SENT_PURPOSE)
    return web.HTTPSeeOther(linker(language(request))("/report/sent", s=sent))


async def _admit(request: web.Request, cookie: str, fields: dict[str, str]) -> dict[str, Any]:
    """The token, when it is this browser's, old enough, not used, and the address within
    its limits; else _Undo with the page to answer (or the code, for a form filed)."""
    settings = request.app[SETTINGS]
    values = _values(fields)
    try:
        token = open_token(fields.get("token", ""), cookie, settings.report_form_min_seconds)
    except TokenRefused as refused:
        early = refused.token
        if early is not None:
            # Sent faster than a person fills a form: the same token, good in a moment.
            raise _Undo(
                _form_page(
                    request,
                    status=400,
                    cookie=cookie,
                    token=fields["token"],
                    kept=[p for p in early["p"] if isinstance(p, dict)],
                    values=values,
                    problems=[FormProblem("", "report.problem.too_fast")],
                )
            ) from None
        raise _Undo(
            _form_page(
                request,
                status=403,
                cookie=cookie,
                values=values,
                problems=[FormProblem("", f"report.problem.token_{refused.why}")],
            )
        ) from None
    async with request.app[SESSIONS]() as session:
        used, _ = await token_use(session, token["n"])
    if used:
        raise _Undo(await _used(request, cookie, token, values))
    held = await within_limit(request)
    if held is not None:
        raise _Undo(_over_limit(request, cookie, values, held))
    return token


async def _used(
    request: web.Request, cookie: str, token: dict[str, Any], values: dict[str, str]
) -> web.Response:
    """A token sent again (a retry, a double click): the code it filed, to the browser it
    is bound to (open_token checked the cookie); or "already sent" if none is known."""
    async with request.app[SESSIONS]() as session:
        _, code = await token_use(session, token["n"])
    if code is not None:
        redirect = _sent(request, code, phone=bool(values.get("phone", "").strip()))
        return web.Response(status=redirect.status, headers=redirect.headers)
    return _form_page(
        request,
        status=409,
        cookie=cookie,
        values=values,
        problems=[FormProblem("", "report.problem.token_used")],
    )


@asynccontextmanager
async def _one_writer(request: web.Request) -> AsyncIterator[None]:
    """On SQLite, this process's filings take the write lock in turn: waiting on SQLite's
    busy handler instead, some would lose the race again and again (seconds)."""
    if not is_sqlite(request.app[SETTINGS].database_url):
        yield
        return
    async with request.app[FILING]:
        yield


def _over_limit(
    request: web.Request, cookie: str, values: dict[str, str], held: str = "forms"
) -> web.Response:
    settings = request.app[SETTINGS]
    problem = FormProblem(
        "",
        "report.problem.over_limit" if held == "forms" else "report.problem.over_tries",
        {"hour": settings.report_form_per_hour, "day": settings.report_form_per_day},
    )
    page = _form_page(request, status=429, cookie=cookie, values=values, problems=[problem])
    page.headers["Retry-After"] = str(HOUR)
    return page


def _too_many(posted: Posted, kept: list[dict[str, Any]], max_photos: int) -> bool:
    return posted.too_many or len(kept) + len(posted.uploads) > max_photos


async def _store_photos(
    request: web.Request, posted: Posted, kept: list[dict[str, Any]], max_photos: int
) -> tuple[list[FormProblem], list[str]]:
    """Store the uploads (sanitised, EXIF sealed) beside those kept from before; the
    problems only the page knows of, and the refused uploads for the core to judge."""
    problems: list[FormProblem] = []
    errors: list[str] = ["too_large"] * posted.too_large
    if _too_many(posted, kept, max_photos):
        # None of these is taken: the resident chooses again, knowing which are kept.
        problems.append(FormProblem("photos", "report.problem.too_many", {"max": max_photos}))
        return problems, errors
    settings = request.app[SETTINGS]
    for data in posted.uploads:
        try:
            stored = await store_photo(request.app[MEDIA], data, settings.max_photo_bytes)
        except NotAnImage:
            errors.append("not_image")
        except TooLarge:
            errors.append("too_large")
        except MediaUnavailable:
            errors.append("download_failed")
        else:
            photo = stored.as_dict()
            if all(p.get("sha256") != photo["sha256"] for p in kept):
                kept.append(photo)
    return problems, errors


def _form(
    request: web.Request, posted: Posted, kept: list[dict[str, Any]], photo_errors: list[str]
) -> tuple[WebForm | None, list[FormProblem]]:
    """The form as the core takes it (None without a place or a category), and the
    problems of what only the page asks (consent ticked, a place, a category offered, a
    phone that is a phone)."""
    f = posted.fields
    channel = request.app[CHANNEL]
    problems = []
    if f.get("consent") != CONSENT_TEXT_VERSION:
        problems.append(FormProblem("consent", "report.problem.consent"))
    lat = _coordinate(f.get("lat", ""), 90)
    lon = _coordinate(f.get("lon", ""), 180)
    if lat is None or lon is None:
        problems.append(FormProblem("place", "report.problem.place"))
    category = f.get("category", "")
    if category not in {code for code, _ in channel.categories("vi")}:
        problems.append(FormProblem("category", "report.problem.category"))
    phone = None
    if f.get("phone", "").strip():
        phone = normalise_phone(f["phone"])
        if phone is None:
            problems.append(FormProblem("phone", "report.problem.phone"))
    if lat is None or lon is None or not any(category == c for c, _ in channel.categories("vi")):
        # The core cannot be asked without a place and a category: say what it would of
        # the photos.
        refused = dict.fromkeys(photo_errors)
        problems += [FormProblem("photos", f"photos.error.{e}") for e in refused]
        return None, problems
    photos = [{**p, "gps": tuple(p["gps"]) if p.get("gps") else None} for p in kept]
    return (
        WebForm(
            language=language(request),
            lat=lat,
            lon=lon,
            category=category,
            description=f.get("description", ""),
            phone=phone,
            ward=f.get("ward") or None,
            photos=photos,
            photo_errors=photo_errors,
        ),
        problems,
    )


async def sent_page(request: web.Request) -> web.Response:
    """GET /report/sent: the code and the case page's link, after the form was filed."""
    try:
        sent = keys().open_json(request.query.get("s", ""), SENT_PURPOSE)
        code = str(sent["code"])
    except (DataKeyError, ValueError, KeyError, TypeError):
        raise web.HTTPNotFound() from None
    return render_public(request, "report_sent.html", code=code, phone=bool(sent.get("phone")))


def mount_report_form(app: web.Application, channel: ReportChannel) -> None:
    app[CHANNEL] = channel
    app[FILING] = asyncio.Lock()
    app.router.add_get("/report", report_page)
    app.router.add_post("/report", send_report)
    app.router.add_get("/report/sent", sent_page)
