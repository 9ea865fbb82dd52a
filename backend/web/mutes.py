"""Muting a reporter: operators, supervisors and admins mute the reporter of a ticket
they can see (by pseudonym only: nothing is unsealed) for a day, a week or a month,
saying why, and lift mutes in force. Both are audited. A muted reporter's messages get a
neutral answer and start no report (handlers.abuse); their data rights stay.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import AuditEvent, Reporter, ReporterMute, Ticket, utcnow
from backend.services.abuse import MUTE_DAYS, active_mutes, lift, mute
from backend.services.workflow import Actor, find_visible_ticket
from backend.timeutil import format_local
from backend.web.app import SESSIONS
from backend.web.dashboard import check_csrf, render, require_triage, stated_reason
from backend.web.privacy import _in_scope as reporters_in_scope

MUTE = "mute_reporter"
UNMUTE = "unmute_reporter"


async def _ticket_reporter(
    request: web.Request, session: AsyncSession, actor: Actor
) -> tuple[Ticket, Reporter]:
    """The ticket in the actor's sight and its reporter; 404 otherwise, as for a ticket."""
    ticket = await find_visible_ticket(session, actor, request.match_info["code"])
    reporter = (
        await session.get(Reporter, ticket.reporter_id, with_for_update=True)
        if ticket is not None and ticket.reporter_id is not None
        else None
    )
    if ticket is None or reporter is None:
        raise web.HTTPNotFound()
    return ticket, reporter


def _back(code: str, outcome: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/tickets/{code}?{outcome}")


def _days(form: dict[str, Any]) -> int | None:
    """One of MUTE_DAYS as the form's select sends it (ASCII digits only: int() would
    take other scripts' digits too)."""
    value = str(form.get("days") or "").strip()
    return next((d for d in MUTE_DAYS if str(d) == value), None)


async def mute_reporter(request: web.Request) -> web.StreamResponse:
    """POST /tickets/{code}/mute: days (1, 7 or 30) and a reason."""
    form = await check_csrf(request)
    reason, days = stated_reason(form), _days(form)
    async with request.app[SESSIONS]() as session, session.begin():
        actor = await require_triage(request, session)
        ticket, reporter = await _ticket_reporter(request, session, actor)
        if reporter.erased_at is not None:
            # Forgotten: whoever writes from that chat now is a new contact.
            raise _back(ticket.code, "error=mute_erased")
        if days is None:
            raise _back(ticket.code, "error=mute_days")
        if reason is None:
            raise _back(ticket.code, "error=mute_reason")
        now = utcnow()
        row = await mute(session, reporter.id, days, reason, actor.user_id, now)
        note = f"#{reporter.pseudonym} {ticket.code} → {format_local(row.until)}: {reason}"
        session.add(AuditEvent.of_act(actor.label, MUTE, note, now))
    raise _back(ticket.code, "done=muted")


async def unmute_reporter(request: web.Request) -> web.StreamResponse:
    """POST /tickets/{code}/unmute: lift the mute of the ticket's reporter."""
    await check_csrf(request)
    async with request.app[SESSIONS]() as session, session.begin():
        actor = await require_triage(request, session)
        ticket, reporter = await _ticket_reporter(request, session, actor)
        await _lift(session, actor, reporter, f" {ticket.code}")
    raise _back(ticket.code, "done=unmuted")


async def _lift(session: AsyncSession, actor: Actor, reporter: Reporter, where: str) -> None:
    now = utcnow()
    if await lift(session, reporter.id, now):
        session.add(AuditEvent.of_act(actor.label, UNMUTE, f"#{reporter.pseudonym}{where}", now))


async def mutes_page(request: web.Request) -> web.Response:
    """GET /mutes: the mutes in force of reporters with a ticket in the actor's scope."""
    async with request.app[SESSIONS]() as session:
        actor = await require_triage(request, session)
        return render(
            request,
            "mutes.html",
            mutes=await _visible_mutes(session, actor),
            done=request.query.get("done"),
        )


async def _visible_mutes(session: AsyncSession, actor: Actor) -> list[tuple[ReporterMute, str]]:
    found = await active_mutes(session, utcnow())
    shown = set(await reporters_in_scope(session, actor, [m.reporter_id for m, _ in found]))
    return [(m, pseudonym) for m, pseudonym in found if m.reporter_id in shown]


async def lift_listed(request: web.Request) -> web.StreamResponse:
    """POST /mutes/{id}/lift, from the list."""
    await check_csrf(request)
    mute_id = int(request.match_info["mute"])
    async with request.app[SESSIONS]() as session, session.begin():
        actor = await require_triage(request, session)
        row = await session.get(ReporterMute, mute_id)
        if row is None or not await reporters_in_scope(session, actor, [row.reporter_id]):
            raise web.HTTPNotFound()
        reporter = await session.get(Reporter, row.reporter_id, with_for_update=True)
        if reporter is None:
            raise web.HTTPNotFound()
        await _lift(session, actor, reporter, "")
    raise web.HTTPSeeOther("/mutes?done=unmuted")


def mount_mutes(app: web.Application) -> None:
    app.router.add_post("/tickets/{code}/mute", mute_reporter)
    app.router.add_post("/tickets/{code}/unmute", unmute_reporter)
    app.router.add_get("/mutes", mutes_page)
    app.router.add_post("/mutes/{mute:[0-9]{1,9}}/lift", lift_listed)
