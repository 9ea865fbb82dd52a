"""The platforms' updates as the adapters read them: pydantic models that refuse what does
not fit (a wrong type, a number that is not finite, an id or position out of range, a
string too long or with a NUL) and ignore the fields the platforms add that we do not read.

Webhooks, polling and the inbox's stored events all read through these models, so nothing
malformed reaches the dialogue. A refusal is a Malformed whose text names the kind of
problem and where, never a value: it may be logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backend.text import parse_point


class Malformed(ValueError):
    """An update that does not fit its schema; the text names the problem, not the data."""


class Model(BaseModel):
    """Strict (no "12" for 12, no 1.0 for an id), tolerant of extra fields, read-only."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


M = TypeVar("M", bound=Model)


def read(model: type[M], data: Any) -> M:
    """data as model, or Malformed naming the first problem (its place and kind)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Without the ValidationError attached: its text quotes the input.
        raise Malformed(problem(exc)) from None


def problem(exc: ValidationError) -> str:
    """'message.chat: model_type (+2 more)': where and what, without the values."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    # Field names and list indexes only: no model here reads a mapping's keys as data.
    place = ".".join(str(part) for part in first["loc"]) or "update"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{place}: {first['type']}{more}"


# --- the values ------------------------------------------------------------------------


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise PydanticCustomError("nul_character", "a NUL character")
    return text


def _int_as_text(value: Any) -> Any:
    # Zalo's ids are strings; an integer one is taken as its digits (never a bool).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


_NUMBER_TEXT = re.compile(r"\s{0,4}-?[0-9]{1,3}(?:\.[0-9]{1,17})?\s{0,4}")


def _number_text(value: Any) -> Any:
    # Zalo sends coordinates as decimal text ("20.074"); nothing else is read as a number.
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return float(value)
    return value


def _point_shapes(value: Any) -> Any:
    """A position as {latitude, longitude}, under "coordinates", or as 'lat, lon' text."""
    if isinstance(value, str) and len(value) <= 64:
        pair = parse_point(value)
        return {"latitude": pair[0], "longitude": pair[1]} if pair is not None else value
    if isinstance(value, Mapping) and "coordinates" in value:
        return value["coordinates"]
    return value


# Telegram's ids have at most 52 significant bits.
TelegramId = Annotated[int, Field(ge=-(2**52), le=2**52)]
UpdateId = Annotated[int, Field(ge=0, le=2**52)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
# Ids stored as chat ids and event keys (64 characters at most in the database).
ZaloId = Annotated[
    str,
    BeforeValidator(_int_as_text),
    StringConstraints(pattern=r"^[0-9A-Za-z_.:-]{1,64}$"),
]
# Milliseconds since 1970, as text or as a number.
Timestamp = Annotated[
    str, BeforeValidator(_int_as_text), StringConstraints(pattern=r"^[0-9]{1,20}$")
]
Url = Annotated[
    str, StringConstraints(max_length=2048, pattern=r"^https?://[!-~]+$"), AfterValidator(_no_nul)
]
# Strings (lone surrogates never pass pydantic's str): short ones (names, codes, phone
# numbers, our callback data), language codes, file ids, what people type.
ShortText = Annotated[str, StringConstraints(max_length=64), AfterValidator(_no_nul)]
LanguageCode = Annotated[str, StringConstraints(max_length=35), AfterValidator(_no_nul)]
FileId = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_no_nul)]
# Telegram caps a message at 4096 characters. Zalo documents no cap: what is longer than
# any chat message is refused (the dialogue itself takes 2000 for a description).
TelegramText = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_no_nul)]
ZaloText = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_no_nul)]


class Point(Model):
    """A position as Telegram sends it: two numbers."""

    latitude: Latitude
    longitude: Longitude

    @property
    def pair(self) -> tuple[float, float]:
        return self.latitude, self.longitude


class ZaloPoint(Point):
    """A position as Zalo sends it: numbers, or decimal text."""

    latitude: Annotated[Latitude, BeforeValidator(_number_text)]
    longitude: Annotated[Longitude, BeforeValidator(_number_text)]


# --- Telegram (Bot API) ------------------------------------------------------------------


class TelegramUser(Model):
    id: TelegramId
    language_code: LanguageCode | None = None


class TelegramChat(Model):
    id: TelegramId
    type: ShortText


class TelegramFile(Model):
    """A photo size or a document: what getFile needs, and the size announced."""

    file_id: FileId
    file_size: Annotated[int, Field(ge=0, le=2**52)] | None = None


class TelegramContact(Model):
    phone_number: ShortText
    # The Telegram user the contact is, if any: the sender's own for a shared phone.
    user_id: TelegramId | None = None


class TelegramVenue(Model):
    location: Point


class TelegramMessage(Model):
    chat: TelegramChat
    sender: TelegramUser | None = Field(None, alias="from")
    text: TelegramText | None = None
    location: Point | None = None
    venue: TelegramVenue | None = None
    contact: TelegramContact | None = None
    photo: Annotated[list[TelegramFile], Field(max_length=32)] | None = None
    document: TelegramFile | None = None
    media_group_id: ShortText | None = None


class TelegramMessageRef(Model):
    """The message a button was on: only its chat is read (it may be inaccessible)."""

    chat: TelegramChat


class TelegramCallback(Model):
    id: Annotated[ShortText, StringConstraints(min_length=1)]
    sender: TelegramUser = Field(alias="from")
    message: TelegramMessageRef | None = None
    # Our own callback_data: 64 bytes at most.
    data: ShortText | None = None


class TelegramUpdate(Model):
    update_id: UpdateId
    message: TelegramMessage | None = None
    callback_query: TelegramCallback | None = None


# --- Zalo Official Account ---------------------------------------------------------------


class ZaloUser(Model):
    id: ZaloId


class OAPayload(Model):
    """An attachment's payload: an image's or a file's url, or a location's coordinates."""

    url: Url | None = None
    coordinates: ZaloPoint | None = None


class OAAttachment(Model):
    type: ShortText
    payload: OAPayload | None = None


class OAMessage(Model):
    msg_id: ZaloId
    text: ZaloText | None = None
    attachments: Annotated[list[OAAttachment], Field(max_length=20)] | None = None


class OAEnvelope(Model):
    """What every OA event has: which event, and when (the signature covers the time)."""

    event_name: ShortText
    timestamp: Timestamp


class OAFollow(OAEnvelope):
    follower: ZaloUser | None = None
    user_id_by_app: ZaloId | None = None

    @model_validator(mode="after")
    def _someone(self) -> OAFollow:
        if self.follower is None and self.user_id_by_app is None:
            raise PydanticCustomError("no_follower", "neither follower nor user_id_by_app")
        return self

    @property
    def user_id(self) -> str:
        return self.follower.id if self.follower is not None else str(self.user_id_by_app)


class OAMessageEvent(OAEnvelope):
    sender: ZaloUser
    message: OAMessage


# --- Zalo Bot Platform -------------------------------------------------------------------


class ZaloBotMessage(Model):
    message_id: ZaloId
    chat: ZaloUser | None = None
    sender: ZaloUser | None = Field(None, alias="from")
    text: ZaloText | None = None
    photo_url: Url | None = None
    photo: Url | None = None
    # No event of its own carries a location: one that ever arrives is read in any of
    # the shapes Zalo uses elsewhere.
    location: Annotated[ZaloPoint | None, BeforeValidator(_point_shapes)] = None

    @model_validator(mode="after")
    def _somewhere(self) -> ZaloBotMessage:
        if self.chat is None and self.sender is None:
            raise PydanticCustomError("no_chat", "neither chat nor from")
        return self

    @property
    def chat_id(self) -> str:
        chat = self.chat if self.chat is not None else self.sender
        if chat is None:  # the validator above refuses such a message
            raise Malformed("message: no_chat")
        return chat.id


class ZaloBotUpdate(Model):
    event_name: ShortText = ""
    message: ZaloBotMessage | None = None
