"""JSON service API under /api/v1: list, show and act on tickets, and upload result photos.

Who is asking comes from `identify` (the staff issue brings logins; until then only the
test environment names a user, with the X-Hotline-Test-User header). Every answer is
scoped to what that person may see, and shows reporters by pseudonym only.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.db import write_retrying
from backend.models import (
    AuditEvent,
    Category,
    Media,
    OutboxMessage,
    Photo,
    Reporter,
    Ticket,
    Unit,
    User,
    utcnow,
)
from backend.services.intake import is_approximate
from backend.services.media_store import MediaUnavailable
from backend.services.notify import needs_call
from backend.services.photos import NotAnImage, TooLarge, image_fields, store_photo
from backend.services.upsert import insert_for
from backend.services.workflow import (
    ACTION_RETRIES,
    STATES,
    TABLE,
    Action,
    Actor,
    WorkflowError,
    act,
    allowed_actions,
    find_visible_ticket,
    is_overdue,
    overdue_filter,
    scope_query,
)
from backend.web.app import MEDIA, POLICIES, SESSIONS, SETTINGS
from backend.web.auth import WEB_SESSION, csrf_ok, signed_in
from backend.web.bodies import JSON_LIMIT, BadJSON, parse_json, read_body

TEST_USER_HEADER = "X-Hotline-Test-User"
CSRF_HEADER = "X-CSRF-Token"
# What an upload's Content-Type may say (without one, aiohttp reads octet-stream).
UPLOAD_TYPES = frozenset(
    {
        "application/octet-stream",
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
        "image/heif",
    }
)
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
    503: web.HTTPServiceUnavailable,
}


def json_error(status: int, body: dict[str, Any]) -> web.HTTPException:
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
        state = request.query.get("state")
        flags = [request.query.get(name, "0") for name in ("undelivered", "overdue")]
        if (state is not None and state not in STATES) or not set(flags) <= {"0", "1"}:
            raise json_error(
                400,
                {
                    "error": "bad_query",
                    "detail": "state: a state's name; overdue, undelivered: 0 or 1",
                },
            )
        if state is not None:
            query = query.where(Ticket.state == state)
        if flags[0] == "1":
            query = query.where(needs_call())
        if flags[1] == "1":
            query = query.where(overdue_filter(now))
        query = query.order_by(Ticket.due_at.is_(None), Ticket.due_at, Ticket.id).limit(500)
        tickets = list(await session.scalars(query))
        items = [await _summary(session, t, now) for t in tickets]
    return web.json_response({"tickets": items})


async def _ticket_for(request: web.Request, session: AsyncSession, actor: Actor) -> Ticket:
    ticket = await find_visible_ticket(session, actor, request.match_info["code"])
    if ticket is None:
        # Out of scope answers exactly as missing: an outsider learns nothing of it.
        raise json_error(404, {"error": "not_found"})
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
        "approximate": is_approximate(ticket.location_source),
        "address": ticket.address,
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


Text = Annotated[str, StringConstraints(max_length=4000)]
Code = Annotated[str, StringConstraints(max_length=32)]
PhotoId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _known_action(name: str) -> str:
    if name not in TABLE:
        raise ValueError(f"one of {', '.join(TABLE)}")
    return name


def _aware_time(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("an ISO 8601 date and time") from exc
    if moment.tzinfo is None:
        raise ValueError("give a time zone, e.g. +07:00")
    return text


ActionName = Annotated[
    str,
    AfterValidator(_known_action),
    WithJsonSchema({"type": "string", "enum": list(TABLE)}),
]
DueTime = Annotated[
    str,
    StringConstraints(max_length=40),
    AfterValidator(_aware_time),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 40}),
]


class ActionBody(BaseModel):
    """The body of POST /api/v1/tickets/{code}/actions: the action and what it needs."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"action": "classify", "urgency": "urgent", "competence": "ward"},
                {"action": "claim"},
                {"action": "reject", "reason": "spam"},
                {"action": "answer", "result": "Đã thu gom rác", "photos": ["0" * 64]},
            ]
        },
    )

    action: ActionName
    note: Text | None = None
    reason: Text | None = None
    result: Text | None = None
    # Photos uploaded with POST /api/v1/media by the caller, or already on the ticket.
    photos: Annotated[list[PhotoId], Field(max_length=10)] = []
    unit: Code | None = None
    # ISO 8601 with a time zone, e.g. 2026-12-24T17:00:00+07:00 (an extension's new due).
    due: DueTime | None = None
    case: Code | None = None
    urgency: Literal["urgent", "normal"] | None = None
    competence: Literal["ward", "province", "police", "ministry"] | None = None


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    """Validation errors as the API reports them: where, and what is wrong (no values)."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _too_large(limit: int) -> web.HTTPException:
    return web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=limit + 1,
        text=json.dumps({"error": "too_large", "detail": f"at most {limit} bytes"}),
        content_type="application/json",
    )


async def _body(request: web.Request, limit: int) -> bytes:
    try:
        return await read_body(request, limit)
    except web.HTTPRequestEntityTooLarge as exc:
        raise _too_large(limit) from exc


async def _action_body(request: web.Request) -> ActionBody:
    try:
        return ActionBody.model_validate(parse_json(await _body(request, JSON_LIMIT)))
    except BadJSON as exc:
        raise json_error(400, {"error": "bad_json", "detail": "send a JSON object"}) from exc
    except ValidationError as exc:
        raise json_error(422, {"error": "invalid", "problems": _problems(exc)}) from exc


async def _photos(
    session: AsyncSession, ids: list[str], user: User, ticket: Ticket
) -> list[dict[str, Any]]:
    """The photos an action refers to, from the database: each one the caller uploaded or
    one already on this ticket; anything else is 422."""
    found: dict[str, dict[str, Any]] = {}
    if ids:
        uploaded = await session.scalars(
            select(Media).where(Media.sha256.in_(ids), Media.uploaded_by == user.id)
        )
        on_ticket = await session.scalars(
            select(Photo).where(Photo.sha256.in_(ids), Photo.ticket_id == ticket.id)
        )
        for row in [*uploaded, *on_ticket]:
            found[row.sha256] = image_fields(row)
    missing = [sha for sha in ids if sha not in found]
    if missing:
        raise json_error(
            422, {"error": "unknown_photo", "detail": "upload it first: POST /api/v1/media"}
        )
    return [found[sha] for sha in ids]


async def act_on_ticket(request: web.Request) -> web.Response:
    """POST /api/v1/tickets/{code}/actions {"action": …, …}: one step of the procedure."""
    body: ActionBody | None = None

    async def attempt() -> dict[str, Any]:
        nonlocal body
        async with request.app[SESSIONS]() as session, session.begin():
            # Who is asking comes first: an outsider learns nothing from the body's fate.
            user, actor = await identify(request, session)
            if body is None:  # read once: a second attempt has no body left to read
                body = await _action_body(request)
            # Not locked here: act() locks what the action changes, in one order.
            ticket = await _ticket_for(request, session, actor)
            request_action = Action(
                action=body.action,
                note=body.note,
                reason=body.reason,
                result=body.result,
                photos=await _photos(session, body.photos, user, ticket),
                unit_code=body.unit,
                due=datetime.fromisoformat(body.due) if body.due else None,
                case_code=body.case,
                urgency=body.urgency,
                competence=body.competence,
            )
            try:
                await act(session, ticket, request_action, actor, request.app[POLICIES])
            except WorkflowError as exc:
                raise json_error(
                    _STATUS.get(exc.code, 422), {"error": exc.code, "detail": str(exc)}
                ) from exc
            return await _detail(session, ticket, actor)

    # A race the database settled against this transaction (a deadlock) runs the action
    # again: it then sees what the other did, and answers 409 if it cannot be done now.
    return web.json_response(await write_retrying(attempt, retries=ACTION_RETRIES))


async def upload_photo(request: web.Request) -> web.Response:
    """POST /api/v1/media (the image as the body): sanitise and store it, and remember
    who uploaded it; answer with its sha256, which an answer may then refer to."""
    settings = request.app[SETTINGS]
    async with request.app[SESSIONS]() as session:
        user, _ = await identify(request, session)
    if request.content_type not in UPLOAD_TYPES:
        raise json_error(
            415,
            {"error": "not_image", "detail": "send the image itself, Content-Type image/jpeg"},
        )
    data = await _body(request, settings.max_photo_bytes)
    try:
        stored = await store_photo(request.app[MEDIA], data, settings.max_photo_bytes)
    except TooLarge as exc:
        raise _too_large(settings.max_photo_bytes) from exc
    except NotAnImage as exc:
        raise json_error(415, {"error": "not_image"}) from exc
    except MediaUnavailable as exc:
        error = json_error(503, {"error": "storage_unavailable", "detail": "try again later"})
        error.headers["Retry-After"] = "5"
        raise error from exc
    async with request.app[SESSIONS]() as session, session.begin():
        await session.execute(
            insert_for(session, Media)
            .values(**image_fields(stored), uploaded_by=user.id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["sha256", "uploaded_by"])
        )
    return web.json_response({"sha256": stored.sha256, "content_type": stored.content_type})


def mount_api(app: web.Application) -> None:
    app.router.add_get("/api/v1/tickets", list_tickets)
    app.router.add_get("/api/v1/tickets/{code}", show_ticket)
    app.router.add_post("/api/v1/tickets/{code}/actions", act_on_ticket)
    app.router.add_post("/api/v1/media", upload_photo)
