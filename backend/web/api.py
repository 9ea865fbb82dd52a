"""JSON service API under /api/v1: list, show and act on tickets, and upload result photos.

Who is asking comes from `identify` (the staff issue brings logins; until then only the
test environment names a user, with the X-Hotline-Test-User header). Every answer is
scoped to what that person may see, and shows reporters by pseudonym only.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import (
    AuditEvent,
    Category,
    OutboxMessage,
    Photo,
    Reporter,
    Ticket,
    Unit,
    User,
    utcnow,
)
from backend.services.notify import needs_call
from backend.services.photos import NotAnImage, TooLarge, find_media, inspect_image, store_photo
from backend.services.workflow import (
    Action,
    Actor,
    WorkflowError,
    act,
    allowed_actions,
    find_ticket,
    in_scope,
    is_overdue,
    overdue_filter,
    scope_query,
)
from backend.web.app import POLICIES, SESSIONS, SETTINGS
from backend.web.auth import WEB_SESSION, csrf_ok, signed_in

TEST_USER_HEADER = "X-Hotline-Test-User"
CSRF_HEADER = "X-CSRF-Token"
# WorkflowError codes → HTTP status.
_STATUS = {"forbidden": 403, "out_of_scope": 403, "wrong_state": 409, "unknown_action": 400}


_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    415: web.HTTPUnsupportedMediaType,
    422: web.HTTPUnprocessableEntity,
}


def json_error(status: int, body: dict[str, str]) -> web.HTTPException:
    return _ERRORS[status](text=json.dumps(body), content_type="application/json")


async def identify(request: web.Request, session: AsyncSession) -> tuple[User, Actor]:
    """The staff member behind a request, or 401: the dashboard's session (with its CSRF
    token in X-CSRF-Token for changes), or in tests the X-Hotline-Test-User header."""
    user = signed_in(request)
    if user is not None:
        web_session = request[WEB_SESSION]
        changing = request.method not in ("GET", "HEAD", "OPTIONS")
        if changing and not csrf_ok(web_session.csrf_token, request.headers.get(CSRF_HEADER)):
            raise json_error(403, {"error": "csrf", "detail": "send X-CSRF-Token"})
        return user, await Actor.of_user(session, user)
    settings = request.app[SETTINGS]
    username = request.headers.get(TEST_USER_HEADER)
    if settings.environment != "test" or not username:
        raise json_error(401, {"error": "unauthenticated", "detail": "log in first"})
    user = await session.scalar(select(User).where(User.username == username, User.active))
    if user is None:
        raise json_error(401, {"error": "unauthenticated", "detail": "unknown user"})
    try:
        return user, await Actor.of_user(session, user)
    except WorkflowError as exc:
        raise json_error(403, {"error": exc.code, "detail": str(exc)}) from exc


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _summary(session: AsyncSession, ticket: Ticket, now: datetime) -> dict[str, Any]:
    unit = await session.get(Unit, ticket.unit_id)
    return {
        "code": ticket.code,
        "state": ticket.state,
        "category": ticket.category_code,
        "ward_code": ticket.ward_code,
        "unit": unit.code if unit else None,
        "urgency": ticket.urgency,
        "due_at": _iso(ticket.due_at),
        "overdue": is_overdue(ticket, now),
        "created_at": _iso(ticket.created_at),
        "case": None,
    }


async def list_tickets(request: web.Request) -> web.Response:
    """GET /api/v1/tickets?state=…&overdue=1&undelivered=1: the caller's tickets, soonest
    due first (undelivered: a notice did not reach the reporter, who needs a phone call)."""
    now = utcnow()
    async with request.app[SESSIONS]() as session:
        _, actor = await identify(request, session)
        query = scope_query(select(Ticket), actor)
        if state := request.query.get("state"):
            query = query.where(Ticket.state == state)
        if request.query.get("undelivered") == "1":
            query = query.where(needs_call())
        if request.query.get("overdue") == "1":
            query = query.where(overdue_filter(now))
        query = query.order_by(Ticket.due_at.is_(None), Ticket.due_at, Ticket.id).limit(500)
        tickets = list(await session.scalars(query))
        items = [await _summary(session, t, now) for t in tickets]
    return web.json_response({"tickets": items})


async def _ticket_for(
    request: web.Request, session: AsyncSession, actor: Actor, *, lock: bool = False
) -> Ticket:
    ticket = await find_ticket(session, request.match_info["code"], lock=lock)
    if ticket is None or not await in_scope(session, actor, ticket):
        # Out of scope looks the same as missing to those who may not see it.
        raise json_error(404 if ticket is None else 403, {"error": "not_found"})
    return ticket


async def _detail(session: AsyncSession, ticket: Ticket, actor: Actor) -> dict[str, Any]:
    now = utcnow()
    reporter = await session.get(Reporter, ticket.reporter_id) if ticket.reporter_id else None
    category = await session.get(Category, ticket.category_code)
    events = await session.scalars(
        select(AuditEvent).where(AuditEvent.ticket_id == ticket.id).order_by(AuditEvent.id)
    )
    photos = await session.scalars(
        select(Photo).where(Photo.ticket_id == ticket.id).order_by(Photo.id)
    )
    case = await session.get(Ticket, ticket.case_id) if ticket.case_id else None
    # Delivery state of what the reporter was told (never the chat id itself): a failed
    # notice needs a phone follow-up by staff.
    deliveries = await session.scalars(
        select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id).order_by(OutboxMessage.id)
    )
    return {
        **await _summary(session, ticket, now),
        "case": case.code if case else None,
        "category_name": category.name_vi if category else ticket.category_code,
        "description": ticket.description,
        "polluter": ticket.polluter,
        "nature": ticket.nature,
        "lat": ticket.lat,
        "lon": ticket.lon,
        "reporter": f"#{reporter.pseudonym}" if reporter else None,
        "result": ticket.result_text,
        "rating": ticket.rating,
        "reopen_count": ticket.reopen_count,
        "escalation_count": ticket.escalation_count,
        "actions": allowed_actions(ticket, actor.role),
        "photos": [{"sha256": p.sha256, "kind": p.kind} for p in photos],
        "deliveries": [
            {
                "notice": (d.payload or {}).get("key", d.payload.get("type")),
                "channel": d.channel,
                "status": d.status,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "at": _iso(d.created_at),
            }
            for d in deliveries
        ],
        "timeline": [
            {
                "at": _iso(e.created_at),
                "actor": e.actor,
                "action": e.action,
                "from": e.from_state,
                "to": e.to_state,
                "note": e.note,
            }
            for e in events
        ],
    }


async def show_ticket(request: web.Request) -> web.Response:
    """GET /api/v1/tickets/{code}: details, photos, timeline and the allowed actions."""
    async with request.app[SESSIONS]() as session:
        _, actor = await identify(request, session)
        ticket = await _ticket_for(request, session, actor)
        return web.json_response(await _detail(session, ticket, actor))


def _parse_action(body: dict[str, Any], photos: list[dict[str, Any]]) -> Action:
    due = body.get("due")
    try:
        due_at = datetime.fromisoformat(due) if due else None
    except ValueError as exc:
        raise json_error(422, {"error": "due_required", "detail": "ISO 8601 date"}) from exc
    if due_at is not None and due_at.tzinfo is None:
        raise json_error(422, {"error": "due_required", "detail": "give a time zone"})
    return Action(
        action=str(body.get("action", "")),
        note=body.get("note"),
        reason=body.get("reason"),
        result=body.get("result"),
        photos=photos,
        unit_code=body.get("unit"),
        due=due_at,
        case_code=body.get("case"),
        urgency=body.get("urgency"),
        competence=body.get("competence"),
    )


async def act_on_ticket(request: web.Request) -> web.Response:
    """POST /api/v1/tickets/{code}/actions {"action": …, …}: one step of the procedure."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise json_error(400, {"error": "bad_json"}) from exc
    if not isinstance(body, dict):
        raise json_error(400, {"error": "bad_json"})
    media_dir = request.app[SETTINGS].media_dir
    photos = []
    for sha in body.get("photos") or []:
        path = find_media(media_dir, str(sha))
        if path is None:
            raise json_error(422, {"error": "photos_required", "detail": f"no photo {sha}"})
        data = await asyncio.to_thread(path.read_bytes)
        content_type, width, height = await asyncio.to_thread(inspect_image, data)
        photos.append(
            {
                "sha256": str(sha),
                "content_type": content_type,
                "width": width,
                "height": height,
                "size_bytes": len(data),
            }
        )
    request_action = _parse_action(body, photos)
    async with request.app[SESSIONS]() as session, session.begin():
        _, actor = await identify(request, session)
        ticket = await _ticket_for(request, session, actor, lock=True)
        try:
            await act(session, ticket, request_action, actor, request.app[POLICIES])
        except WorkflowError as exc:
            raise json_error(
                _STATUS.get(exc.code, 422), {"error": exc.code, "detail": str(exc)}
            ) from exc
        detail = await _detail(session, ticket, actor)
    return web.json_response(detail)


async def upload_photo(request: web.Request) -> web.Response:
    """POST /api/v1/media (the image as the body): store it; answer with its sha256."""
    settings = request.app[SETTINGS]
    async with request.app[SESSIONS]() as session:
        await identify(request, session)
    data = await request.read()
    try:
        stored = await store_photo(settings.media_dir, data, settings.max_photo_bytes)
    except TooLarge as exc:
        raise web.HTTPRequestEntityTooLarge(
            max_size=settings.max_photo_bytes,
            actual_size=len(data),
            text=json.dumps({"error": "too_large"}),
            content_type="application/json",
        ) from exc
    except NotAnImage as exc:
        raise json_error(415, {"error": "not_image"}) from exc
    return web.json_response({"sha256": stored.sha256, "content_type": stored.content_type})


def mount_api(app: web.Application) -> None:
    app.router.add_get("/api/v1/tickets", list_tickets)
    app.router.add_get("/api/v1/tickets/{code}", show_ticket)
    app.router.add_post("/api/v1/tickets/{code}/actions", act_on_ticket)
    app.router.add_post("/api/v1/media", upload_photo)
