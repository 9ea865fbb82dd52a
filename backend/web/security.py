"""What every response carries and every request is checked for: security headers (CSP,
framing, sniffing, referrer, permissions, HSTS over HTTPS, no-store), no server banner,
a request id (on the response, the access log and every line logged meanwhile), a JSON
access log without personal data, and refusal of NUL characters in the path or query."""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from aiohttp import web, web_response
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from backend.config import Settings
from backend.logs import request_id as logged_request_id

REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
ACCESS_LOG = "hotline.access"
STATIC_PREFIX = "/static/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp names itself and Python's version in a Server header. The signal below drops
# it from every routed response; responses to requests that never reach the router (an
# unparsable request line, say) fall back to this neutral value.
setattr(web_response, "SERVER_SOFTWARE", "hotline")  # noqa: B010 - a module constant


def tile_source(template: str) -> str | None:
    """The CSP source for a map tile URL template ('https://{s}.tile.example.org/{z}/…'
    → 'https://*.tile.example.org'), or None without tiles."""
    if not template:
        return None
    parts = urlsplit(template.replace("{s}", "tiles-subdomain"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.replace("tiles-subdomain", "*")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def content_security_policy(settings: Settings) -> str:
    """Scripts, styles and everything else from this service only; map tiles from the
    configured host; no framing, no plugins, no <base>, forms post here only."""
    images = ["'self'", "data:", "blob:"]
    tiles = tile_source(settings.map_tile_url)
    if tiles is not None:
        images.append(tiles)
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "connect-src 'self'",
            "font-src 'self'",
            "manifest-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        )
    )


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers every response carries."""
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Permissions-Policy": (
            "geolocation=(self), camera=(self), microphone=(), payment=(), usb=(), "
            "interest-cohort=()"
        ),
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if settings.served_over_https:
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return headers


class ClientDetailsFilter(logging.Filter):
    """aiohttp's own error lines name the client's address, and for a request it could
    not parse they echo the request line, query string and all: neither goes to the log.
    A refused request becomes one line saying so; a handler's crash keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg, record.args = (
                "refused a request it could not read (%s)",
                (type(error).__name__,),
            )
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        elif isinstance(record.msg, str) and record.msg.endswith(" from %s"):
            record.msg = record.msg.removesuffix(" from %s")
            record.args = tuple(record.args or ())[:-1] if isinstance(record.args, tuple) else ()
        return True


_CLIENT_DETAILS = ClientDetailsFilter()


def install(app: web.Application, settings: Settings) -> None:
    """Add the headers, the request id and the NUL check to app; keep client details
    out of aiohttp's own log lines."""
    server_log = logging.getLogger("aiohttp.server")
    if _CLIENT_DETAILS not in server_log.filters:
        server_log.addFilter(_CLIENT_DETAILS)
    headers = security_headers(settings)

    async def on_prepare(request: web.Request, response: StreamResponse) -> None:
        response.headers.update(headers)
        response.headers.popall("Server", None)
        # Pages, API answers, exports and photos may carry personal data: never kept by
        # a browser or a proxy. The vendored scripts and styles may be.
        if not request.path.startswith(STATIC_PREFIX):
            response.headers["Cache-Control"] = "no-store"
        response.headers[REQUEST_ID_HEADER] = request_id(request)

    app.on_response_prepare.append(on_prepare)
    app.middlewares.insert(0, refuse_nul)
    app.middlewares.insert(0, log_request_id)
    if settings.security_contact:
        contact = settings.security_contact

        async def security_txt(request: web.Request) -> web.Response:
            """RFC 9116: where to report a vulnerability (valid for a year from now)."""
            expires = datetime.now(UTC) + timedelta(days=365)
            return web.Response(
                text=(
                    f"Contact: {contact}\n"
                    f"Expires: {expires.isoformat(timespec='seconds')}\n"
                    "Preferred-Languages: vi, en\n"
                ),
                content_type="text/plain",
            )

        app.router.add_get("/.well-known/security.txt", security_txt)


def request_id(request: BaseRequest) -> str:
    """This request's id, made on first use (it is in the access log and the response)."""
    found = request.get(REQUEST_ID)
    if isinstance(found, str):
        return found
    made = secrets.token_hex(8)
    request[REQUEST_ID] = made
    return made


@web.middleware
async def log_request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every line logged while serving a request carries its id; a webhook's update
    keeps it for the lines of its handling and of its replies (see backend.logs).

    aiohttp serves each request in a task of its own, so the id is set for that task
    alone and left set: aiohttp's line about a handler's crash carries it too.
    """
    logged_request_id.set(request_id(request))
    return await handler(request)


# Paths that answer JSON, errors included: a NUL is refused there in JSON too.
_JSON_PATHS = ("/api/", "/map/data", "/map/wards")


@web.middleware
async def refuse_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A NUL character has no business in a path or a query, and PostgreSQL refuses it
    in text: 400 before any handler sees it."""
    if "\x00" in request.path or any("\x00" in k + v for k, v in request.query.items()):
        if request.path.startswith(_JSON_PATHS):
            raise web.HTTPBadRequest(
                text='{"error": "bad_request", "detail": "NUL characters are not accepted"}',
                content_type="application/json",
            )
        raise web.HTTPBadRequest(text="NUL characters are not accepted")
    return await handler(request)


class JsonAccessLog(AbstractAccessLogger):
    """One JSON line per request: method, route (its pattern, never the path's values),
    status, duration and request id. No query strings, bodies, addresses or identities."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        try:
            resource = request.match_info.route.resource  # type: ignore[attr-defined]
        except (AttributeError, AssertionError):
            # A request the HTTP parser refused never reached the router.
            resource = None
        method = request.method if request.method.isalpha() else "?"
        route = _route_json(resource.canonical if resource is not None else None)
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        # Written out, not json.dumps'd: every value is known to need no escaping but the
        # route, which is encoded once per route. The record is made without logging's
        # look-up of the caller: a line a request is on the hot path.
        line = (
            f'{{"at": "{at}", "method": "{method}", "route": {route}, '
            f'"status": {response.status}, "ms": {time * 1000:.1f}, '
            f'"request_id": "{request_id(request)}"}}'
        )
        logger = self.logger
        if logger.isEnabledFor(logging.INFO):
            logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, (), None))


@functools.lru_cache(maxsize=256)
def _route_json(route: str | None) -> str:
    return json.dumps(route)


def access_logger() -> logging.Logger:
    """The hotline.access logger, writing bare JSON lines (for JsonAccessLog)."""
    logger = logging.getLogger(ACCESS_LOG)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
