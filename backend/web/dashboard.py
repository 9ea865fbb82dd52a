"""The staff dashboard: login, queues, the ticket page and its actions. Server-rendered
with Jinja2 (autoescaped), scoped to the signed-in user's units, CSRF on every form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.db import write_retrying
from backend.geo import haversine_km
from backend.i18n import Catalogues
from backend.models import (
    AuditEvent,
    Category,
    Photo,
    Reporter,
    ReporterIdentity,
    Ticket,
    TicketNote,
    Unit,
    User,
    Ward,
    utcnow,
)
from backend.services.abuse import MUTE_DAYS, muted_until
from backend.services.additions import ADDED
from backend.services.geocoding import Geocoder, GeocoderDown, find_place
from backend.services.intake import ReportDraft, is_approximate, submit_report
from backend.services.media_store import MediaUnavailable
from backend.services.notify import mark_called, needs_call, undelivered
from backend.services.photos import NotAnImage, TooLarge, read_photo, store_photo
from backend.services.privacy import UNSEAL
from backend.services.reporters import (
    PHONE_CONSENT_VERSION,
    create_phone_reporter,
    normalise_phone,
    record_consent,
)
from backend.services.tickets import is_public
from backend.services.units import WardIndex, WardInfo
from backend.services.workflow import (
    ACTION_RETRIES,
    OPEN_STATES,
    REJECT_REASONS,
    STATES,
    Action,
    Actor,
    WorkflowError,
    act,
    allowed_actions,
    audit_note,
    find_visible_ticket,
    is_overdue,
    lock_tickets,
    overdue_filter,
    scope_query,
)
from backend.text import parse_point
from backend.timeutil import VN_TZ, format_local
from backend.web.app import GEOCODER, MEDIA, POLICIES, SESSIONS, SETTINGS, WARDS
from backend.web.auth import WEB_SESSION, csrf_ok, signed_in
from backend.web.bodies import read_form, upload_limit
from backend.web.timeline import describe, names_for

HERE = Path(__file__).resolve().parent
TEXT = Catalogues(HERE / "locales", "web")
TRIAGE = ("operator", "supervisor", "admin")
VIEWS = ("new", "mine", "overdue", "call", "all")
ANSWER_TEMPLATES = ("template.cleaned", "template.fined", "template.not_found")
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def translator(request: web.Request) -> Callable[..., str]:
    """The page's catalogue: English when asked (?lang=en), else Vietnamese."""
    language = "en" if request.query.get("lang") == "en" else "vi"
    return lambda key, **p: TEXT.translate(language, key, **p)


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    user = signed_in(request)
    web_session = request.get(WEB_SESSION)
    html = _ENV.get_template(name).render(
        t=translator(request),
        user=user,
        csrf=web_session.csrf_token if web_session else "",
        local=lambda dt: format_local(dt) if dt else "",
        **context,
    )
    return web.Response(text=html, content_type="text/html", status=status)


async def require_user(request: web.Request, session: AsyncSession) -> tuple[User, Actor]:
    user = signed_in(request)
    if user is None:
        raise web.HTTPSeeOther("/login")
    return user, await Actor.of_user(session, user)


async def check_csrf(request: web.Request, limit: int = 0) -> dict[str, Any]:
    """The form's fields once its CSRF token checks out, text without NUL characters
    (which PostgreSQL refuses in text); limit: the form's size with its files (a form
    without files: FORM_LIMIT)."""
    posted = await read_form(request, limit)
    form = {
        key: value.replace("\x00", "") if isinstance(value, str) else value
        for key, value in ((key, posted[key]) for key in dict.fromkeys(posted))
    }
    web_session = request.get(WEB_SESSION)
    if web_session is None or not csrf_ok(web_session.csrf_token, form.get("csrf")):
        raise web.HTTPForbidden(text=TEXT.translate("vi", "csrf.refused"))
    return form


# An unsealing or an erasure says why, in a few words at least (it is in the audit trail).
MIN_REASON = 5
MAX_REASON = 300


def stated_reason(form: dict[str, Any]) -> str | None:
    """The form's reason, trimmed to MAX_REASON; None when shorter than MIN_REASON."""
    reason = str(form.get("reason") or "").strip()[:MAX_REASON]
    return reason if len(reason) >= MIN_REASON else None


# --- queues ------------------------------------------------------------------------------


def _view_filter(
    query: Select[Any], view: str, user: User, actor: Actor, now: datetime
) -> Select[Any]:
    if view == "new":
        waiting = ("received", "classified") if actor.role in TRIAGE else ()
        states = (*waiting, "assigned", "transferred", "reopened")
        return query.where(Ticket.state.in_(states))
    if view == "mine":
        return query.where(Ticket.claimed_by == user.id, Ticket.state.in_(OPEN_STATES))
    if view == "overdue":
        return query.where(overdue_filter(now))
    if view == "call":
        return query.where(needs_call())
    return query


def _day(value: str | None, *, end: bool = False) -> datetime | None:
    try:
        day = date.fromisoformat(value) if value else None
    except ValueError:
        return None
    if day is None:
        return None
    moment = datetime.combine(day, time.min, VN_TZ)
    return moment + timedelta(days=1) if end else moment


async def queue(request: web.Request) -> web.Response:
    now = utcnow()
    q = request.query
    view = q.get("view", "new") if q.get("view", "new") in VIEWS else "new"
    async with request.app[SESSIONS]() as session:
        user, actor = await require_user(request, session)
        scoped = scope_query(select(Ticket), actor)
        counts = {}
        for name in VIEWS:
            counted = _view_filter(scoped, name, user, actor, now).subquery()
            counts[name] = await session.scalar(select(func.count()).select_from(counted))
        query = _view_filter(scoped, view, user, actor, now)
        if q.get("category"):
            query = query.where(Ticket.category_code == q["category"])
        if q.get("state") in STATES:
            query = query.where(Ticket.state == q["state"])
        if q.get("urgency") in ("urgent", "normal"):
            query = query.where(Ticket.urgency == q["urgency"])
        if (start := _day(q.get("from"))) is not None:
            query = query.where(Ticket.created_at >= start)
        if (stop := _day(q.get("to"), end=True)) is not None:
            query = query.where(Ticket.created_at < stop)
        query = query.order_by(Ticket.due_at.is_(None), Ticket.due_at, Ticket.id).limit(300)
        tickets = list(await session.scalars(query))
        wards = {
            w.code: w.name
            for w in await session.scalars(
                select(Ward).where(Ward.code.in_({t.ward_code for t in tickets}))
            )
        }
        categories = list(await session.scalars(select(Category).order_by(Category.sort_order)))
        moved = None
        if q.get("moved") and q.get("unit"):
            went = await session.scalar(select(Unit.name).where(Unit.code == q["unit"]))
            moved = {"code": q["moved"][:20], "unit": went} if went else None
    names = {c.code: c.name_vi for c in categories}
    rows = [
        {
            "code": t.code,
            "category": names.get(t.category_code, t.category_code),
            "ward": wards.get(t.ward_code, t.ward_code),
            "state": t.state,
            "urgency": t.urgency,
            "due": t.due_at,
            "overdue": is_overdue(t, now),
        }
        for t in tickets
    ]
    return render(
        request,
        "queue.html",
        view=view,
        counts=counts,
        rows=rows,
        categories=categories,
        states=STATES,
        query=q,
        moved=moved,
    )


# --- the ticket page ---------------------------------------------------------------------


async def _visible_ticket(request: web.Request, session: AsyncSession, actor: Actor) -> Ticket:
    ticket = await find_visible_ticket(session, actor, request.match_info["code"])
    if ticket is None:
        # Out of scope answers exactly as missing: an outsider learns nothing of it.
        raise web.HTTPNotFound(
            text=render(request, "notfound.html", status=404).text, content_type="text/html"
        )
    return ticket


async def ticket_page(request: web.Request) -> web.Response:
    return await _ticket_response(request, identity=None)


async def _ticket_response(
    request: web.Request,
    identity: dict[str, Any] | None,
    *,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    async with request.app[SESSIONS]() as session:
        _, actor = await require_user(request, session)
        ticket = await _visible_ticket(request, session, actor)
        ward = await session.get(Ward, ticket.ward_code)
        unit = await session.get(Unit, ticket.unit_id)
        category = await session.get(Category, ticket.category_code)
        reporter = await session.get(Reporter, ticket.reporter_id) if ticket.reporter_id else None
        # Anonymous: left neither a phone nor a name (a chat reporter who chose
        # "Ẩn danh"); asked of the look-up and of NULL, nothing is unsealed.
        anonymous = reporter is not None and bool(
            await session.scalar(
                select(
                    ReporterIdentity.phone_key.is_(None) & ReporterIdentity.display_name.is_(None)
                ).where(ReporterIdentity.reporter_id == reporter.id)
            )
        )
        case = await session.get(Ticket, ticket.case_id) if ticket.case_id else None
        photos = list(
            await session.scalars(
                select(Photo).where(Photo.ticket_id == ticket.id).order_by(Photo.id)
            )
        )
        events = list(
            await session.scalars(
                select(AuditEvent).where(AuditEvent.ticket_id == ticket.id).order_by(AuditEvent.id)
            )
        )
        names = await names_for(session, events)
        notes = list(
            await session.execute(
                select(TicketNote, User.display_name)
                .join(User, User.id == TicketNote.user_id)
                .where(TicketNote.ticket_id == ticket.id)
                .order_by(TicketNote.id)
            )
        )
        unsent = await undelivered(session, ticket.id)
        now = utcnow()
        # Muting (backend/web/mutes.py): for triage roles, a reporter not forgotten.
        can_mute = actor.role in TRIAGE and reporter is not None and reporter.erased_at is None
        muted = await muted_until(session, reporter.id, now) if can_mute and reporter else None
        public = await is_public(session, ticket)
    # Where the pin is, in words (the geocoder's answer is cached: once per place); a
    # ward's centre is no address.
    approximate = is_approximate(ticket.location_source)
    address = ticket.address
    if address is None and not approximate:
        address = await request.app[GEOCODER].reverse_within(ticket.lat, ticket.lon, REVERSE_WAIT)
    return render(
        request,
        "ticket.html",
        ticket=ticket,
        address=address,
        approximate=approximate,
        ward=ward,
        unit=unit,
        category=category,
        pseudonym=f"#{reporter.pseudonym}" if reporter else None,
        case=case,
        public=public,
        evidence=[p for p in photos if p.kind not in ("result", "addition")],
        added=[p for p in photos if p.kind == "addition"],
        results=[p for p in photos if p.kind == "result"],
        additions=[e for e in events if e.action == ADDED],
        anonymous=anonymous,
        timeline=describe(events, names, translator(request), TEXT.catalogue("vi"), actor.role),
        notes=notes,
        unsent=unsent,
        actions=allowed_actions(ticket, actor.role),
        can_unseal=actor.role in TRIAGE and ticket.reporter_id is not None,
        can_publish=actor.role in PUBLISHERS,
        can_mute=can_mute,
        muted_until=muted,
        mute_days=MUTE_DAYS,
        identity=identity,
        overdue=is_overdue(ticket, now),
        reasons=REJECT_REASONS,
        templates=ANSWER_TEMPLATES,
        tiles=request.app[SETTINGS].map_tile_url,
        error=error or request.query.get("error"),
        known_keys=TEXT.catalogue("vi"),
        done=request.query.get("done"),
        status=status,
    )


async def ticket_action(request: web.Request) -> web.StreamResponse:
    """POST /tickets/{code}/act (a form, with a photo for an answer)."""
    form = await check_csrf(request, upload_limit(request.app[SETTINGS]))
    settings = request.app[SETTINGS]
    code = request.match_info["code"]
    photos: list[dict[str, Any]] = []
    upload = form.get("photo")
    problem: str | None = None
    if isinstance(upload, web.FileField) and upload.filename:
        data = upload.file.read(settings.max_photo_bytes + 1)
        try:
            stored = await store_photo(request.app[MEDIA], data, settings.max_photo_bytes)
        except TooLarge:
            problem = "too_large"
        except NotAnImage:
            problem = "not_image"
        except MediaUnavailable:
            problem = "storage_unavailable"
        else:
            photos.append(stored.as_dict())
    due = _day(str(form.get("due") or ""))
    request_action = Action(
        action=str(form.get("action", "")),
        reason=str(form.get("reason") or "") or None,
        result=str(form.get("result") or "") or None,
        photos=photos,
        due=due + timedelta(hours=17) if due else None,
        competence=str(form.get("competence") or "") or None,
        case_code=str(form.get("case") or "").strip().upper() or None,
        urgency=str(form.get("urgency") or "") or None,
    )

    async def attempt() -> tuple[str | None, str | None]:
        """(the refusal's code, or the unit the ticket went to when it left the actor's
        sight, as a transfer to another unit does)."""
        async with request.app[SESSIONS]() as session, session.begin():
            _, actor = await require_user(request, session)
            # Not locked here: act() locks what the action changes, in one order.
            ticket = await _visible_ticket(request, session, actor)
            try:
                await act(session, ticket, request_action, actor, request.app[POLICIES])
            except WorkflowError as exc:
                await session.rollback()
                return exc.code, None
            if await find_visible_ticket(session, actor, code) is None:
                unit = await session.get(Unit, ticket.unit_id)
                return None, unit.code if unit is not None else None
        return None, None

    gone_to: str | None = None
    if problem is None:
        # A race the database settled against this transaction (a deadlock) runs the
        # action again: it then sees what the other did, and says so if it cannot be done.
        problem, gone_to = await write_retrying(attempt, retries=ACTION_RETRIES)
    if gone_to is not None:
        # Out of the actor's sight now: say where it went, rather than show "not found".
        raise web.HTTPSeeOther(f"/queue?{urlencode({'moved': code, 'unit': gone_to})}")
    target = f"/tickets/{code}?" + (f"error={problem}" if problem else "done=ok")
    raise web.HTTPSeeOther(target)


async def add_note(request: web.Request) -> web.StreamResponse:
    form = await check_csrf(request)
    text = str(form.get("text") or "").strip()[:4000]
    async with request.app[SESSIONS]() as session, session.begin():
        user, actor = await require_user(request, session)
        ticket = await _visible_ticket(request, session, actor)
        if text:
            session.add(TicketNote(ticket_id=ticket.id, user_id=user.id, text=text))
    raise web.HTTPSeeOther(f"/tickets/{request.match_info['code']}")


async def phoned(request: web.Request) -> web.StreamResponse:
    """POST /tickets/{code}/phoned: the reporter was phoned about the notices their chat
    could not take; they leave the list, and the call is audited."""
    await check_csrf(request)
    async with request.app[SESSIONS]() as session, session.begin():
        _, actor = await require_user(request, session)
        ticket = await _visible_ticket(request, session, actor)
        if await mark_called(session, ticket.id):
            session.add(audit_note(ticket, actor.label, "phoned_reporter", None, utcnow()))
    raise web.HTTPSeeOther(f"/tickets/{request.match_info['code']}?done=1")


async def show_identity(request: web.Request) -> web.Response:
    """POST /tickets/{code}/identity: triage roles unseal the reporter, saying why; it is
    audited with the reason."""
    form = await check_csrf(request)
    reason = stated_reason(form)
    async with request.app[SESSIONS]() as session, session.begin():
        _, actor = await require_user(request, session)
        ticket = await _visible_ticket(request, session, actor)
        if actor.role not in TRIAGE or ticket.reporter_id is None:
            raise web.HTTPForbidden()
        found = await session.get(ReporterIdentity, ticket.reporter_id)
        if reason is None:
            return await _ticket_response(request, None, error="unseal_reason", status=422)
        if found is None:
            # Erased at the reporter's request (or after the retention period): nothing
            # to unseal, and nothing was seen.
            identity: dict[str, Any] = {"erased": True}
        else:
            session.add(audit_note(ticket, actor.label, UNSEAL, reason, utcnow()))
            identity = {"name": found.display_name, "phone": found.phone, "channel": found.channel}
    return await _ticket_response(request, identity=identity)


# Who decides what the public sees of a case: triage, and the leader of the unit that
# handles it (within their scope, as for every action on the ticket page).
PUBLISHERS = ("operator", "supervisor", "admin", "ward_leader")


async def case_visibility(request: web.Request) -> web.StreamResponse:
    """POST /tickets/{code}/public: hide the case from the public page, with a reason, or
    show it again; audited ("hide", "unhide") with the reason."""
    form = await check_csrf(request)
    hide = form.get("do") == "hide"
    reason = stated_reason(form)
    async with request.app[SESSIONS]() as session, session.begin():
        _, actor = await require_user(request, session)
        ticket = await _visible_ticket(request, session, actor)
        if actor.role not in PUBLISHERS:
            raise web.HTTPForbidden()
        if reason is None:
            return await _ticket_response(request, None, error="public_reason", status=422)
        [ticket] = await lock_tickets(session, [ticket.id])
        now = utcnow()
        if hide and ticket.hidden_at is None:
            ticket.hidden_at, ticket.hidden_reason = now, reason
            session.add(audit_note(ticket, actor.label, "hide", reason, now))
        elif not hide and ticket.hidden_at is not None:
            ticket.hidden_at, ticket.hidden_reason = None, None
            session.add(audit_note(ticket, actor.label, "unhide", reason, now))
    raise web.HTTPSeeOther(f"/tickets/{request.match_info['code']}?done=ok")


async def photo_visibility(request: web.Request) -> web.StreamResponse:
    """POST /tickets/{code}/photos/{id}/public: publish a photo on the public page (an
    evidence photo shown unblurred, a result photo shown at all), or withdraw it; audited
    ("publish_photo", "unpublish_photo") with the photo."""
    form = await check_csrf(request)
    publish = form.get("do") == "publish"
    async with request.app[SESSIONS]() as session, session.begin():
        _, actor = await require_user(request, session)
        ticket = await _visible_ticket(request, session, actor)
        if actor.role not in PUBLISHERS:
            raise web.HTTPForbidden()
        photo = await session.scalar(
            select(Photo).where(
                Photo.id == int(request.match_info["id"][:9]), Photo.ticket_id == ticket.id
            )
        )
        if photo is None:
            raise web.HTTPNotFound()
        if photo.public != publish:
            photo.public = publish
            action = "publish_photo" if publish else "unpublish_photo"
            note = f"{photo.kind} {photo.id}"
            session.add(audit_note(ticket, actor.label, action, note, utcnow()))
    raise web.HTTPSeeOther(f"/tickets/{request.match_info['code']}?done=ok")


async def media(request: web.Request) -> web.StreamResponse:
    """GET /media/{sha256}: a photo, to those who may see a ticket it belongs to."""
    sha = request.match_info["sha256"]
    async with request.app[SESSIONS]() as session:
        _, actor = await require_user(request, session)
        visible = await session.scalar(
            scope_query(select(Ticket.id).join(Photo, Photo.ticket_id == Ticket.id), actor)
            .where(Photo.sha256 == sha)
            .limit(1)
        )
    try:
        photo = await read_photo(request.app[MEDIA], sha) if visible else None
    except MediaUnavailable as exc:
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "5"}) from exc
    if photo is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=photo.data,
        content_type=photo.content_type,
        # Content-addressed: the name is the version.
        headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{photo.name}"'},
    )


# --- hotline phone intake ---------------------------------------------------------------


def _forbidden(request: web.Request) -> web.HTTPForbidden:
    return web.HTTPForbidden(
        text=render(request, "forbidden.html", status=403).text, content_type="text/html"
    )


async def require_triage(request: web.Request, session: AsyncSession) -> Actor:
    _, actor = await require_user(request, session)
    if actor.role not in TRIAGE:
        raise _forbidden(request)
    return actor


async def require_admin(request: web.Request, session: AsyncSession) -> Actor:
    """The signed-in admin, or the forbidden page for anyone else."""
    actor = await require_triage(request, session)
    if actor.role != "admin":
        raise _forbidden(request)
    return actor


async def phone_form(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        await require_triage(request, session)
        categories = list(await session.scalars(select(Category).order_by(Category.sort_order)))
    return render(
        request,
        "phone.html",
        consent_version=PHONE_CONSENT_VERSION,
        categories=categories,
        form={},
        problem=None,
        choices=[],
        tiles=request.app[SETTINGS].map_tile_url,
    )


# Seconds the ticket page waits for an address from the geocoder.
REVERSE_WAIT = 1.5


@dataclass(frozen=True, slots=True)
class _Place:
    ward_code: str
    lat: float
    lon: float
    source: str
    address: str | None = None


async def _place(
    wards: WardIndex, geocoder: Geocoder, form: dict[str, Any], province: str | None
) -> _Place | list[WardInfo] | None:
    """Where a phone report is: a ward pick, a point on the map, or a typed address; or
    the wards a typed name may mean, to choose from (the operator's province's first)."""
    picked = str(form.get("ward") or "").strip()
    point = parse_point(str(form.get("point") or ""))
    if picked:
        ward = wards.get(picked)
        if ward is None:
            meant = wards.meant(picked, province)
            near = wards.place(*point).nearest if point is not None else None
            if len(meant) > 1 and near is not None and near in meant:
                meant = [near]  # the point on the map says which
            if len(meant) > 1:
                return meant
            ward = meant[0] if meant else None
        if ward is not None:
            if point is not None and wards.covers(*point):
                return _Place(ward.code, point[0], point[1], "map", _typed_place(form) or None)
            return await _within(wards, geocoder, ward, _typed_place(form))
    if point is not None:
        placed = wards.place(*point)
        if placed.in_vietnam and placed.nearest is not None:
            code = placed.nearest.code
            return _Place(code, point[0], point[1], "map", _typed_place(form) or None)
    typed = _typed_place(form)
    if not typed:
        return None
    try:
        spot = await find_place(geocoder, wards, typed)
    except GeocoderDown:
        spot = None
    if spot is not None:
        found = wards.place(spot.lat, spot.lon).nearest
        if found is not None:
            # Only a ward's name matched: its centre, approximate.
            source = "address" if spot.source == "nominatim" else "ward_name"
            return _Place(found.code, spot.lat, spot.lon, source, spot.address)
    for part in typed.split(","):
        named = wards.search(part.strip())
        if named:
            return _Place(named[0].code, named[0].lat, named[0].lon, "ward_name", typed)
    return None


def _typed_place(form: dict[str, Any]) -> str:
    return " ".join(str(form.get("place") or "").split())[:300]


# How far from a ward's centre a geocoded address may lie and still be in it, at least.
WITHIN_WARD_KM = 3.0


async def _within(wards: WardIndex, geocoder: Geocoder, ward: WardInfo, typed: str) -> _Place:
    """A ward picked with an address: the address's point if the geocoder finds it in
    the ward, else the ward's centre (approximate); the address is kept either way."""
    if typed:
        try:
            spot = await find_place(geocoder, wards, f"{typed}, {ward.label}")
        except GeocoderDown:
            spot = None
        if spot is not None and spot.source == "nominatim":
            reach = max(WITHIN_WARD_KM, 2 * ward.radius_km)
            if haversine_km(spot.lat, spot.lon, ward.lat, ward.lon) <= reach:
                return _Place(ward.code, spot.lat, spot.lon, "address", typed)
    return _Place(ward.code, ward.lat, ward.lon, "ward_pick", typed or None)


async def phone_intake(request: web.Request) -> web.StreamResponse:
    """POST /intake/phone: an operator files a caller's report; the same ticket as a chat's."""
    form = await check_csrf(request, upload_limit(request.app[SETTINGS]))
    settings = request.app[SETTINGS]
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    problem: str | None = None
    phone_text = fields.get("phone", "").strip()
    phone = normalise_phone(phone_text) if phone_text else None
    description = fields.get("description", "").strip()
    async with request.app[SESSIONS]() as session:
        province = (await require_triage(request, session)).province_code
    found = await _place(request.app[WARDS], request.app[GEOCODER], fields, province)
    place = found if isinstance(found, _Place) else None
    choices = found if isinstance(found, list) else []
    caller = [fields.get(k, "").strip() for k in ("name", "phone", "address")]
    if phone_text and phone is None:
        problem = "phone.bad_phone"
    elif any(caller) and fields.get("consent") != PHONE_CONSENT_VERSION:
        # Details of the caller are kept only with the consent read out to them.
        problem = "phone.no_consent"
    elif not description:
        problem = "phone.no_description"
    elif choices:
        problem = "phone.choose_ward"
    elif place is None:
        problem = "phone.no_place"
    photos: list[dict[str, Any]] = []
    # (the dict made by check_csrf keeps one file per name; photos may be several)
    uploads = [
        v
        for k, v in (await read_form(request, upload_limit(settings))).items()
        if k == "photos" and isinstance(v, web.FileField) and v.filename
    ]
    for upload in uploads:
        data = upload.file.read(settings.max_photo_bytes + 1)
        try:
            stored = await store_photo(request.app[MEDIA], data, settings.max_photo_bytes)
        except (TooLarge, NotAnImage):
            problem = problem or "phone.bad_photo"
        except MediaUnavailable:
            problem = problem or "phone.storage_unavailable"
        else:
            photos.append(stored.as_dict())
    category = fields.get("category", "other")
    async with request.app[SESSIONS]() as session, session.begin():
        actor = await require_triage(request, session)
        if problem is None and await session.get(Category, category) is None:
            problem = "phone.bad_category"
        if problem is None and place is not None and actor.role != "admin":
            ward = request.app[WARDS].get(place.ward_code)
            if ward is None or ward.province_code != actor.province_code:
                problem = "phone.other_province"
        if problem is not None or place is None:
            categories = list(await session.scalars(select(Category).order_by(Category.sort_order)))
            return render(
                request,
                "phone.html",
                consent_version=PHONE_CONSENT_VERSION,
                status=422,
                categories=categories,
                form=fields,
                problem=problem,
                choices=choices,
                tiles=settings.map_tile_url,
            )
        reporter_id = await create_phone_reporter(
            session,
            fields.get("name", "").strip()[:100] or None,
            phone,
            fields.get("address", "").strip()[:200] or None,
        )
        if any(caller):
            await record_consent(session, reporter_id, "vi", version=PHONE_CONSENT_VERSION)
        submitted = await submit_report(
            session,
            ReportDraft(
                category_code=category,
                ward_code=place.ward_code,
                lat=place.lat,
                lon=place.lon,
                location_source=place.source,
                address=place.address,
                description=description[:2000],
                nature="one_off" if fields.get("nature") == "one_off" else "recurring",
                polluter=fields.get("polluter", "").strip()[:200] or None,
                phone=phone,
                photos=photos,
            ),
            reporter_id=reporter_id,
            channel="phone",
            now=utcnow(),
            policies=request.app[POLICIES],
        )
        ticket = await session.get(Ticket, submitted.ticket_id)
        if ticket is not None:
            session.add(audit_note(ticket, actor.label, "phone_intake", None, utcnow()))
    # Filed in the operator's own province (or by an admin): its page shows the code to
    # read back to the caller.
    raise web.HTTPSeeOther(f"/tickets/{submitted.code}")


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/queue" if signed_in(request) else "/login")


def mount_dashboard(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/queue", queue)
    app.router.add_get("/tickets/{code}", ticket_page)
    app.router.add_post("/tickets/{code}/act", ticket_action)
    app.router.add_post("/tickets/{code}/notes", add_note)
    app.router.add_post("/tickets/{code}/identity", show_identity)
    app.router.add_post("/tickets/{code}/phoned", phoned)
    app.router.add_post("/tickets/{code}/public", case_visibility)
    app.router.add_post("/tickets/{code}/photos/{id:[0-9]+}/public", photo_visibility)
    app.router.add_get("/media/{sha256:[0-9a-f]{64}}", media)
    app.router.add_get("/intake/phone", phone_form)
    app.router.add_post("/intake/phone", phone_intake)
    app.router.add_static("/static", HERE / "static")
