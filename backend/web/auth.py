"""Who is signed in: a session cookie (HttpOnly, SameSite=Lax, Secure over HTTPS) that
names a server-side session, and a CSRF token per session checked on every form; who is
asking (the client address through trusted proxies, the browser's device cookie); and
the one page a user with a one-time password may see."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp import web

from backend.models import User, WebSession
from backend.services.accounts import DEVICE_DAYS, session_user
from backend.web.app import SESSIONS, SETTINGS

COOKIE = "hotline_session"
LOGIN_CSRF_COOKIE = "hotline_login_csrf"
# Device cookies (OWASP "Slow Down Online Guessing Attacks with Device Cookies"): random
# tokens, one per account that signed in on this browser, newest first.
DEVICE_COOKIE = "hotline_device"
MAX_DEVICE_TOKENS = 5
CHANGE_PAGE = "/password"
# Reachable while the password must be changed (everything else waits for the change).
_WHILE_CHANGING = frozenset({CHANGE_PAGE, "/logout", "/healthz"})
USER = web.RequestKey("user", User)
WEB_SESSION = web.RequestKey("web_session", WebSession)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Address = IPv4Address | IPv6Address


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the signed-in user, if any, to the request; while their password is a
    one-time one, send them to the change-password page (the JSON API answers 403)."""
    token = cookie_token(request, COOKIE)
    if token:
        async with request.app[SESSIONS]() as session:
            found = await session_user(session, token, demo=request.app[SETTINGS].demo)
        if found is not None:
            request[USER], request[WEB_SESSION] = found
            if found[0].must_change_password and not _open_while_changing(request.path):
                return _change_first(request)
    return await handler(request)


def _open_while_changing(path: str) -> bool:
    return path in _WHILE_CHANGING or path.startswith("/static/")


def _change_first(request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        return web.json_response(
            {
                "error": "password_change_required",
                "detail": f"change the one-time password at {CHANGE_PAGE} first",
            },
            status=403,
        )
    raise web.HTTPSeeOther(CHANGE_PAGE)


def signed_in(request: web.Request) -> User | None:
    return request.get(USER)


def secure_cookies(request: web.Request) -> bool:
    return request.app[SETTINGS].served_over_https or request.secure


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
    return cookie_token(request, LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


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
    """Whether a form's or header's token is the expected one (constant time; a value
    that is not a token, non-UTF-8 bytes included, is simply wrong)."""
    if not expected or not isinstance(given, str) or not TOKEN.fullmatch(given):
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# What this service puts in its cookies and forms (secrets.token_urlsafe): anything else
# a client sends there is not one of them, and is never hashed, rendered or compared.
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


def cookie_token(request: web.Request, name: str) -> str | None:
    """The token in cookie `name`, or None when it is missing or not a token."""
    value = request.cookies.get(name, "")
    return value if TOKEN.fullmatch(value) else None


# --- the browser's device tokens -----------------------------------------------------------


def device_tokens(request: web.Request) -> list[str]:
    """The device tokens the browser carries (at most MAX_DEVICE_TOKENS)."""
    value = request.cookies.get(DEVICE_COOKIE, "")
    return [token for token in value.split(".") if TOKEN.fullmatch(token)][:MAX_DEVICE_TOKENS]


def set_device_cookie(response: web.StreamResponse, request: web.Request, new_token: str) -> None:
    """Add new_token to the browser's device tokens (the oldest beyond the limit go)."""
    tokens = [new_token, *(t for t in device_tokens(request) if t != new_token)]
    response.set_cookie(
        DEVICE_COOKIE,
        ".".join(tokens[:MAX_DEVICE_TOKENS]),
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request),
        max_age=DEVICE_DAYS * 24 * 3600,
        path="/",
    )


# --- the client address --------------------------------------------------------------------


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: Sequence[IPv4Network | IPv6Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(request: web.Request) -> str:
    """The client's IP address. The connection's peer, unless that peer is one of the
    trusted proxies (Settings.trusted_proxies): then X-Forwarded-For is read from the
    right, past trusted proxies, to the first address that is not one, which is the
    client (anything further left is the client's own claim). A malformed entry ends
    the walk at the last trusted hop."""
    proxies = request.app[SETTINGS].trusted_proxies
    peer = _address(request.remote)
    if peer is None:
        return request.remote or "unknown"
    if not _trusted(peer, proxies):
        return str(peer)
    hops = [
        hop for header in request.headers.getall("X-Forwarded-For", ()) for hop in header.split(",")
    ]
    last_trusted = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        if not _trusted(address, proxies):
            return str(address)
        last_trusted = address
    return str(last_trusted)
