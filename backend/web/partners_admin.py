"""Admin page for partners' webhooks: register one (its secret shown once), disable it,
send it a test event, and read its delivery log, failures first. Admins only; every form
carries the CSRF token; every change is audited and answered with a redirect to the page
(post, redirect, get), so that reloading what it shows does not do it again."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import DataKeyError, keys
from backend.models import Province, Webhook, WebhookDelivery, utcnow
from backend.services import webhooks
from backend.services.limits import once
from backend.web.app import SESSIONS, SETTINGS, WEBHOOKS
from backend.web.auth import WEB_SESSION, secure_cookies
from backend.web.dashboard import check_csrf, render, require_admin

# Deliveries shown per webhook, and failed ones shown above them all.
LOG_SIZE = 20
FAILED_SHOWN = 50
PAGE = "/admin/webhooks"
# A new webhook's secret, shown once on the page the registration redirects to: sealed
# in a short-lived cookie of this browser session only, removed as it is shown.
SECRET_COOKIE = "hotline_webhook_secret"  # noqa: S105 - a cookie's name, not a secret
SECRET_PURPOSE = "web.webhook_secret"  # noqa: S105 - a sealing purpose, not a secret
SECRET_SHOWN_FOR = 300
# What the page says after a change it redirected from (?done=…).
DONE = {"disabled": "webhooks.disabled_done", "ping": "webhooks.ping_queued"}


async def _page(
    request: web.Request,
    session: AsyncSession,
    *,
    secret: dict[str, str] | None = None,
    problem: str | None = None,
    done: str | None = None,
    form: dict[str, Any] | None = None,
) -> web.Response:
    hooks = list(await session.scalars(select(Webhook).order_by(Webhook.id)))
    logs = {
        h.id: list(
            await session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.webhook_id == h.id)
                .order_by(WebhookDelivery.id.desc())
                .limit(LOG_SIZE)
            )
        )
        for h in hooks
    }
    failed = list(
        await session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.status == "failed")
            .order_by(WebhookDelivery.id.desc())
            .limit(FAILED_SHOWN)
        )
    )
    provinces = list(await session.scalars(select(Province).order_by(Province.code)))
    settings = request.app[SETTINGS]
    return render(
        request,
        "webhooks.html",
        status=422 if problem else 200,
        hooks=hooks,
        names={h.id: h.name for h in hooks},
        logs=logs,
        failed=failed,
        provinces=provinces,
        events=webhooks.EVENTS,
        retry_hours=f"{settings.webhook_retry_hours:g}",
        refused_attempts=settings.webhook_refused_attempts,
        secret=secret,
        problem=problem,
        done=done,
        form=form or {},
    )


async def webhooks_page(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        await require_admin(request, session)
        secret = await _new_secret(request, session)
        await session.commit()
        done = DONE.get(request.query.get("done", ""))
        response = await _page(request, session, secret=secret, done=done)
    if SECRET_COOKIE in request.cookies:
        response.del_cookie(SECRET_COOKIE, path=PAGE)
    # The page may hold the secret: never kept by a cache or the browser's history.
    response.headers["Cache-Control"] = "no-store"
    return response


def _session_tag(request: web.Request) -> str:
    """Ties the sealed secret to this browser session (a hash of its CSRF token)."""
    web_session = request.get(WEB_SESSION)
    token = web_session.csrf_token if web_session else ""
    return hashlib.sha256(f"webhook-secret\0{token}".encode()).hexdigest()[:32]


async def _new_secret(request: web.Request, session: AsyncSession) -> dict[str, str] | None:
    """The secret a registration just made in this session, if its cookie is fresh and
    was never shown before (its one-time name is taken in the database, which every
    process shares: the cookie replayed shows nothing)."""
    sealed = request.cookies.get(SECRET_COOKIE)
    if not sealed or len(sealed) > 4000:
        return None
    try:
        value = keys().open_json(sealed, SECRET_PURPOSE)
        at = float(value["at"])
        fresh = 0 <= time.time() - at <= SECRET_SHOWN_FOR
        if not fresh or value["tag"] != _session_tag(request):
            return None
        shown = {"value": str(value["value"]), "who": str(value["who"])}
        nonce = str(value["once"])
    except (DataKeyError, ValueError, KeyError, TypeError):
        return None
    if not await once(session, f"webhook-secret:{nonce}", at + SECRET_SHOWN_FOR + 60):
        return None
    return shown


def _text(form: dict[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def register(request: web.Request) -> web.Response:
    form = await check_csrf(request)
    settings = request.app[SETTINGS]
    async with request.app[SESSIONS]() as session:
        admin = await require_admin(request, session)
        events = [e for e in webhooks.EVENTS if form.get(f"event.{e}")]
        try:
            registered = await webhooks.register(
                session,
                name=_text(form, "name"),
                url=_text(form, "url"),
                province_code=_text(form, "province"),
                events=events,
                actor=admin.label,
                user_id=admin.user_id,
                allow_http=settings.webhook_allow_http,
                allow_private=settings.webhook_allow_private,
            )
        except webhooks.WebhookError as exc:
            await session.rollback()
            kept = {k: _text(form, k)[:2000] for k in ("name", "url", "province")}
            return await _page(request, session, problem=f"webhooks.error.{exc.code}", form=kept)
        await session.commit()
    # Post, redirect, get: reloading the page shown does not register again, and the
    # secret is shown once, by the page the redirect leads to.
    sealed = keys().seal_json(
        {
            "value": registered.secret,
            "who": registered.webhook.name,
            "at": time.time(),
            "tag": _session_tag(request),
            "once": secrets.token_urlsafe(16),
        },
        SECRET_PURPOSE,
    )
    response = web.HTTPSeeOther(PAGE)
    response.set_cookie(
        SECRET_COOKIE,
        sealed,
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request),
        max_age=SECRET_SHOWN_FOR,
        path=PAGE,
    )
    raise response


async def _webhook(session: AsyncSession, request: web.Request) -> Webhook:
    webhook = await session.get(Webhook, int(request.match_info["id"]))
    if webhook is None:
        raise web.HTTPNotFound()
    return webhook


async def disable(request: web.Request) -> web.Response:
    await check_csrf(request)
    async with request.app[SESSIONS]() as session:
        admin = await require_admin(request, session)
        webhook = await _webhook(session, request)
        await webhooks.disable(session, webhook, actor=admin.label, now=utcnow())
        await session.commit()
    raise web.HTTPSeeOther(f"{PAGE}?done=disabled")


async def ping(request: web.Request) -> web.Response:
    await check_csrf(request)
    async with request.app[SESSIONS]() as session:
        admin = await require_admin(request, session)
        webhook = await _webhook(session, request)
        if webhook.disabled_at is not None:
            return await _page(request, session, problem="webhooks.error.disabled")
        await webhooks.ping(session, webhook, actor=admin.label, now=utcnow())
        await session.commit()
    request.app[WEBHOOKS].wake()
    raise web.HTTPSeeOther(f"{PAGE}?done=ping")


def mount_partners_admin(app: web.Application) -> None:
    app.router.add_get(PAGE, webhooks_page)
    app.router.add_post(PAGE, register)
    # Ids of at most 9 digits: a longer one is no row and would overflow the column.
    app.router.add_post("/admin/webhooks/{id:[0-9]{1,9}}/disable", disable)
    app.router.add_post("/admin/webhooks/{id:[0-9]{1,9}}/ping", ping)
