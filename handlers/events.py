"""Neutral events and replies shared by the conversation core and the channel adapters.

They live beside the dialogue (not in bot/) so that dependencies point one way:
bot → handlers → backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal[
    "text", "command", "photo", "location", "button", "contact", "geocoded", "other"
]
# What became of a typed address: found by the geocoder, found from a ward's name alone,
# matched nothing, or the geocoder could not answer.
GeocodeOutcome = Literal["nominatim", "ward_name", "not_found", "unavailable"]
MediaError = Literal["not_image", "too_large", "download_failed", "not_taken"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a channel can show; the dialogue picks its prompts from these."""

    inline_buttons: bool = True
    request_location: bool = False
    request_contact: bool = False
    max_button_label: int = 64


@dataclass(frozen=True, slots=True)
class MediaRef:
    """An image the adapter fetched and stored before the update reached the dialogue."""

    sha256: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    # From the original's EXIF, before it was stripped: sealed evidence.
    gps: tuple[float, float] | None = None
    taken_at: str | None = None


@dataclass(frozen=True, slots=True)
class Incoming:
    """One thing a resident did in a chat, whatever the platform."""

    channel: str
    chat_id: str
    update_id: str
    kind: EventKind
    text: str | None = None
    command: str | None = None
    args: str = ""
    location: tuple[float, float] | None = None
    button: str | None = None
    callback_id: str | None = None
    media: MediaRef | None = None
    media_error: MediaError | None = None
    media_group: str | None = None
    phone: str | None = None
    language: str | None = None
    # A staff group rather than a resident's private chat; who in it did this.
    group: bool = False
    sender_id: str | None = None
    # A typed address looked up after its update (kind "geocoded"): the text is the
    # address as typed, location and address what was found.
    address: str | None = None
    geocoded: GeocodeOutcome | None = None


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    data: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A message to show. `request` asks the platform for a location or contact share."""

    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    request: Literal["location", "contact"] | None = None
    request_label: str | None = None
    remove_keyboard: bool = False
    photo_sha256: str | None = None
    # Send the photo's 320 px thumbnail rather than the photo.
    thumbnail: bool = False

    def to_payload(self) -> dict[str, Any]:
        return {
            "type": "reply",
            "text": self.text,
            "buttons": [[{"label": b.label, "data": b.data} for b in row] for row in self.buttons],
            "request": self.request,
            "request_label": self.request_label,
            "remove_keyboard": self.remove_keyboard,
            "photo_sha256": self.photo_sha256,
            "thumbnail": self.thumbnail,
        }


@dataclass(frozen=True, slots=True)
class Ack:
    """Answers a button press so the platform stops its spinner."""

    callback_id: str
    text: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"type": "ack", "callback_id": self.callback_id, "text": self.text}


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace the text (or photo caption) of a message sent before, and drop its buttons."""

    message_id: str
    text: str
    caption: bool = False


Outgoing = Reply | Ack | Edit

# A payload's mark: once the message has gone (or failed for good), the outbox keeps
# neither its text nor its chat, nor the chat's updates up to the one it names (or up to
# the moment, {"update": id or None, "at": ISO time}): the last messages to a chat whose
# identity is erased.
ERASE_AFTER_SEND = "erase_after_send"


def outgoing_from_payload(payload: dict[str, Any]) -> Outgoing:
    """Rebuild a Reply or Ack stored in the outbox."""
    data = dict(payload)
    data.pop(ERASE_AFTER_SEND, None)
    kind = data.pop("type")
    if kind == "ack":
        return Ack(**data)
    buttons = tuple(
        tuple(Button(label=b["label"], data=b["data"]) for b in row) for row in data.pop("buttons")
    )
    return Reply(buttons=buttons, **data)


@dataclass(slots=True)
class ConversationState:
    """Where a chat stands in the dialogue, loaded from and saved to the database."""

    state: str
    language: str
    data: dict[str, Any] = field(default_factory=dict)
    reporter_id: int | None = None
