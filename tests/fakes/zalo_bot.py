"""A local Zalo Bot Platform stand-in: `/bot{token}/{method}` with JSON bodies, answers
{"ok": true, "result": …} or {"ok": false, "error_code": …, "description": …}.

getUpdates long-polls and hands out one update per call ({"ok": false, "error_code": 408,
"description": "Request timeout"} when none came); setWebhook makes it POST updates to
the URL with X-Bot-Api-Secret-Token. sendPhoto fetches the photo from its URL, as the
platform does, and fails when it cannot.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.zalo_bot import SECRET_HEADER
from tests.fakes.server import Reader, SentLog, StandIn


@dataclass
class BotMessage:
    method: str
    chat_id: str
    text: str | None
    photo: bytes | None
    photo_url: str | None = None


@dataclass
class FakeZaloBot(StandIn):
    token: str = "3096184:zalo-bot-test-token"
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_statuses: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sent: SentLog[BotMessage] = SentLog(lambda m: m.chat_id)
        self._updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._files: dict[str, bytes] = {}

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._method)
        app.router.add_get("/files/{name}", self._file)
        return await self._serve(app)

    # --- test controls -------------------------------------------------------------------

    def host_image(self, data: bytes) -> str:
        name = f"{secrets.token_hex(8)}.jpg"
        self._files[name] = data
        return f"{self.url}/files/{name}"

    async def push(self, update: dict[str, Any]) -> None:
        """Deliver an update: to the webhook if one is set, else to getUpdates."""
        if self.webhook_url is None:
            self._updates.put_nowait(update)
            return
        status = await self.post_webhook(update, self.webhook_secret)
        self.webhook_statuses.append(status)

    async def post_webhook(self, update: dict[str, Any], secret: str | None) -> int:
        assert self.webhook_url is not None
        headers = {SECRET_HEADER: secret} if secret is not None else {}
        async with self.client.post(self.webhook_url, json=update, headers=headers) as r:
            return r.status

    # --- wire protocol -------------------------------------------------------------------

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(code: int, description: str) -> web.Response:
        return web.json_response({"ok": False, "error_code": code, "description": description})

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        params: dict[str, Any] = await request.json() if request.can_read_body else {}
        self.calls.append((method, params))
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._error(404, "Not Found")
        response: web.Response = await handler(params)
        return response

    async def _file(self, request: web.Request) -> web.Response:
        data = self._files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/jpeg")

    async def _m_getMe(self, params: dict[str, Any]) -> web.Response:
        return self._ok({"id": "3096184", "account_name": "bot.hotline", "can_join_groups": False})

    async def _m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook_url is not None:
            return self._error(409, "Conflict: webhook is set")
        timeout = float(params.get("timeout") or 0)
        try:
            update = await asyncio.wait_for(self._updates.get(), timeout)
        except TimeoutError:
            return self._error(408, "Request timeout")
        return self._ok(update)

    async def _m_setWebhook(self, params: dict[str, Any]) -> web.Response:
        url, secret = params.get("url"), params.get("secret_token")
        if not url or not secret or not 8 <= len(secret) <= 256:
            return self._error(400, "Bad Request: url and secret_token are required")
        self.webhook_url, self.webhook_secret = str(url), str(secret)
        return self._ok({"url": url, "updated_at": int(time.time() * 1000)})

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = self.webhook_secret = None
        return self._ok({"url": "", "updated_at": int(time.time() * 1000)})

    def _sent(self, message: BotMessage) -> web.Response:
        self.sent.add(message)
        return self._ok({"message_id": secrets.token_hex(10), "date": int(time.time() * 1000)})

    async def _m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        text = params.get("text")
        if not params.get("chat_id") or not text:
            return self._error(400, "Bad Request: chat_id and text are required")
        if len(text) > 2000:
            return self._error(400, "Bad Request: text is too long")
        return self._sent(BotMessage("sendMessage", str(params["chat_id"]), text, None))

    async def _m_sendPhoto(self, params: dict[str, Any]) -> web.Response:
        url = params.get("photo")
        if not params.get("chat_id") or not url:
            return self._error(400, "Bad Request: chat_id and photo are required")
        # The platform fetches the photo from the URL it was given.
        async with self.client.get(str(url)) as response:
            if response.status != 200:
                return self._error(400, "Bad Request: photo URL cannot be fetched")
            data = await response.read()
        caption = params.get("caption") or None
        return self._sent(BotMessage("sendPhoto", str(params["chat_id"]), caption, data, url))


class ZaloBotUser(Reader[BotMessage]):
    """A Zalo user chatting with the bot."""

    def __init__(self, bot: FakeZaloBot, chat_id: str, name: str = "Nguyễn Văn A") -> None:
        super().__init__(bot.sent, chat_id)
        self.bot = bot
        self.chat_id = chat_id
        self.name = name

    def update(self, event_name: str, **content: Any) -> dict[str, Any]:
        message = {
            "from": {"id": self.chat_id, "display_name": self.name, "is_bot": False},
            "chat": {"id": self.chat_id, "chat_type": "PRIVATE"},
            "message_id": secrets.token_hex(16),  # opaque, as the platform's are
            "date": int(time.time() * 1000),
            **content,
        }
        return {"event_name": event_name, "message": message}

    async def send(self, update: dict[str, Any]) -> dict[str, Any]:
        await self.bot.push(update)
        return update

    async def text(self, text: str) -> dict[str, Any]:
        return await self.send(self.update("message.text.received", text=text))

    async def photo(self, data: bytes) -> dict[str, Any]:
        url = self.bot.host_image(data)
        return await self.send(self.update("message.image.received", photo_url=url))

    async def sticker(self) -> dict[str, Any]:
        return await self.send(self.update("message.unsupported.received"))
