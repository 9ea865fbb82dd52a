"""A Bot API of our own on 127.0.0.1, in Telegram's wire format: what the bot talks to in
the demo (`hotline serve --demo` without a Telegram token), where the chat simulator at
/demo/chat plays the resident; the tests use it as their Telegram.

Requests arrive form-encoded, multipart or as JSON; answers are {"ok": …, "result": …}
JSON, errors carry error_code, description and parameters.retry_after like the real API.
Everything is kept in memory: a restart forgets the simulated chats.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Run app on host (a free port unless given); the runner (to clean up) and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}"


class StandIn:
    """A stand-in server on 127.0.0.1, with a client of its own to call our webhooks."""

    url = ""
    _runner: web.AppRunner | None = None
    _client: aiohttp.ClientSession | None = None

    async def _serve(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner, self.url = await serve(app, host, port)
        self._client = aiohttp.ClientSession()
        return self.url

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            raise RuntimeError("the stand-in is not started")
        return self._client

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()


BOT_ID = 777000111


@dataclass
class Sent:
    """A message the bot sent, as the stand-in recorded it."""

    method: str
    chat_id: str
    message_id: int
    text: str | None
    reply_markup: dict[str, Any] | None
    at: float
    photo: bytes | None = None

    def buttons(self) -> list[tuple[str, str]]:
        """(label, callback_data) of the inline keyboard."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [(b["text"], b.get("callback_data", "")) for row in rows for b in row]

    def keyboard(self) -> list[dict[str, Any]]:
        rows = (self.reply_markup or {}).get("keyboard", [])
        return [b if isinstance(b, dict) else {"text": b} for row in rows for b in row]


@dataclass
class BotApiStandIn(StandIn):
    token: str = "123456:TEST-token"  # noqa: S105 - the stand-in's own
    host: str = "127.0.0.1"
    port: int = 0
    sent: list[Sent] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answered_callbacks: list[dict[str, Any]] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_statuses: list[int] = field(default_factory=list)
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._updates: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._sent_event = asyncio.Event()
        self._files: dict[str, tuple[str, bytes | None, int]] = {}
        self._ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}

    # --- server --------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download)
        return await self._serve(app, self.host, self.port)

    # --- test controls -------------------------------------------------------------------

    def fail_next(self, method: str, status: int, retry_after: int | None = None) -> None:
        """Make the next call of method fail with status (429 carries retry_after)."""
        body: dict[str, Any] = {"ok": False, "error_code": status}
        if status == 429:
            body["description"] = f"Too Many Requests: retry after {retry_after}"
            body["parameters"] = {"retry_after": retry_after}
        elif status == 403:
            body["description"] = "Forbidden: bot was blocked by the user"
        else:
            body["description"] = "Internal Server Error"
        self._failures.setdefault(method, []).append((status, body))

    def add_file(self, data: bytes | None, *, size: int | None = None) -> str:
        """Register a file for getFile; data None means a file too big to serve."""
        file_id = f"FILE{next(self._ids)}"
        length = size if size is not None else len(data or b"")
        self._files[file_id] = (f"photos/{file_id}.bin", data, length)
        return file_id

    def next_update_id(self) -> int:
        return next(self._ids)

    async def push(self, update: dict[str, Any]) -> None:
        """Deliver an update: to the webhook if one is set, else to getUpdates."""
        if self.webhook_url is not None:
            headers = {"X-Telegram-Bot-Api-Secret-Token": self.webhook_secret or ""}
            async with self.client.post(self.webhook_url, json=update, headers=headers) as r:
                self.webhook_statuses.append(r.status)
            return
        self._updates.append(update)
        self._new.set()

    async def post_webhook(self, update: dict[str, Any], secret: str) -> int:
        """POST an update to the webhook with any secret; returns the HTTP status."""
        if self.webhook_url is None:
            raise RuntimeError("no webhook set")
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with self.client.post(self.webhook_url, json=update, headers=headers) as r:
            return r.status

    def sent_to(self, chat_id: int | str) -> list[Sent]:
        return [s for s in self.sent if s.chat_id == str(chat_id)]

    async def wait_sent(self, chat_id: int | str, count: int, timeout: float = 15.0) -> list[Sent]:
        """Wait until at least count messages went to the chat; returns them all."""
        await self._wait(lambda: self.sent_to(chat_id), count, f"to {chat_id}", timeout)
        return self.sent_to(chat_id)

    async def wait_total(self, count: int, timeout: float = 15.0) -> None:
        """Wait until at least count messages went out, to any chat."""
        await self._wait(lambda: self.sent, count, "in all", timeout)

    async def _wait(
        self, sent: Callable[[], list[Sent]], count: int, where: str, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while len(sent()) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = [s.text for s in sent()]
                raise TimeoutError(f"expected {count} messages {where}, got {got}")
            self._sent_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent_event.wait(), remaining)

    # --- wire protocol -------------------------------------------------------------------

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(status: int, description: str) -> web.Response:
        return web.json_response(
            {"ok": False, "error_code": status, "description": description}, status=status
        )

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method != "POST" or not request.body_exists:
            return params
        if request.content_type == "application/json":
            params.update(await request.json())
            return params
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params[key] = value.file.read()
                continue
            params[key] = _decode(str(value))
        return params

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append((method, params))
        pending = self._failures.get(method)
        if pending:
            status, body = pending.pop(0)
            return web.json_response(body, status=status)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._error(404, "Not Found: method not found")
        result: web.Response = await handler(params)
        return result

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        for path, data, _ in self._files.values():
            if path == request.match_info["path"] and data is not None:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    def _bot_user(self) -> dict[str, Any]:
        return {"id": BOT_ID, "is_bot": True, "first_name": "Hotline", "username": "hotline_bot"}

    def _message(self, chat_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": int(chat_id), "type": "private"},
            "from": self._bot_user(),
            **extra,
        }

    def _record(self, method: str, params: dict[str, Any], msg: dict[str, Any]) -> None:
        photo = params.get("photo")
        self.sent.append(
            Sent(
                method=method,
                chat_id=str(params["chat_id"]),
                message_id=msg["message_id"],
                text=params.get("text") or params.get("caption"),
                reply_markup=params.get("reply_markup"),
                at=time.monotonic(),
                photo=photo if isinstance(photo, bytes) else None,
            )
        )
        self._sent_event.set()

    async def _m_getMe(self, params: dict[str, Any]) -> web.Response:
        return self._ok(
            {
                **self._bot_user(),
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    async def _m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook_url is not None:
            return self._error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        timeout = float(params.get("timeout") or 0)
        if not self._updates and timeout > 0:
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), timeout)
        limit = int(params.get("limit") or 100)
        return self._ok(self._updates[:limit])

    async def _m_setWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = params.get("url") or None
        self.webhook_secret = params.get("secret_token")
        return self._ok(True)

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = None
        self.webhook_secret = None
        return self._ok(True)

    async def _m_setMyCommands(self, params: dict[str, Any]) -> web.Response:
        self.commands[str(params.get("language_code") or "")] = params["commands"]
        return self._ok(True)

    async def _m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        if not params.get("text"):
            return self._error(400, "Bad Request: message text is empty")
        msg = self._message(str(params["chat_id"]), text=params["text"])
        self._record("sendMessage", params, msg)
        return self._ok(msg)

    async def _m_sendPhoto(self, params: dict[str, Any]) -> web.Response:
        size = {
            "file_id": f"PHOTO{next(self._ids)}",
            "file_unique_id": "u",
            "width": 1,
            "height": 1,
        }
        msg = self._message(str(params["chat_id"]), photo=[size], caption=params.get("caption"))
        self._record("sendPhoto", params, msg)
        return self._ok(msg)

    async def _m_getFile(self, params: dict[str, Any]) -> web.Response:
        entry = self._files.get(str(params.get("file_id")))
        if entry is None:
            return self._error(400, "Bad Request: invalid file_id")
        path, data, size = entry
        if data is None:
            return self._error(400, "Bad Request: file is too big")
        return self._ok(
            {
                "file_id": params["file_id"],
                "file_unique_id": "u",
                "file_size": size,
                "file_path": path,
            }
        )

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        self.answered_callbacks.append(params)
        return self._ok(True)

    async def _m_editMessageText(self, params: dict[str, Any]) -> web.Response:
        self.edits.append(params)
        msg = self._message(str(params["chat_id"]), text=params.get("text"))
        msg["message_id"] = int(params["message_id"])
        return self._ok(msg)

    async def _m_editMessageCaption(self, params: dict[str, Any]) -> web.Response:
        self.edits.append(params)
        msg = self._message(str(params["chat_id"]), caption=params.get("caption"))
        msg["message_id"] = int(params["message_id"])
        return self._ok(msg)

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> web.Response:
        msg = self._message(str(params["chat_id"]))
        msg["message_id"] = int(params["message_id"])
        return self._ok(msg)


def _decode(value: str) -> Any:
    """Bot API form fields carry JSON for objects and numbers; plain strings stay strings."""
    number = value.lstrip("-")
    if value[:1] in "{[" or value in ("true", "false") or (number.isascii() and number.isdigit()):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class StandInUser:
    """A Telegram user talking to the bot, producing real update JSON: in a private chat
    (chat id = user id), or in a group when group_id is given."""

    def __init__(
        self,
        api: BotApiStandIn,
        chat_id: int,
        language_code: str = "vi",
        *,
        group_id: int | None = None,
    ) -> None:
        self.api = api
        self.user_id = chat_id
        self.chat_id = group_id if group_id is not None else chat_id
        self.chat_type = "supergroup" if group_id is not None else "private"
        self.language_code = language_code
        self.seen = 0

    def _user(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "is_bot": False,
            "first_name": "Lan",
            "language_code": self.language_code,
        }

    def message_update(self, update_id: int | None = None, **content: Any) -> dict[str, Any]:
        return {
            "update_id": update_id if update_id is not None else self.api.next_update_id(),
            "message": {
                "message_id": self.api.next_update_id(),
                "date": int(time.time()),
                "chat": {"id": self.chat_id, "type": self.chat_type, "first_name": "Lan"},
                "from": self._user(),
                **content,
            },
        }

    async def send(self, **content: Any) -> dict[str, Any]:
        update = self.message_update(**content)
        await self.api.push(update)
        return update

    async def text(self, text: str) -> dict[str, Any]:
        entities = []
        if text.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return await self.send(text=text, entities=entities)

    async def location(self, lat: float, lon: float) -> dict[str, Any]:
        return await self.send(location={"latitude": lat, "longitude": lon})

    async def venue(self, lat: float, lon: float, title: str) -> dict[str, Any]:
        loc = {"latitude": lat, "longitude": lon}
        return await self.send(location=loc, venue={"location": loc, "title": title, "address": ""})

    async def contact(self, phone: str) -> dict[str, Any]:
        return await self.send(
            contact={"phone_number": phone, "first_name": "Lan", "user_id": self.chat_id}
        )

    async def photo(self, data: bytes, media_group_id: str | None = None) -> dict[str, Any]:
        file_id = self.api.add_file(data)
        sizes = [
            {
                "file_id": file_id,
                "file_unique_id": file_id,
                "width": 64,
                "height": 48,
                "file_size": len(data),
            }
        ]
        extra = {"media_group_id": media_group_id} if media_group_id else {}
        return await self.send(photo=sizes, **extra)

    async def document(
        self, data: bytes | None, file_name: str, mime_type: str, size: int | None = None
    ) -> dict[str, Any]:
        file_id = self.api.add_file(data, size=size)
        doc = {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": size if size is not None else len(data or b""),
        }
        return await self.send(document=doc)

    async def press(self, label: str) -> dict[str, Any]:
        """Press the inline button with this label on the newest message that has it."""
        for sent in reversed(self.api.sent_to(self.chat_id)):
            for text, data in sent.buttons():
                if text == label:
                    return await self.press_data(data, sent.message_id)
        raise LookupError(f"no button {label!r} in the chat")

    async def tap(self, label: str) -> dict[str, Any]:
        """Tap a reply-keyboard button: Telegram sends its label as a text message."""
        for sent in reversed(self.api.sent_to(self.chat_id)):
            if sent.keyboard():
                labels = [b["text"] for b in sent.keyboard()]
                if label not in labels:
                    raise LookupError(f"{label!r} not in the keyboard {labels}")
                return await self.text(label)
        raise LookupError("no reply keyboard in the chat")

    async def press_data(self, data: str, message_id: int = 1) -> dict[str, Any]:
        update = {
            "update_id": self.api.next_update_id(),
            "callback_query": {
                "id": f"CB{self.api.next_update_id()}",
                "from": self._user(),
                "chat_instance": "ci",
                "data": data,
                "message": {
                    "message_id": message_id,
                    "date": int(time.time()),
                    "chat": {"id": self.chat_id, "type": self.chat_type},
                    "from": {"id": BOT_ID, "is_bot": True, "first_name": "Hotline"},
                    "text": "…",
                },
            },
        }
        await self.api.push(update)
        return update

    async def replies(self, count: int = 1, timeout: float = 15.0) -> list[Sent]:
        """The next count messages the bot sends to this chat."""
        sent = await self.api.wait_sent(self.chat_id, self.seen + count, timeout)
        new = sent[self.seen : self.seen + count]
        self.seen += count
        return new

    async def reply(self, timeout: float = 15.0) -> Sent:
        return (await self.replies(1, timeout))[0]


class DemoChats:
    """The stand-in as the chat simulator (/demo/chat) uses it, for `make run` without a
    Telegram token: one StandInUser per browser, and the bot's messages to that chat."""

    def __init__(self, api: BotApiStandIn) -> None:
        self.api = api

    def user(self, chat_id: int) -> StandInUser:
        return StandInUser(self.api, chat_id)

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        out = []
        for s in self.api.sent_to(chat_id):
            keyboard = s.keyboard()
            out.append(
                {
                    "id": s.message_id,
                    "text": s.text,
                    "buttons": [
                        [(b["text"], b.get("callback_data", "")) for b in row]
                        for row in (s.reply_markup or {}).get("inline_keyboard", [])
                    ],
                    "keyboard": [b["text"] for b in keyboard],
                    "request_location": bool(keyboard and keyboard[0].get("request_location")),
                    "request_contact": bool(keyboard and keyboard[0].get("request_contact")),
                    "remove_keyboard": bool((s.reply_markup or {}).get("remove_keyboard")),
                    "photo": s.photo is not None,
                }
            )
        return out

    def photo(self, chat_id: int, message_id: int) -> bytes | None:
        for s in self.api.sent_to(chat_id):
            if s.message_id == message_id:
                return s.photo
        return None
