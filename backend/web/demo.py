"""The chat simulator at /demo/chat: a resident's Telegram chat in the browser, talking to
the built-in Bot API stand-in that the demo (`make run`) starts when no Telegram token is
set. Mounted only while the demo runs.

The stand-in itself is given by the composition root (bot/standin.py); this module only
needs a way to act as a user in a chat and to read what the bot sent.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from backend.web.app import SETTINGS
from backend.web.bodies import (
    JSON_LIMIT,
    BadJSON,
    parse_json,
    read_body,
    read_form,
    upload_limit,
)
from backend.web.dashboard import TEXT

HERE = Path(__file__).resolve().parent
DEMO_COOKIE = "hotline_demo_chat"
_CHAT = re.compile(r"^[1-9][0-9]{5,11}$")


class ChatUser(Protocol):
    """One simulated Telegram user (bot/standin.py StandInUser)."""

    async def text(self, text: str) -> dict[str, Any]: ...
    async def location(self, lat: float, lon: float) -> dict[str, Any]: ...
    async def contact(self, phone: str) -> dict[str, Any]: ...
    async def photo(self, data: bytes, media_group_id: str | None = None) -> dict[str, Any]: ...
    async def press_data(self, data: str, message_id: int = 1) -> dict[str, Any]: ...


class ChatStandIn(Protocol):
    """The Bot API stand-in, as the simulator uses it."""

    def user(self, chat_id: int) -> ChatUser: ...
    def messages(self, chat_id: int) -> list[dict[str, Any]]: ...
    def photo(self, chat_id: int, message_id: int) -> bytes | None: ...


STAND_IN = web.AppKey("demo_stand_in", ChatStandIn)


def _chat_id(request: web.Request) -> int | None:
    value = request.cookies.get(DEMO_COOKIE, "")
    return int(value) if _CHAT.match(value) else None


async def chat_page(request: web.Request) -> web.Response:
    """GET /demo/chat: the simulator; each browser gets a chat of its own."""
    chat = _chat_id(request) or 100_000 + secrets.randbelow(10**9)
    html = (HERE / "templates" / "demo.html").read_text(encoding="utf-8")
    html = html.replace("{{TITLE}}", TEXT.translate("vi", "demo.title"))
    tiles = request.app[SETTINGS].map_tile_url
    html = html.replace("{{TILES}}", tiles.replace("&", "&amp;").replace('"', "&quot;"))
    response = web.Response(text=html, content_type="text/html")
    response.set_cookie(DEMO_COOKIE, str(chat), httponly=True, samesite="Strict", path="/demo")
    return response


async def messages(request: web.Request) -> web.Response:
    """GET /demo/api/messages: what the bot sent to this browser's chat, oldest first."""
    chat = _chat_id(request)
    if chat is None:
        return web.json_response({"messages": []})
    return web.json_response({"messages": request.app[STAND_IN].messages(chat)})


class _Sent(BaseModel):
    """What the simulator's page sends: text, a location or a button press."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: Annotated[str, StringConstraints(max_length=4096)] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    button: Annotated[str, StringConstraints(max_length=64)] | None = None
    # The keyboard's "share phone number": a contact, as Telegram sends it.
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ]{8,16}$")] | None = None
    message_id: Annotated[int, Field(ge=1, le=2**31)] = 1


async def send(request: web.Request) -> web.Response:
    """POST /demo/api/send: text, a location, a button press, or a photo (multipart)."""
    chat = _chat_id(request)
    if chat is None:
        raise web.HTTPBadRequest(text="open /demo/chat first")
    user = request.app[STAND_IN].user(chat)
    if request.content_type.startswith("multipart/"):
        form = await read_form(request, upload_limit(request.app[SETTINGS]))
        upload = form.get("photo")
        if not isinstance(upload, web.FileField):
            raise web.HTTPBadRequest(text="no photo")
        await user.photo(upload.file.read(25 * 1024 * 1024))
        return web.json_response({"ok": True})
    try:
        body = _Sent.model_validate(parse_json(await read_body(request, JSON_LIMIT)))
    except (BadJSON, ValidationError) as exc:
        raise web.HTTPBadRequest(
            text='send a JSON object: {"text": …}, {"lat": …, "lon": …}, {"phone": …} '
            'or {"button": …}'
        ) from exc
    if body.button is not None:
        await user.press_data(body.button, body.message_id)
    elif body.lat is not None and body.lon is not None:
        await user.location(body.lat, body.lon)
    elif body.phone is not None:
        await user.contact(body.phone)
    elif body.text is not None and body.text.strip():
        await user.text(body.text)
    else:
        raise web.HTTPBadRequest(text="nothing to send")
    return web.json_response({"ok": True})


async def photo(request: web.Request) -> web.Response:
    """GET /demo/api/photo/{id}: a photo the bot sent to this browser's chat."""
    chat = _chat_id(request)
    data = (
        request.app[STAND_IN].photo(chat, int(request.match_info["id"]))
        if chat is not None
        else None
    )
    if data is None:
        raise web.HTTPNotFound()
    return web.Response(body=data, content_type="image/jpeg")


def mount_demo(app: web.Application, stand_in: ChatStandIn) -> None:
    app[STAND_IN] = stand_in
    app.router.add_get("/demo/chat", chat_page)
    app.router.add_get("/demo/api/messages", messages)
    app.router.add_post("/demo/api/send", send)
    app.router.add_get("/demo/api/photo/{id:[0-9]{1,9}}", photo)
