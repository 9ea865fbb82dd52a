"""Zalo Bot Platform (Telegram-like, `/bot{token}/{method}`): updates as neutral Incoming.

An update is {"event_name": …, "message": {…}}, wrapped as {"ok": true, "result": …} by
getUpdates and by the webhook. Text, images (photo_url) and unsupported messages arrive;
a location has no event of its own, so one that ever arrives is read defensively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.parsing import coordinates, text_or_command
from handlers.events import Incoming

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


def read_update(update: Mapping[str, Any]) -> BotUpdate | None:
    """The parts of an update the dialogue takes; None when it has no message."""
    inner = update.get("result", update)
    if not isinstance(inner, Mapping):
        return None
    message = inner.get("message")
    if not isinstance(message, Mapping):
        return None
    chat = message.get("chat") or message.get("from") or {}
    chat_id, message_id = str(chat.get("id", "")), str(message.get("message_id", ""))
    if not chat_id or not message_id:
        return None
    text = message.get("text") if isinstance(message.get("text"), str) else None
    photo = message.get("photo_url") or message.get("photo")
    return BotUpdate(
        event=str(inner.get("event_name", "")),
        chat_id=chat_id,
        message_id=message_id,
        text=text or None,
        photo_url=photo if isinstance(photo, str) and photo else None,
        location=coordinates(message.get("location")),
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
