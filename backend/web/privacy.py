"""Personal data requests that come by phone or letter, and who unsealed whom.

Operators, supervisors and admins find a reporter by phone number (among the reporters
of tickets in their scope), see what /mydata would show, and erase the identity with a
stated reason. Admins and supervisors also see every unsealing of an identity in their
scope: who, when, which ticket and why. Every search and erasure is audited; a search
never writes the number it looked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import keys
from backend.models import AuditEvent, ReporterIdentity, Ticket, User, utcnow
from backend.services.privacy import UNSEAL, UNSEAL_READERS, erase_identity, held_data
from backend.services.reporters import normalise_phone
from backend.services.workflow import Actor, scope_query
from backend.web.app import SESSIONS
from backend.web.dashboard import check_csrf, render, require_triage, stated_reason

UNSEALS_SHOWN = 200


async def _in_scope(session: AsyncSession, actor: Actor, reporter_ids: list[int]) -> list[int]:
    """The reporters among these with a ticket the actor may see (all, for admins)."""
    if not reporter_ids or actor.role == "admin":
        return reporter_ids
    found = await session.scalars(
        scope_query(select(Ticket.reporter_id), actor)
        .where(Ticket.reporter_id.in_(reporter_ids))
        .distinct()
    )
    return [r for r in found if r is not None]


async def _unseals(session: AsyncSession, actor: Actor) -> list[tuple[AuditEvent, str, str]]:
    """Unsealings in the actor's scope, newest first, with the ticket's code and who
    unsealed (admins and supervisors only)."""
    if actor.role not in UNSEAL_READERS:
        return []
    rows: list[Any] = list(
        await session.execute(
            scope_query(select(AuditEvent).join(Ticket, Ticket.id == AuditEvent.ticket_id), actor)
            .add_columns(Ticket.code)
            .where(AuditEvent.action == UNSEAL)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .limit(UNSEALS_SHOWN)
        )
    )
    ids = {int(e.actor.removeprefix("user:")) for e, _ in rows if e.actor.startswith("user:")}
    names = dict(
        (await session.execute(select(User.id, User.display_name).where(User.id.in_(ids)))).all()
    )
    return [
        (event, code, names.get(int(event.actor.removeprefix("user:")), event.actor))
        if event.actor.startswith("user:")
        else (event, code, event.actor)
        for event, code in rows
    ]


async def _page(
    request: web.Request,
    session: AsyncSession,
    actor: Actor,
    *,
    found: list[Any] | None = None,
    problem: str | None = None,
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "privacy.html",
        status=status,
        found=found,
        problem=problem,
        unseals=await _unseals(session, actor),
        done=request.query.get("done"),
    )


async def privacy_page(request: web.Request) -> web.Response:
    """GET /privacy"""
    async with request.app[SESSIONS]() as session:
        actor = await require_triage(request, session)
        return await _page(request, session, actor)


async def search(request: web.Request) -> web.Response:
    """POST /privacy/search: reporters by phone number (a POST: the number stays out of
    addresses, and so out of every proxy's log)."""
    form = await check_csrf(request)
    phone = normalise_phone(str(form.get("phone") or ""))
    async with request.app[SESSIONS]() as session, session.begin():
        actor = await require_triage(request, session)
        if phone is None:
            return await _page(request, session, actor, problem="privacy.bad_phone", status=422)
        ids = list(
            await session.scalars(
                select(ReporterIdentity.reporter_id).where(
                    ReporterIdentity.phone_key == keys().phone_key(phone)
                )
            )
        )
        found = [
            (held, reporter_id)
            for reporter_id in await _in_scope(session, actor, ids)
            if (held := await held_data(session, reporter_id, _narrow(actor))) is not None
        ]
        session.add(AuditEvent.of_act(actor.label, "pd_search", f"{len(found)} found"))
        return await _page(request, session, actor, found=found)


async def erase(request: web.Request) -> web.StreamResponse:
    """POST /privacy/{reporter}/erase: erase a reporter's identity, saying why."""
    form = await check_csrf(request)
    reason = stated_reason(form)
    reporter_id = int(request.match_info["reporter"])
    async with request.app[SESSIONS]() as session, session.begin():
        actor = await require_triage(request, session)
        held = await held_data(session, reporter_id)
        if held is None or not await _in_scope(session, actor, [reporter_id]):
            raise web.HTTPNotFound()
        if reason is None:
            return await _page(request, session, actor, problem="privacy.reason_needed", status=422)
        if not await erase_identity(session, reporter_id, utcnow()):
            return await _page(request, session, actor, problem="privacy.was_erased", status=409)
        session.add(AuditEvent.of_act(actor.label, "pd_erase", f"#{held.pseudonym}: {reason}"))
    raise web.HTTPSeeOther("/privacy?done=erased")


def _narrow(actor: Actor) -> Callable[[Select[Any]], Select[Any]]:
    """A ticket query limited to what the actor may see."""
    return lambda query: scope_query(query, actor)


def mount_privacy(app: web.Application) -> None:
    app.router.add_get("/privacy", privacy_page)
    app.router.add_post("/privacy/search", search)
    app.router.add_post("/privacy/{reporter:[0-9]{1,9}}/erase", erase)
