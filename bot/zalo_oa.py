"""Zalo Official Account (OA API v3): webhook signatures and events as neutral Incoming.

Zalo signs each webhook with X-ZEvent-Signature = "mac=" + hex(sha256(app_id + raw body
+ timestamp + OA secret key)), where the timestamp is the event's own "timestamp" field.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.parsing import coordinates, text_or_command
from handlers.events import Incoming

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


def verify(headers: Mapping[str, str], body: bytes, app_id: str, secret_key: str) -> dict[str, Any]:
    """The event, once its signature checks out (compared in constant time).

    Raises BadSignature for a missing or wrong signature and ValueError for a body that
    is not an event.
    """
    given = headers.get(SIGNATURE_HEADER, "").strip()
    if not given:
        raise BadSignature("no signature")
    given = given.removeprefix("mac=")
    event = json.loads(body)
    if not isinstance(event, dict):
        raise ValueError("not an event")
    want = expected_signature(app_id, body, str(event.get("timestamp", "")), secret_key)
    if not hmac.compare_digest(given.lower().encode(), want.encode()):
        raise BadSignature("signature mismatch")
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


def read_event(event: Mapping[str, Any]) -> OAEvent | None:
    """The parts of an OA event the dialogue takes; None for other events."""
    name = str(event.get("event_name", ""))
    if name not in EVENTS:
        return None
    if name == "follow":
        follower = event.get("follower") or {}
        user = str(follower.get("id") or event.get("user_id_by_app") or "")
        return OAEvent(name, user, f"follow:{user}:{event.get('timestamp', '')}")
    message = event.get("message") or {}
    user = str((event.get("sender") or {}).get("id", ""))
    msg_id = str(message.get("msg_id", ""))
    if not user or not msg_id:
        return None
    text = message.get("text")
    image_url = None
    location = None
    for attachment in message.get("attachments") or ():
        payload = attachment.get("payload") or {}
        if attachment.get("type") == "image" and image_url is None:
            image_url = str(payload.get("url") or "") or None
        elif attachment.get("type") == "location":
            location = coordinates(payload)
    return OAEvent(
        name,
        user,
        msg_id,
        text=str(text) if isinstance(text, str) and text else None,
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
