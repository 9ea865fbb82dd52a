"""Who is signed in: a session cookie (HttpOnly, SameSite=Lax, Secure over HTTPS) that
names a server-side session, and a CSRF token per session checked on every form."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from backend.models import User, WebSession
from backend.services.accounts import session_user
from backend.web.app import SESSIONS, SETTINGS

COOKIE = "hotline_session"
LOGIN_CSRF_COOKIE = "hotline_login_csrf"
USER = web.RequestKey("user", User)
WEB_SESSION = web.RequestKey("web_session", WebSession)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the signed-in user, if any, to the request."""
    token = request.cookies.get(COOKIE)
    if token:
        async with request.app[SESSIONS]() as session:
            found = await session_user(session, token)
        if found is not None:
            request[USER], request[WEB_SESSION] = found
    return await handler(request)


def signed_in(request: web.Request) -> User | None:
    return request.get(USER)


def secure_cookies(request: web.Request) -> bool:
    public = request.app[SETTINGS].public_url or ""
    return public.startswith("https://") or request.secure


def set_session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="Lax",
        secure=secure_cookies(request),
        max_age=7 * 24 * 3600,
        path="/",
    )


def login_csrf(request: web.Request) -> str:
    """The token for the login form (no session yet): a cookie echoed in the form."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def set_login_csrf(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request),
        path="/login",
    )


def csrf_ok(expected: str | None, given: object) -> bool:
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
