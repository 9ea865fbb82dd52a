"""Telegram: python-telegram-bot as transport and typed API, webhook route and polling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from backend.config import Settings
from backend.services.media_store import MediaStore, MediaUnavailable, local_media
from backend.services.photos import read_photo
from backend.services.presence import Presence
from backend.web.bodies import WEBHOOK_LIMIT, BadJSON, parse_json, read_body
from bot.inbox import Inbox, NotStored
from bot.media import NOT_TAKEN, Fetched, store_media
from bot.outbox import PermanentError, RetryLater, TransientError
from bot.parsing import has_secret, split_command, text_or_command
from bot.tasks import cancel
from bot.updates import Malformed, TelegramFile, TelegramMessage, TelegramUpdate, read
from handlers.events import (
    Ack,
    Capabilities,
    Edit,
    Incoming,
    Outgoing,
    Reply,
)
from handlers.i18n import translate

log = logging.getLogger(__name__)

# Durations such as retry_after arrive as timedelta (PTB's announced future behaviour).
os.environ.setdefault("PTB_TIMEDELTA", "true")

CHANNEL = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
WEBHOOK_PATH = "/telegram/webhook"
COMMANDS = ("start", "status", "my", "mydata", "forgetme", "withdraw", "cancel", "lang", "help")
ALLOWED_UPDATES = ("message", "callback_query")
GROUP_CHATS = ("group", "supergroup")
# The duty of polling getUpdates: one process for all.
POLL_DUTY = "poll:telegram"


class PollRefused(Exception):
    """getUpdates answered {"ok": false}: the HTTP status, and Telegram's retry_after."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramChannel:
    """Turns Telegram updates into Incoming events and renders Replies for Telegram."""

    name = CHANNEL
    capabilities = Capabilities(inline_buttons=True, request_location=True, request_contact=True)

    def __init__(
        self,
        settings: Settings,
        inbox: Inbox,
        presence: Presence,
        *,
        media: MediaStore | None = None,
    ) -> None:
        if settings.telegram_token is None:
            raise ValueError("TelegramChannel needs HOTLINE_TELEGRAM_TOKEN")
        self._settings = settings
        self._media = media if media is not None else local_media(settings)
        self._inbox = inbox
        self._presence = presence
        inbox.add_reader(CHANNEL, self.read)
        self._secret = settings.webhook_secret().encode()
        api = settings.telegram_api_url.rstrip("/")
        self.bot = Bot(
            settings.telegram_token.get_secret_value(),
            base_url=f"{api}/bot",
            base_file_url=f"{api}/file/bot",
            request=HTTPXRequest(connection_pool_size=64, read_timeout=20, media_write_timeout=60),
        )
        self._api = f"{api}/bot{settings.telegram_token.get_secret_value()}"
        self._http: aiohttp.ClientSession | None = None
        self.rate_global = settings.telegram_rate_global
        self.rate_per_chat = settings.telegram_rate_per_chat
        self._polling: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bot.initialize()
        for language in ("vi", "en"):
            await self.bot.set_my_commands(
                [BotCommand(c, translate(language, f"command.{c}")) for c in COMMANDS],
                language_code=None if language == "vi" else language,
            )
        if self._settings.telegram_mode == "webhook":
            if not self._settings.public_url:
                raise ValueError("webhook mode needs HOTLINE_PUBLIC_URL")
            await self.bot.set_webhook(
                url=self._settings.public_url.rstrip("/") + WEBHOOK_PATH,
                secret_token=self._secret.decode(),
                allowed_updates=list(ALLOWED_UPDATES),
            )
            log.info("Telegram webhook set")
        else:
            self._presence.want(POLL_DUTY)
            self._polling = asyncio.create_task(self._poll(), name="telegram-polling")

    async def stop(self) -> None:
        await cancel(self._polling)
        self._polling = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self.bot.shutdown()

    # --- receiving ---------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /telegram/webhook: check the secret, persist the update, then answer 200.

        An update with the right secret that is not one we can read is logged and answered
        200 all the same: Telegram sends again whatever is not answered 2xx, for hours.
        """
        if not has_secret(request.headers, SECRET_HEADER, self._secret):
            return web.Response(status=401, text="bad secret token")
        body = await read_body(request, WEBHOOK_LIMIT)
        try:
            await self._keep(parse_json(body))
        except NotStored:
            return web.Response(status=503, text="not stored; send it again")
        except (BadJSON, Malformed) as exc:  # their text names the problem, not the data
            log.warning("Telegram update ignored: %s", exc)
            return web.Response(text="ignored")
        return web.Response(text="ok")

    async def _keep(self, data: Any) -> None:
        """Store an update for the dialogue, when there is something in it for it."""
        update = read(TelegramUpdate, data)
        chat_id = self.chat_of(update)
        if chat_id is None:
            return
        msg = update.message
        fetches = msg is not None and _media_of(msg) is not None
        ready = None if fetches else await self.to_incoming(update)
        await self._inbox.accept(CHANNEL, str(update.update_id), chat_id, data, ready=ready)

    async def read(self, body: Mapping[str, Any]) -> Incoming | None:
        """A stored update as the dialogue takes it, its photo fetched and stored first."""
        return await self.to_incoming(read(TelegramUpdate, body))

    async def _get_updates(self, offset: int | None) -> list[Any]:
        """getUpdates, its answer read as raw JSON: PTB's own parsing raises on an update it
        cannot read, which would stop polling for good on that one update."""
        wait = self._settings.telegram_poll_timeout
        payload: dict[str, Any] = {"timeout": wait, "allowed_updates": list(ALLOWED_UPDATES)}
        if offset is not None:
            payload["offset"] = offset
        async with self._polling_http().post(
            f"{self._api}/getUpdates", json=payload, timeout=aiohttp.ClientTimeout(total=wait + 15)
        ) as response:
            body = await response.read()
        data = parse_json(body)
        if not isinstance(data, dict):
            raise BadJSON("not an object")
        if not data.get("ok"):
            parameters = data.get("parameters")
            retry = parameters.get("retry_after") if isinstance(parameters, dict) else None
            raise PollRefused(
                response.status, float(retry) if isinstance(retry, int | float) else None
            )
        result = data.get("result")
        if not isinstance(result, list):
            raise BadJSON("no list of updates")
        return result

    def _polling_http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def _poll(self) -> None:
        """getUpdates while this process holds the polling duty (one poller for all the
        processes: Telegram refuses two). The offset moves past updates once stored."""
        offset: int | None = None
        failures = 0
        while True:
            if not self._presence.holds(POLL_DUTY):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._presence.changed(), 1.0)
                continue
            if offset is None:
                await self.bot.delete_webhook()
                log.info("Telegram polling started")
            try:
                raw = await self._get_updates(offset)
                failures = 0
            except PollRefused as exc:
                if exc.retry_after is not None:
                    await asyncio.sleep(exc.retry_after)
                    continue
                failures += 1
                log.warning("getUpdates refused (HTTP %d); retrying", exc.status)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            except (aiohttp.ClientError, TimeoutError, BadJSON, TelegramError) as exc:
                failures += 1
                log.warning("getUpdates failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            ids = [
                u["update_id"]
                for u in raw
                if isinstance(u, dict) and type(u.get("update_id")) is int and u["update_id"] >= 0
            ]
            try:
                await asyncio.gather(*(self._keep_polled(item) for item in raw))
            except NotStored:
                # Not moving the offset: Telegram gives the same updates again.
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                failures += 1
                continue
            if ids:
                offset = max(ids) + 1
            elif raw:
                # Nothing here has an id to move past: Telegram never sends that.
                log.warning("getUpdates answered %d items without an update_id", len(raw))
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))

    async def _keep_polled(self, item: Any) -> None:
        try:
            await self._keep(item)
        except Malformed as exc:
            log.warning("Telegram update ignored: %s", exc)

    @staticmethod
    def chat_of(update: TelegramUpdate) -> str | None:
        """The chat an update belongs to (its updates are handled in order), or None when
        it holds nothing for the dialogue (see to_incoming)."""
        query = update.callback_query
        if query is not None:
            chat = query.message.chat if query.message is not None else None
            return str(chat.id if chat is not None else query.sender.id)
        msg = update.message
        if msg is None:
            return None
        if msg.chat.type in GROUP_CHATS:
            return str(msg.chat.id) if (msg.text or "").startswith("/") else None
        return str(msg.chat.id) if msg.chat.type == "private" else None

    async def to_incoming(self, update: TelegramUpdate) -> Incoming | None:
        """The neutral event for a Bot API update, or None for what the dialogue does not take.

        Reads the update's JSON through the schema's models, not PTB's Update objects:
        building those costs about 0.19 ms per update, more than the rest of the webhook
        intake together.
        """
        uid = str(update.update_id)
        query = update.callback_query
        if query is not None:
            sender = query.sender
            chat = query.message.chat if query.message is not None else None
            return Incoming(
                channel=CHANNEL,
                chat_id=str(chat.id if chat is not None else sender.id),
                update_id=uid,
                kind="button",
                button=query.data,
                callback_id=query.id,
                language=sender.language_code,
                group=chat is not None and chat.type in GROUP_CHATS,
                sender_id=str(sender.id),
            )
        msg = update.message
        if msg is None:
            return None
        if msg.chat.type in GROUP_CHATS:
            return self._group_command(uid, msg)
        if msg.chat.type != "private":
            return None
        base: dict[str, Any] = {
            "channel": CHANNEL,
            "chat_id": str(msg.chat.id),
            "update_id": uid,
            "language": msg.sender.language_code if msg.sender is not None else None,
        }
        if msg.text is not None:
            return text_or_command(msg.text, **base)
        point = msg.venue.location if msg.venue is not None else msg.location
        if point is not None:
            return Incoming(kind="location", location=point.pair, **base)
        if msg.contact is not None:
            own = msg.sender is not None and msg.contact.user_id == msg.sender.id
            # Someone else's card (shared from the address book) is not the reporter's
            # phone: it is answered as input the step did not expect.
            if not own:
                return Incoming(kind="other", **base)
            return Incoming(kind="contact", phone=msg.contact.phone_number, **base)
        source = _media_of(msg)
        if source is not None:
            taken = await self._inbox.takes_photo(CHANNEL, base["chat_id"])
            media, error = await self._fetch_media(source) if taken else NOT_TAKEN
            return Incoming(
                kind="photo",
                media=media,
                media_error=error,
                media_group=msg.media_group_id,
                **base,
            )
        return Incoming(kind="other", **base)

    @staticmethod
    def _group_command(uid: str, msg: TelegramMessage) -> Incoming | None:
        """In a staff group only commands count (/link); the chatter is not for the bot."""
        text = msg.text or ""
        if not text.startswith("/"):
            return None
        command, args = split_command(text)
        return Incoming(
            channel=CHANNEL,
            chat_id=str(msg.chat.id),
            update_id=uid,
            kind="command",
            command=command,
            args=args.strip(),
            text=text,
            group=True,
            sender_id=str(msg.sender.id) if msg.sender is not None else None,
        )

    async def _fetch_media(self, source: TelegramFile) -> Fetched:
        """Download an image with getFile and store it, before the dialogue sees it."""
        limit = self._settings.max_photo_bytes
        if source.file_size is not None and source.file_size > limit:
            return None, "too_large"
        try:
            tg_file = await self.bot.get_file(source.file_id)
            if tg_file.file_size is not None and tg_file.file_size > limit:
                return None, "too_large"
            data = bytes(await tg_file.download_as_bytearray())
        except TelegramError as exc:
            log.warning("photo download failed: %s", type(exc).__name__)
            return None, "download_failed"
        return await store_media(self._media, self._settings, data)

    # --- sending -----------------------------------------------------------------------------

    @staticmethod
    def markup(
        reply: Reply,
    ) -> InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | None:
        if reply.request is not None:
            label = reply.request_label or reply.request
            first = KeyboardButton(
                label,
                request_location=reply.request == "location",
                request_contact=reply.request == "contact",
            )
            # Other options become keyboard buttons; they come back as text and are
            # matched against the step's options by label.
            rows = [[first], *[[KeyboardButton(b.label) for b in row] for row in reply.buttons]]
            return ReplyKeyboardMarkup(rows, resize_keyboard=True, one_time_keyboard=True)
        if reply.buttons:
            return InlineKeyboardMarkup(
                [
                    [InlineKeyboardButton(b.label, callback_data=b.data) for b in row]
                    for row in reply.buttons
                ]
            )
        if reply.remove_keyboard:
            return ReplyKeyboardRemove()
        return None

    async def deliver(self, chat_id: str, message: Outgoing) -> str | None:
        try:
            if isinstance(message, Ack):
                await self.bot.answer_callback_query(message.callback_id, text=message.text)
                return None
            if isinstance(message, Edit):
                if message.caption:
                    await self.bot.edit_message_caption(
                        chat_id, int(message.message_id), caption=message.text[:1024]
                    )
                else:
                    await self.bot.edit_message_text(message.text, chat_id, int(message.message_id))
                return message.message_id
            if message.photo_sha256 is not None:
                photo = await read_photo(
                    self._media, message.photo_sha256, thumbnail=message.thumbnail
                )
                if photo is None:
                    raise PermanentError("photo no longer stored")
                sent = await self.bot.send_photo(
                    chat_id,
                    photo.data,
                    filename=photo.name,
                    caption=message.text[:1024],
                    reply_markup=self.markup(message),
                )
            else:
                sent = await self.bot.send_message(
                    chat_id, message.text, reply_markup=self.markup(message)
                )
            return str(sent.message_id)
        except RetryAfter as exc:
            raise RetryLater(_seconds(exc.retry_after)) from exc
        except (Forbidden, BadRequest, InvalidToken) as exc:
            raise PermanentError(f"{type(exc).__name__}: {exc.message}") from exc
        except (TimedOut, NetworkError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc.message}") from exc
        except MediaUnavailable as exc:
            raise TransientError(str(exc)) from exc


def _media_of(msg: TelegramMessage) -> TelegramFile | None:
    """The file a message brings to fetch (the largest size of a photo, or a document
    sent as a file), or None."""
    return msg.photo[-1] if msg.photo else msg.document
