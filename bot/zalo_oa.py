"""Zalo Official Account (OA API v3): webhook signatures and events as neutral Incoming.

Zalo signs each webhook with X-ZEvent-Signature = "mac=" + hex(sha256(app_id + raw body
+ timestamp + OA secret key)), where the timestamp is the event's own "timestamp" field.
The signature is checked over the raw bytes before the body is parsed, and the event is
read through the schema in bot/updates.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.crypto import keys
from backend.models import User, utcnow
from backend.services.media_store import MediaStore, MediaUnavailable, local_media
from backend.services.notify import tell_staff
from backend.services.photos import read_photo
from backend.web.bodies import WEBHOOK_LIMIT, BadJSON, parse_json, read_body
from bot.inbox import Inbox
from bot.media import photo_event
from bot.outbox import (
    PermanentError,
    RetryLater,
    TransientError,
    Undeliverable,
    split_text,
)
from bot.parsing import error_code, text_or_command
from bot.updates import Malformed, OAEnvelope, OAFollow, OAMessageEvent, read
from bot.zalo_tokens import TokenError, TokenRevoked, TokenStore
from handlers.events import Capabilities, Incoming, Outgoing, Reply

log = logging.getLogger(__name__)

CHANNEL = "zalo_oa"
SIGNATURE_HEADER = "X-ZEvent-Signature"
# Events the dialogue takes; others are logged and ignored.
EVENTS = frozenset(
    {"user_send_text", "user_send_image", "user_send_location", "user_send_file", "follow"}
)


class BadSignature(ValueError):
    """The webhook's signature is missing or does not match."""


def expected_signature(app_id: str, body: bytes, timestamp: str, secret_key: str) -> str:
    digest = hashlib.sha256(app_id.encode() + body + timestamp.encode() + secret_key.encode())
    return digest.hexdigest()


# A "timestamp" key (not an escaped quote inside a string) and its digits, quoted or not.
_TIMESTAMP = re.compile(
    rb'(?<!\\)"timestamp"[ \t\r\n]{0,16}:[ \t\r\n]{0,16}'
    rb'(?:"([0-9]{1,20})"|([0-9]{1,20})(?![0-9.eE]))'
)
# The top-level "timestamp" is one of the first few such keys; each try hashes the body.
CANDIDATES = 4


def signed_timestamp(headers: Mapping[str, str], body: bytes, app_id: str, secret_key: str) -> str:
    """The timestamp the signature over the raw body was made with (compared in constant
    time), before anything parses the body; BadSignature when there is none.

    The signed timestamp is the event's own, inside the body: the candidates are read from
    the bytes, and the caller checks the parsed event has the one that matched.
    """
    # aiohttp keeps bytes that are not UTF-8 as surrogates: they encode back, and differ.
    header = headers.get(SIGNATURE_HEADER, "").strip().removeprefix("mac=").lower()
    given = header.encode("utf-8", "surrogateescape")
    if not given:
        raise BadSignature("no signature")
    tried: set[bytes] = set()
    for found in _TIMESTAMP.finditer(body):
        timestamp = found.group(1) or found.group(2)
        if timestamp in tried:
            continue
        tried.add(timestamp)
        want = expected_signature(app_id, body, timestamp.decode(), secret_key).encode()
        if hmac.compare_digest(given, want):
            return timestamp.decode()
        if len(tried) == CANDIDATES:
            break
    raise BadSignature("signature mismatch")


def verify(headers: Mapping[str, str], body: bytes, app_id: str, secret_key: str) -> dict[str, Any]:
    """The event, once its signature checks out: checked over the raw bytes first, then
    the body parsed (strictly) and its own timestamp found to be the signed one.

    Raises BadSignature for a missing or wrong signature, or one made with another
    timestamp than the event's; BadJSON for a signed body that is not JSON to take.
    """
    timestamp = signed_timestamp(headers, body, app_id, secret_key)
    event = parse_json(body)
    own = event.get("timestamp") if isinstance(event, dict) else None
    if isinstance(own, int) and not isinstance(own, bool):
        own = str(own)
    if own != timestamp or not isinstance(event, dict):
        raise BadSignature("signed with another timestamp than the event's")
    return event


@dataclass(frozen=True, slots=True)
class OAEvent:
    """What the adapter needs from a webhook event before the dialogue sees it."""

    name: str
    user_id: str
    msg_id: str
    text: str | None = None
    image_url: str | None = None
    location: tuple[float, float] | None = None


def read_event(event: Any) -> OAEvent | None:
    """The parts of an OA event the dialogue takes, read through the schema; None for
    other events, Malformed for one that does not fit."""
    envelope = read(OAEnvelope, event)
    if envelope.event_name not in EVENTS:
        return None
    if envelope.event_name == "follow":
        follow = read(OAFollow, event)
        # A follow has no message id: its key is made of who and when, kept as a keyed
        # hash (stored ids name no one).
        key = keys().lookup("follow", f"{follow.user_id}:{follow.timestamp}")
        return OAEvent(follow.event_name, follow.user_id, f"follow:{key}")
    got = read(OAMessageEvent, event)
    message = got.message
    image_url = None
    location = None
    for attachment in message.attachments or ():
        payload = attachment.payload
        if payload is None:
            continue
        if attachment.type == "image" and image_url is None:
            image_url = payload.url
        elif attachment.type == "location" and payload.coordinates is not None:
            location = payload.coordinates.pair
    return OAEvent(
        got.event_name,
        got.sender.id,
        message.msg_id,
        text=message.text or None,
        image_url=image_url,
        location=location,
    )


def to_incoming(event: OAEvent) -> Incoming | None:
    """The neutral event for what needs no download (text, location, follow, a file)."""
    base: dict[str, Any] = {"channel": CHANNEL, "chat_id": event.user_id, "update_id": event.msg_id}
    if event.name == "follow":
        return Incoming(kind="command", command="start", text="/start", **base)
    if event.location is not None:
        return Incoming(kind="location", location=event.location, **base)
    if event.name == "user_send_file":
        return Incoming(kind="photo", media_error="not_image", **base)
    if event.text is not None and event.name == "user_send_text":
        return text_or_command(event.text, **base)
    return None


# --- the channel -------------------------------------------------------------------------

WEBHOOK_PATH = "/zalo/oa/webhook"
SEND_PATH = "/v3.0/oa/message/cs"
UPLOAD_PATH = "/v2.0/oa/upload/image"
TOKEN_EXPIRED = -216
# The user cannot be sent a consultation message now: not following the OA, or no
# message from them within the reply window.
UNREACHABLE = frozenset({-213, -230})
RATE_LIMITED = -32
TEXT_LIMIT = 2000
UPLOAD_LIMIT = 1_000_000  # Zalo takes images up to 1 MB


class ZaloOAChannel:
    """Zalo OA: a signed webhook in, consultation messages out, tokens kept in the DB."""

    name = CHANNEL
    capabilities = Capabilities(inline_buttons=False, request_location=False)

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        inbox: Inbox,
        *,
        media: MediaStore | None = None,
    ) -> None:
        if not settings.zalo_oa_on or settings.zalo_oa_secret_key is None:
            raise ValueError("ZaloOAChannel needs the HOTLINE_ZALO_OA_* settings")
        self._settings = settings
        self._media = media if media is not None else local_media(settings)
        self._sessions = sessions
        self._inbox = inbox
        self._app_id = str(settings.zalo_oa_app_id)
        self._secret_key = settings.zalo_oa_secret_key.get_secret_value()
        self._api = settings.zalo_oa_api_url.rstrip("/")
        self._window = timedelta(hours=settings.zalo_oa_window_hours)
        self._http: aiohttp.ClientSession | None = None
        self.tokens = TokenStore(sessions, settings, self.http, self._alert_admins)
        self.rate_global = settings.zalo_oa_rate_global
        self.rate_per_chat = settings.zalo_oa_rate_per_chat
        inbox.add_reader(CHANNEL, self.read)

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def start(self) -> None:
        self.http()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- receiving ---------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /zalo/oa/webhook: check the signature, store the event, answer at once.

        Nothing is parsed before the signature over the raw body checks out. A signed
        event that does not fit the schema is logged (the kind of problem only) and
        answered 200: sending it again would not change it.
        """
        body = await read_body(request, WEBHOOK_LIMIT)
        try:
            event = verify(request.headers, body, self._app_id, self._secret_key)
        except BadSignature:
            return web.Response(status=401, text="bad signature")
        except BadJSON:
            return web.Response(status=400, text="not an event")
        try:
            got = read_event(event)
        except Malformed as exc:
            log.warning("Zalo OA event ignored: %s", exc)
            return web.Response(text="ignored")
        if got is None:
            log.debug("Zalo OA event not for the dialogue ignored")
            return web.Response(text="ok")
        await self._inbox.accept(CHANNEL, got.msg_id, got.user_id, event, spool=True)
        return web.Response(text="ok")

    async def read(self, body: Mapping[str, Any]) -> Incoming | None:
        """A stored event as the dialogue takes it, its photo fetched and stored first."""
        try:
            event = read_event(body)
        except Malformed as exc:
            log.warning("a stored Zalo OA event does not fit the schema (%s); skipped", exc)
            return None
        if event is None:
            return None
        incoming = to_incoming(event)
        if incoming is not None or event.image_url is None:
            return incoming
        return await photo_event(
            self.http(),
            event.image_url,
            self._settings,
            self._media,
            channel=CHANNEL,
            chat_id=event.user_id,
            update_id=event.msg_id,
            gate=self._inbox.takes_photo,
        )

    # --- sending -----------------------------------------------------------------------------

    async def deliver(self, chat_id: str, message: Outgoing) -> str | None:
        if not isinstance(message, Reply):
            return None  # no button spinners to stop and no edits on Zalo
        last = await self._inbox.last_inbound(CHANNEL, chat_id)
        if last is None or utcnow() - last > self._window:
            raise Undeliverable("outside Zalo's reply window")
        try:
            attachment = await self._attachment(message)
            message_id: str | None = None
            parts = split_text(message.text, TEXT_LIMIT)
            for n, text in enumerate(parts):
                content: dict[str, Any] = {"text": text}
                if n == 0 and attachment is not None:
                    content["attachment"] = attachment
                data = await self._call(
                    SEND_PATH, json={"recipient": {"user_id": chat_id}, "message": content}
                )
                message_id = str((data.get("data") or {}).get("message_id") or "") or message_id
            return message_id
        except TokenRevoked as exc:
            # Nothing goes out until an admin sets new tokens; the messages wait.
            raise RetryLater(300.0) from exc
        except TokenError as exc:
            raise TransientError(str(exc)) from exc

    async def _attachment(self, message: Reply) -> dict[str, Any] | None:
        """Upload the reply's photo (the thumbnail when over Zalo's 1 MB) for its id."""
        if message.photo_sha256 is None:
            return None
        try:
            photo = await read_photo(self._media, message.photo_sha256, thumbnail=message.thumbnail)
            if photo is not None and len(photo.data) > UPLOAD_LIMIT:
                photo = await read_photo(self._media, message.photo_sha256, thumbnail=True)
        except MediaUnavailable as exc:
            raise TransientError(str(exc)) from exc
        if photo is None:
            raise PermanentError("photo no longer stored")
        image = photo  # narrowed, for the closure

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("file", image.data, filename=image.name, content_type=image.content_type)
            return data

        uploaded = await self._call(UPLOAD_PATH, form=form)
        attachment_id = (uploaded.get("data") or {}).get("attachment_id")
        if not attachment_id:
            raise TransientError("upload answered without an attachment_id")
        return {
            "type": "template",
            "payload": {
                "template_type": "media",
                "elements": [{"media_type": "image", "attachment_id": str(attachment_id)}],
            },
        }

    async def _call(
        self,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
    ) -> dict[str, Any]:
        """POST to the OA API with the access token; on -216 renew it and try once more.

        Zalo answers HTTP 200 with a non-zero "error" when it refuses: that is a failure.
        """
        token = await self.tokens.access_token()
        for attempt in (1, 2):
            data = await self._post(path, token, json, form)
            error = error_code(data.get("error"))
            if error == 0:
                return data
            words = str(data.get("message") or "")[:200]
            if error == TOKEN_EXPIRED and attempt == 1:
                token = await self.tokens.refresh(token)
                continue
            if error in UNREACHABLE:
                raise Undeliverable(f"Zalo error {error}: {words}")
            if error == RATE_LIMITED:
                raise RetryLater(60.0)
            raise TransientError(f"Zalo error {error}: {words}")
        raise AssertionError("unreachable")

    async def _post(
        self,
        path: str,
        token: str,
        json: dict[str, Any] | None,
        form: Callable[[], aiohttp.FormData] | None,
    ) -> dict[str, Any]:
        try:
            async with self.http().post(
                self._api + path,
                json=json,
                data=form() if form is not None else None,
                headers={"access_token": token},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                if response.status == 429:
                    raise RetryLater(float(response.headers.get("Retry-After", "5")))
                if response.status >= 500:
                    raise TransientError(f"HTTP {response.status}")
                if response.status != 200:
                    raise PermanentError(f"HTTP {response.status}")
                data = parse_json(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TransientError(type(exc).__name__) from exc
        if not isinstance(data, dict):
            raise TransientError("not a JSON object")
        return data

    async def _alert_admins(self, code: int, words: str) -> None:
        async with self._sessions() as session, session.begin():
            admins = list(
                await session.scalars(select(User).where(User.role == "admin", User.active))
            )
            await tell_staff(session, admins, "alert.zalo_token_revoked", {"error": code})
