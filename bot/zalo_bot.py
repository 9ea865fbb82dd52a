"""Zalo Bot Platform (Telegram-like, `/bot{token}/{method}`): updates as neutral Incoming.

An update is {"event_name": …, "message": {…}}, wrapped as {"ok": true, "result": …} by
getUpdates and by the webhook. Text, images (photo_url) and unsupported messages arrive;
a location has no event of its own, so one that ever arrives is read in any of the
shapes Zalo uses elsewhere. Updates are read through the schema in bot/updates.py.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from backend.config import Settings
from backend.services.media_store import MediaStore, MediaUnavailable, local_media
from backend.services.photos import read_photo
from backend.web.bodies import WEBHOOK_LIMIT, BadJSON, parse_json, read_body
from bot.inbox import Inbox
from bot.media import photo_event
from bot.outbox import PermanentError, RetryLater, TransientError, split_text
from bot.parsing import has_secret, text_or_command
from bot.tasks import cancel
from bot.updates import Malformed, ZaloBotUpdate, read
from handlers.events import Capabilities, Incoming, Outgoing, Reply

log = logging.getLogger(__name__)

CHANNEL = "zalo_bot"
SECRET_HEADER = "X-Bot-Api-Secret-Token"  # noqa: S105 - a header name


@dataclass(frozen=True, slots=True)
class BotUpdate:
    event: str
    chat_id: str
    message_id: str
    text: str | None = None
    photo_url: str | None = None
    location: tuple[float, float] | None = None


def read_update(update: Any) -> BotUpdate | None:
    """The parts of an update the dialogue takes, read through the schema (bare, or
    wrapped in {"ok": true, "result": …}); None when it has no message, Malformed when it
    does not fit."""
    if isinstance(update, Mapping) and "result" in update:
        update = update["result"]
    got = read(ZaloBotUpdate, update)
    message = got.message
    if message is None:
        return None
    return BotUpdate(
        event=got.event_name,
        chat_id=message.chat_id,
        message_id=message.message_id,
        text=message.text or None,
        photo_url=message.photo_url or message.photo or None,
        location=message.location.pair if message.location is not None else None,
    )


def to_incoming(update: BotUpdate) -> Incoming | None:
    """The neutral event for what needs no download; images are fetched first."""
    base: dict[str, Any] = {
        "channel": CHANNEL,
        "chat_id": update.chat_id,
        "update_id": update.message_id,
    }
    if update.location is not None:
        return Incoming(kind="location", location=update.location, **base)
    if update.event == "message.unsupported.received":
        return Incoming(kind="photo", media_error="not_image", **base)
    if update.text is not None and update.photo_url is None:
        return text_or_command(update.text, **base)
    return None


# --- the channel -------------------------------------------------------------------------

WEBHOOK_PATH = "/zalo/bot/webhook"
MEDIA_PATH = "/zalo/bot/media"
MEDIA_ROUTE = (
    MEDIA_PATH + "/{sha256:[0-9a-f]{64}}/{kind:full|thumb}/{expires:[0-9]{1,12}}"
    "/{signature:[0-9a-f]{32}}.jpg"
)
TEXT_LIMIT = 2000
CAPTION_LIMIT = 1000
REQUEST_TIMEOUT = 408  # getUpdates: nothing arrived within the timeout
MEDIA_LINK_LIFETIME = 7 * 24 * 3600


class BotApiError(Exception):
    """The Bot Platform answered {"ok": false, "error_code": …, "description": …}."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class ZaloBotChannel:
    """Zalo Bot Platform: getUpdates or a webhook in, sendMessage/sendPhoto out."""

    name = CHANNEL
    capabilities = Capabilities(inline_buttons=False, request_location=False)

    def __init__(
        self, settings: Settings, inbox: Inbox, *, media: MediaStore | None = None
    ) -> None:
        if settings.zalo_bot_token is None:
            raise ValueError("ZaloBotChannel needs HOTLINE_ZALO_BOT_TOKEN")
        token = settings.zalo_bot_token.get_secret_value()
        self._settings = settings
        self._media = media if media is not None else local_media(settings)
        self._inbox = inbox
        self._base = f"{settings.zalo_bot_api_url.rstrip('/')}/bot{token}"
        self._secret = settings.zalo_bot_webhook_secret_value().encode()
        self._media_key = hmac.new(token.encode(), b"hotline-zalo-bot-media", "sha256").digest()
        self._http: aiohttp.ClientSession | None = None
        self._polling: asyncio.Task[None] | None = None
        self.rate_global = settings.zalo_bot_rate_global
        self.rate_per_chat = settings.zalo_bot_rate_per_chat
        inbox.add_reader(CHANNEL, self.read)
        if not settings.public_url:
            log.warning("no HOTLINE_PUBLIC_URL: Zalo Bot photos are sent as text only")

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def start(self) -> None:
        if self._settings.zalo_bot_mode == "webhook":
            if not self._settings.public_url:
                raise ValueError("Zalo Bot webhook mode needs HOTLINE_PUBLIC_URL")
            await self.call(
                "setWebhook",
                {
                    "url": self._settings.public_url.rstrip("/") + WEBHOOK_PATH,
                    "secret_token": self._secret.decode(),
                },
            )
            log.info("Zalo Bot webhook set")
        else:
            await self.call("deleteWebhook", {})
            self._polling = asyncio.create_task(self._poll(), name="zalo-bot-polling")
            log.info("Zalo Bot polling started")

    async def stop(self) -> None:
        await cancel(self._polling)
        self._polling = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(self, method: str, payload: Mapping[str, Any], wait: float = 30.0) -> Any:
        """A Bot Platform method: its result, or BotApiError / aiohttp errors."""
        async with self.http().post(
            f"{self._base}/{method}", json=payload, timeout=aiohttp.ClientTimeout(total=wait)
        ) as response:
            # Read strictly, as a webhook's body is (BadJSON is a ValueError).
            data = parse_json(await response.read())
        if not isinstance(data, Mapping):
            raise BotApiError(response.status, "not a JSON object")
        if data.get("ok") is not True:
            code = data.get("error_code")
            if not isinstance(code, int) or isinstance(code, bool):
                code = response.status
            raise BotApiError(code, str(data.get("description") or "")[:200])
        return data.get("result")

    # --- receiving ---------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /zalo/bot/webhook: check the secret token, store the update, answer.

        An update that does not fit the schema is logged (the kind of problem only) and
        answered 200: sending it again would not change it.
        """
        if not has_secret(request.headers, SECRET_HEADER, self._secret):
            return web.Response(status=401, text="bad secret token")
        body = await read_body(request, WEBHOOK_LIMIT)
        try:
            data = parse_json(body)
        except BadJSON:
            return web.Response(status=400, text="not an update")
        await self._keep(data)
        return web.Response(text="ok")

    async def _keep(self, data: Any) -> None:
        """Store an update for the dialogue (a repeated message id is stored once)."""
        try:
            update = read_update(data)
        except Malformed as exc:
            log.warning("Zalo Bot update ignored: %s", exc)
            return
        if update is None:
            log.info("Zalo Bot update without a message ignored")
            return
        await self._inbox.accept(CHANNEL, update.message_id, update.chat_id, data, spool=True)

    async def _poll(self) -> None:
        failures = 0
        timeout = self._settings.zalo_bot_poll_timeout
        while True:
            try:
                result = await self.call("getUpdates", {"timeout": str(timeout)}, timeout + 15)
                failures = 0
            except BotApiError as exc:
                if exc.code == REQUEST_TIMEOUT:
                    continue
                failures += 1
                log.warning("Zalo Bot getUpdates refused (%d); retrying", exc.code)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failures += 1
                log.warning("Zalo Bot getUpdates failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            for update in result if isinstance(result, list) else [result]:
                # getUpdates hands each update out once: it is kept (in the background
                # if the database is slow) before the next poll.
                await self._keep(update)

    async def read(self, body: Mapping[str, Any]) -> Incoming | None:
        """A stored update as the dialogue takes it, its photo fetched and stored first."""
        try:
            update = read_update(body)
        except Malformed as exc:
            log.warning("a stored Zalo Bot update does not fit the schema (%s); skipped", exc)
            return None
        if update is None:
            return None
        incoming = to_incoming(update)
        if incoming is not None or update.photo_url is None:
            return incoming
        return await photo_event(
            self.http(),
            update.photo_url,
            self._settings,
            self._media,
            channel=CHANNEL,
            chat_id=update.chat_id,
            update_id=update.message_id,
            gate=self._inbox.takes_photo,
        )

    # --- sending -----------------------------------------------------------------------------

    async def deliver(self, chat_id: str, message: Outgoing) -> str | None:
        if not isinstance(message, Reply):
            return None  # no button spinners to stop and no edits on Zalo
        try:
            message_id: str | None = None
            parts = split_text(message.text, TEXT_LIMIT)
            photo = self.media_url(message.photo_sha256, message.thumbnail)
            if photo is not None:
                caption = parts.pop(0) if len(parts[0]) <= CAPTION_LIMIT else ""
                sent = await self.call(
                    "sendPhoto", {"chat_id": chat_id, "photo": photo, "caption": caption}
                )
                message_id = _message_id(sent)
            for text in parts:
                sent = await self.call("sendMessage", {"chat_id": chat_id, "text": text})
                message_id = _message_id(sent)
            return message_id
        except BotApiError as exc:
            if exc.code == 429:
                raise RetryLater(5.0) from exc
            if exc.code >= 500:
                raise TransientError(str(exc)) from exc
            raise PermanentError(str(exc)) from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TransientError(type(exc).__name__) from exc

    # --- photos by URL -----------------------------------------------------------------------

    def _signature(self, sha256: str, kind: str, expires: int) -> str:
        message = f"{sha256}:{kind}:{expires}".encode()
        return hmac.new(self._media_key, message, "sha256").hexdigest()[:32]

    def media_url(self, sha256: str | None, thumbnail: bool = False) -> str | None:
        """A link the Bot Platform can fetch a stored photo from, valid for a week."""
        if sha256 is None or not self._settings.public_url:
            return None
        kind = "thumb" if thumbnail else "full"
        expires = int(time.time()) + MEDIA_LINK_LIFETIME
        signature = self._signature(sha256, kind, expires)
        base = self._settings.public_url.rstrip("/")
        return f"{base}{MEDIA_PATH}/{sha256}/{kind}/{expires}/{signature}.jpg"

    async def media(self, request: web.Request) -> web.StreamResponse:
        """GET a photo by a signed link: no login, so the link is the only key."""
        sha256, kind = request.match_info["sha256"], request.match_info["kind"]
        expires = int(request.match_info["expires"])
        want = self._signature(sha256, kind, expires)
        if not hmac.compare_digest(want, request.match_info["signature"]) or expires < time.time():
            raise web.HTTPNotFound()
        try:
            photo = await read_photo(self._media, sha256, thumbnail=kind == "thumb")
        except MediaUnavailable as exc:
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "5"}) from exc
        if photo is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=photo.data,
            content_type=photo.content_type,
            headers={"Cache-Control": "private, max-age=3600", "ETag": f'"{photo.name}"'},
        )


def _message_id(result: Any) -> str | None:
    if isinstance(result, Mapping) and result.get("message_id") is not None:
        return str(result["message_id"])
    return None
