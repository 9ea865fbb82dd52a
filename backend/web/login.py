"""Signing in and out of the staff dashboard, and changing one's password."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from backend.services.accounts import PasswordRefused, close_session
from backend.services.logins import ClientGone, LoginBusy, LoginRefused
from backend.web.app import LOGINS, SESSIONS
from backend.web.auth import (
    CHANGE_PAGE,
    COOKIE,
    LOGIN_CSRF_COOKIE,
    WEB_SESSION,
    client_address,
    cookie_token,
    csrf_ok,
    device_tokens,
    login_csrf,
    set_device_cookie,
    set_login_csrf,
    set_session_cookie,
    signed_in,
)
from backend.web.bodies import read_form
from backend.web.dashboard import TEXT, check_csrf, render


def _wait_words(seconds: int) -> tuple[str, int]:
    """The catalogue key and number that say how long `seconds` is."""
    if seconds < 60:
        return ("time.second" if seconds == 1 else "time.seconds"), seconds
    minutes = math.ceil(seconds / 60)
    return ("time.minute" if minutes == 1 else "time.minutes"), minutes


def _text(value: object) -> str:
    """A form field as text: a file or a missing field is empty; NUL is dropped (the
    database refuses it in text)."""
    return value.replace("\x00", "") if isinstance(value, str) else ""


def _lang(request: web.Request) -> str:
    """The query that keeps an English page English after its form is sent."""
    return "?lang=en" if request.query.get("lang") == "en" else ""


def _slowed_down(response: web.Response, seconds: int) -> web.Response:
    response.headers["Retry-After"] = str(seconds)
    return response


def _client_left(request: web.Request) -> Callable[[], bool]:
    """Whether the client is still there (a flood of logins sent and dropped is not
    worth a password check)."""
    return lambda: request.transport is not None and not request.transport.is_closing()


def _busy(request: web.Request, render_page: Callable[..., web.Response]) -> web.Response:
    response = render_page(status=503, problem="login.busy", wait=None)
    return _slowed_down(response, LoginBusy.retry_after)


async def login_page(request: web.Request) -> web.Response:
    token = login_csrf(request)
    response = render(
        request, "login.html", login_token=token, problem=None, wait=None, lang=_lang(request)
    )
    set_login_csrf(response, request, token)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    token = cookie_token(request, LOGIN_CSRF_COOKIE)
    if not csrf_ok(token, form.get("csrf")):
        raise web.HTTPForbidden(text=TEXT.translate("vi", "csrf.refused"))
    # Usernames are lower case (phones like to capitalise the first letter); NUL is
    # dropped as check_csrf drops it from the change-password form.
    username = _text(form.get("username")).strip().lower()[:64]
    page: dict[str, Any] = {"login_token": token or "", "lang": _lang(request)}
    try:
        done = await request.app[LOGINS].log_in(
            username,
            _text(form.get("password")),
            address=client_address(request),
            device_tokens=device_tokens(request),
            still_wanted=_client_left(request),
        )
    except LoginRefused as refused:
        if not refused.throttled:
            return render(
                request, "login.html", status=401, problem="login.wrong", wait=None, **page
            )
        wait = _wait_words(refused.retry_after)
        response = render(
            request, "login.html", status=429, problem="login.slow_down", wait=wait, **page
        )
        return _slowed_down(response, refused.retry_after)
    except LoginBusy:
        return _busy(request, lambda **shown: render(request, "login.html", **shown, **page))
    except ClientGone as exc:
        raise web.HTTPBadRequest() from exc
    next_page = CHANGE_PAGE if done.user.must_change_password else "/queue"
    response = web.HTTPSeeOther(next_page)
    set_session_cookie(response, request, done.session_token)
    if done.device_token is not None:
        set_device_cookie(response, request, done.device_token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    async with request.app[SESSIONS]() as session, session.begin():
        await close_session(session, cookie_token(request, COOKIE) or "")
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def _password_form(
    request: web.Request,
    *,
    status: int = 200,
    problem: str | None = None,
    wait: tuple[str, int] | None = None,
) -> web.Response:
    user = signed_in(request)
    return render(
        request,
        "password.html",
        status=status,
        forced=user is not None and user.must_change_password,
        done=problem is None and request.query.get("done") == "1",
        problem=problem,
        wait=wait,
        lang=_lang(request),
    )


async def password_page(request: web.Request) -> web.Response:
    if signed_in(request) is None:
        raise web.HTTPSeeOther("/login")
    return _password_form(request)


async def change_own_password(request: web.Request) -> web.StreamResponse:
    """The change-password form: current password, new password, new password again."""
    user = signed_in(request)
    if user is None:
        raise web.HTTPSeeOther("/login")
    form = await check_csrf(request)
    refused: LoginRefused | PasswordRefused | None = None
    try:
        await request.app[LOGINS].change_password(
            user.username,
            _text(form.get("current")),
            _text(form.get("new")),
            _text(form.get("again")),
            keep_session=request[WEB_SESSION].token_hash,
            address=client_address(request),
            device_tokens=device_tokens(request),
        )
    except (LoginRefused, PasswordRefused) as exc:
        refused = exc
    except LoginBusy:
        return _busy(request, lambda **shown: _password_form(request, **shown))
    if isinstance(refused, PasswordRefused):
        return _password_form(request, status=422, problem=refused.key)
    if isinstance(refused, LoginRefused) and refused.throttled:
        wait = _wait_words(refused.retry_after)
        response = _password_form(request, status=429, problem="login.slow_down", wait=wait)
        return _slowed_down(response, refused.retry_after)
    if refused is not None:
        return _password_form(request, status=422, problem="password.current_wrong")
    raise web.HTTPSeeOther(f"{CHANGE_PAGE}?done=1{_lang(request).replace('?', '&')}")


def mount_login(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get(CHANGE_PAGE, password_page)
    app.router.add_post(CHANGE_PAGE, change_own_password)
