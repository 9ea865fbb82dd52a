"""Signing in and out of the staff dashboard."""

from __future__ import annotations

from aiohttp import web

from backend.services.accounts import LoginRefused, authenticate, close_session, open_session
from backend.web.app import SESSIONS
from backend.web.auth import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    csrf_ok,
    login_csrf,
    set_login_csrf,
    set_session_cookie,
)
from backend.web.dashboard import TEXT, check_csrf, render


async def login_page(request: web.Request) -> web.Response:
    token = login_csrf(request)
    response = render(request, "login.html", login_token=token, problem=None)
    set_login_csrf(response, request, token)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not csrf_ok(token, form.get("csrf")):
        raise web.HTTPForbidden(text=TEXT.translate("vi", "csrf.refused"))
    client = request.remote or "?"
    async with request.app[SESSIONS]() as session, session.begin():
        try:
            user = await authenticate(
                session, str(form.get("username", "")), str(form.get("password", "")), client
            )
        except LoginRefused as exc:
            problem = "login.throttled" if exc.throttled else "login.wrong"
            status = 429 if exc.throttled else 401
            failed = None
        else:
            cookie, _ = await open_session(session, user)
            failed = cookie
    if failed is None:
        return render(
            request, "login.html", status=status, login_token=token or "", problem=problem
        )
    response = web.HTTPSeeOther("/queue")
    set_session_cookie(response, request, failed)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    async with request.app[SESSIONS]() as session, session.begin():
        await close_session(session, request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def mount_login(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
