"""Request bodies read within a limit, and JSON read strictly: what a hostile body can
carry (non-finite numbers, nesting thousands deep, NUL characters, broken UTF-8) is
refused as a client error before any handler sees it."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from pydantic_core import from_json

from backend.config import Settings

# Webhook bodies: Telegram's and Zalo's updates are a few kilobytes.
WEBHOOK_LIMIT = 1024 * 1024
# JSON bodies of the staff API and the simulator.
JSON_LIMIT = 256 * 1024
# Forms without files (login, notes, the admin's); those with photos say their own.
FORM_LIMIT = 64 * 1024


def upload_limit(settings: Settings) -> int:
    """The largest body: a form with a photo at the size accepted (the app's limit)."""
    return settings.max_photo_bytes + FORM_LIMIT


class BadJSON(ValueError):
    """The body is not JSON this service takes."""


def parse_json(data: bytes) -> Any:
    """The JSON value in data, or BadJSON: not UTF-8 or not JSON, nested deeper than 200
    levels, a number that is not finite (NaN, Infinity, 1e400), or a NUL character."""
    try:
        value = from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        raise BadJSON(str(exc)) from exc
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if "\x00" in key:
                    raise BadJSON("NUL in a key")
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BadJSON("a number that is not finite")
        elif isinstance(item, str) and "\x00" in item:
            raise BadJSON("NUL in a string")
    return value


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to be over limit bytes (by its
    Content-Length, or while it arrives)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    if declared is not None:
        # The usual case, in one read: the parser holds the body to its declared length.
        return await request.read()
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


async def read_form(
    request: web.Request, limit: int = 0
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form, or a client error: 411 without a Content-Length (browsers always
    send one with a form), 413 over limit bytes (FORM_LIMIT unless given), 400 for a
    body that is not a form (a broken multipart body, an unknown charset)."""
    limit = limit or FORM_LIMIT
    declared = request.content_length
    if declared is None and request.body_exists:
        raise web.HTTPLengthRequired(text="send the form with its Content-Length")
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    try:
        return await request.post()
    except (ValueError, LookupError, HttpProcessingError, RuntimeError) as exc:
        # A part whose headers do not parse, a charset no codec has, a "_charset_"
        # field aiohttp cannot take as the form's charset: all the client's doing.
        raise web.HTTPBadRequest(text="not a form this service sends") from exc
