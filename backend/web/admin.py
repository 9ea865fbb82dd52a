"""Admin pages: staff accounts (create, one-time password, disable), units' Telegram groups
(one-time link codes, unlink) and partners' Open311 keys (issue, shown once; revoke).
Admins only; every form carries the CSRF token."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import OAuthToken, StaffGroup, Unit, User
from backend.services.accounts import ROLES, TELEGRAM_ID, create_user, reset_password
from backend.services.partners import issue_key, list_keys, revoke_key
from backend.services.staff_groups import create_link_code
from backend.web.app import SESSIONS
from backend.web.auth import signed_in
from backend.web.dashboard import check_csrf, render, require_admin


def _by_demo(request: web.Request) -> bool:
    """Whether the signed-in admin is a demo account (which touches demo accounts only)."""
    user = signed_in(request)
    return user is not None and user.demo


async def _page(
    request: web.Request,
    session: AsyncSession,
    *,
    secret: dict[str, str] | None = None,
    problem: str | None = None,
) -> web.Response:
    users = list(
        await session.execute(
            select(User, Unit.code).outerjoin(Unit, Unit.id == User.unit_id).order_by(User.username)
        )
    )
    groups = list(
        await session.execute(
            select(StaffGroup, Unit.name)
            .join(Unit, Unit.id == StaffGroup.unit_id)
            .order_by(StaffGroup.linked_at)
        )
    )
    revoked = list(
        await session.scalars(select(OAuthToken).where(OAuthToken.revoked_at.is_not(None)))
    )
    return render(
        request,
        "admin.html",
        status=422 if problem else 200,
        revoked=revoked,
        users=users,
        groups=groups,
        roles=ROLES,
        partner_keys=await list_keys(session),
        secret=secret,
        problem=problem,
    )


async def admin_page(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        await require_admin(request, session)
        return await _page(request, session)


def _field(form: dict[str, Any], name: str) -> str | None:
    value = str(form.get(name) or "").strip()
    return value or None


async def new_user(request: web.Request) -> web.Response:
    form = await check_csrf(request)
    async with request.app[SESSIONS]() as session:
        await require_admin(request, session)
        try:
            async with session.begin_nested():
                created = await create_user(
                    session,
                    _field(form, "username") or "",
                    _field(form, "role") or "",
                    display_name=_field(form, "name"),
                    unit_code=_field(form, "unit"),
                    telegram_chat_id=_field(form, "telegram"),
                    # A demo admin makes training accounts only, which end with the demo.
                    demo=_by_demo(request),
                )
        except ValueError as exc:
            return await _page(request, session, problem=str(exc))
        await session.commit()
        secret = {
            "key": "admin.password_once",
            "value": created.one_time_password,
            "who": created.user.username,
        }
        return await _page(request, session, secret=secret)


async def change_user(request: web.Request) -> web.Response:
    form = await check_csrf(request)
    async with request.app[SESSIONS]() as session:
        admin = await require_admin(request, session)
        user = await session.get(User, int(request.match_info["id"]))
        if user is None or (_by_demo(request) and not user.demo):
            raise web.HTTPNotFound()
        secret = None
        action = form.get("do")
        if action == "reset":
            # A one-time password: the next login must replace it.
            password = await reset_password(session, user, by=admin.label)
            secret = {"key": "admin.password_once", "value": password, "who": user.username}
        elif action == "telegram":
            linked = _field(form, "telegram")
            if linked is not None and not TELEGRAM_ID.fullmatch(linked):
                return await _page(request, session, problem="Telegram id: digits only")
            user.telegram_chat_id = linked
        elif action in ("deactivate", "activate"):
            user.active = action == "activate"
        await session.commit()
        return await _page(request, session, secret=secret)


async def link_code(request: web.Request) -> web.Response:
    form = await check_csrf(request)
    async with request.app[SESSIONS]() as session:
        await require_admin(request, session)
        unit = _field(form, "unit") or ""
        try:
            code = await create_link_code(session, unit)
        except ValueError as exc:
            return await _page(request, session, problem=str(exc))
        await session.commit()
        return await _page(
            request, session, secret={"key": "admin.code_once", "value": code, "who": unit}
        )


async def unlink_group(request: web.Request) -> web.Response:
    await check_csrf(request)
    async with request.app[SESSIONS]() as session:
        await require_admin(request, session)
        await session.execute(
            delete(StaffGroup).where(StaffGroup.id == int(request.match_info["id"]))
        )
        await session.commit()
        return await _page(request, session)


async def new_partner_key(request: web.Request) -> web.Response:
    """Issue an Open311 key; the page shows it this once (only its hash is kept)."""
    form = await check_csrf(request)
    async with request.app[SESSIONS]() as session:
        admin = await require_admin(request, session)
        try:
            issued = await issue_key(
                session,
                _field(form, "province") or "",
                _field(form, "name") or "",
                actor=admin.label,
                created_by=admin.user_id,
            )
        except ValueError as exc:
            return await _page(request, session, problem=str(exc))
        await session.commit()
        secret = {"key": "admin.partner_key_once", "value": issued.key, "who": issued.name}
        return await _page(request, session, secret=secret)


async def revoke_partner_key(request: web.Request) -> web.Response:
    await check_csrf(request)
    async with request.app[SESSIONS]() as session:
        admin = await require_admin(request, session)
        if not await revoke_key(session, int(request.match_info["id"]), actor=admin.label):
            raise web.HTTPNotFound()
        await session.commit()
        return await _page(request, session)


def mount_admin(app: web.Application) -> None:
    app.router.add_get("/admin", admin_page)
    app.router.add_post("/admin/users", new_user)
    # Ids of at most 9 digits: a longer one is no row and would overflow the column.
    app.router.add_post("/admin/users/{id:[0-9]{1,9}}", change_user)
    app.router.add_post("/admin/link-code", link_code)
    app.router.add_post("/admin/groups/{id:[0-9]{1,9}}/unlink", unlink_group)
    app.router.add_post("/admin/partner-keys", new_partner_key)
    app.router.add_post("/admin/partner-keys/{id:[0-9]{1,9}}/revoke", revoke_partner_key)
