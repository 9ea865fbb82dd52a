"""Simulated residents: each makes a whole report with a photo, one step at a time,
waiting for the bot's answer to a step before the next, as a person would; and what
each expects to be told, as the message catalogue's keys."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from PIL import Image

from handlers.i18n import catalogue
from tests.fakes.nominatim import Place
from tests.fakes.zalo_oa import ZaloFollower
from tests.scaleout.platform import Delivery, Platform
from tests.scaleout.standins import Mailboxes, Received, TelegramRecorder, ZaloRecorder

# Phường Bỉm Sơn, Thanh Hóa; residents stand on a grid 200 m apart from there, farther
# apart than the 150 m within which an open case would be offered as the same problem.
ORIGIN = (20.0740, 105.9120)
GRID = 15
STEP_DEGREES = (0.0018, 0.0019)
# How long a resident waits for the bot's answer to one step.
PATIENCE = 90.0


def place(n: int) -> tuple[float, float]:
    row, col = divmod(n, GRID)
    return ORIGIN[0] + row * STEP_DEGREES[0], ORIGIN[1] + col * STEP_DEGREES[1]


def photo(n: int) -> bytes:
    """A small JPEG of the resident's own (its size tells it apart)."""
    buf = io.BytesIO()
    Image.new("RGB", (64 + n % 50, 48 + n // 50), (40, 120 + n % 100, 60)).save(buf, "JPEG")
    return buf.getvalue()


def _key_pattern(key: str) -> str:
    """The Vietnamese message for key, its parameters (one line each) as wildcards;
    "a|b": either message."""
    if "|" in key:
        return "(?:" + "|".join(_key_pattern(k) for k in key.split("|")) + ")"
    parts = re.split(r"\{[a-z_]+\}", catalogue("vi")[key])
    return "[^\n]*".join(re.escape(p) for p in parts)


# The ward question: the nearest wards, or the one the map names for the place first.
WARD_QUESTION = "ward.ask|ward.ask_named"


@cache
def transcript_pattern(keys: tuple[str, ...]) -> re.Pattern[str]:
    """What a chat reads, message after message (joined by a blank line, as the bot joins
    replies of one turn), for these messages in this order; each may carry numbered
    choices on a channel without buttons, and a case page's link."""
    choices = (
        r"(?:\n\n(?:\d+\. [^\n]*\n)+"
        + re.escape(catalogue("vi")["choices.reply_with_number"])
        + ")?"
    )
    # A message that gives a code ends with its case page's link (handlers.case_page).
    page = r"(?:\n\n" + _key_pattern("case_page.link") + ")?"
    return re.compile("\n\n".join(_key_pattern(k) + choices + page for k in keys))


def transcript(received: list[Received[Any]]) -> str:
    return "\n\n".join(r.item.text or "" for r in received)


def reads(keys: list[str], received: list[Received[Any]]) -> bool:
    """Whether the chat's distinct messages are exactly these, in order."""
    return transcript_pattern(tuple(keys)).fullmatch(transcript(received)) is not None


CODE = re.compile(r"Mã theo dõi: (\S+)")


class Stuck(Exception):
    """The resident cannot go on: an update never acknowledged, or no answer."""


@dataclass
class Resident:
    """What every resident keeps: the chat, the updates, what it expects to read."""

    n: int
    chat_id: str
    platform: Platform
    expected: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)
    stuck: str | None = None
    began_at: float | None = None
    done_at: float | None = None
    # Each step: the last message it waits for, and the seconds from posting the update
    # until every message of the step was there.
    steps: list[tuple[str, float]] = field(default_factory=list)

    channel = ""

    @property
    def finished(self) -> bool:
        return self.done_at is not None

    @property
    def took(self) -> float | None:
        if self.began_at is None or self.done_at is None:
            return None
        return self.done_at - self.began_at

    async def run(self) -> None:
        self.began_at = time.monotonic()
        try:
            await self.report()
            self.done_at = time.monotonic()
        except Stuck as exc:
            self.stuck = str(exc)

    async def report(self) -> None:
        raise NotImplementedError

    @property
    def messages(self) -> Mailboxes[Any]:
        raise NotImplementedError

    async def post(self, update: dict[str, Any]) -> Delivery:
        raise NotImplementedError

    async def _step(self, update: dict[str, Any], *expect: str) -> list[Received[Any]]:
        """Post an update (until it is taken), then wait for what the bot says to it."""
        began = time.monotonic()
        delivery = await self.post(update)
        self.deliveries.append(delivery)
        if not delivery.acked:
            raise Stuck(f"update {delivery.key} never answered 200: {delivery.attempts}")
        self.expected.extend(expect)
        keys = list(self.expected)
        try:
            got = await self.messages.wait(self.chat_id, lambda got: reads(keys, got), PATIENCE)
        except TimeoutError as exc:
            raise Stuck(f"no {expect[-1]} within {PATIENCE:g} s ({exc})") from None
        self.steps.append((expect[-1], time.monotonic() - began))
        return got

    def texts(self) -> list[str | None]:
        return [r.item.text for r in self.messages.chats.get(self.chat_id, [])]


class TelegramResident(Resident):
    channel = "telegram"
    # What the summary is: a found address is shown above it.
    summary: tuple[str, ...] = ("summary.text",)

    def __init__(self, n: int, chat_id: int, platform: Platform, api: TelegramRecorder) -> None:
        super().__init__(n, str(chat_id), platform)
        self.api = api
        self.user = {"id": chat_id, "is_bot": False, "first_name": "Lan", "language_code": "vi"}

    def _message(self, **content: Any) -> dict[str, Any]:
        uid = self.platform.next_update_id()
        return {
            "update_id": uid,
            "message": {
                "message_id": uid,
                "date": int(time.time()),
                "chat": {"id": int(self.chat_id), "type": "private", "first_name": "Lan"},
                "from": self.user,
                **content,
            },
        }

    def _press(self, data: str) -> dict[str, Any]:
        uid = self.platform.next_update_id()
        callback = f"cb-{uid}"
        self.callbacks.append(callback)
        return {
            "update_id": uid,
            "callback_query": {
                "id": callback,
                "from": self.user,
                "chat_instance": "ci",
                "data": data,
                "message": {
                    "message_id": 1,
                    "date": int(time.time()),
                    "chat": {"id": int(self.chat_id), "type": "private"},
                    "from": {"id": 777000111, "is_bot": True, "first_name": "Hotline"},
                    "text": "…",
                },
            },
        }

    @property
    def messages(self) -> Mailboxes[Any]:
        return self.api.messages

    async def post(self, update: dict[str, Any]) -> Delivery:
        return await self.platform.telegram(update, self.chat_id)

    async def text(self, text: str, *expect: str) -> list[Received[Any]]:
        entities = []
        if text.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return await self._step(self._message(text=text, entities=entities), *expect)

    async def report(self) -> None:
        image = photo(self.n)
        file_id = self.api.add_file(image)
        size = {"file_id": file_id, "file_unique_id": file_id, "width": 64, "height": 48}
        await self.text("/start", "start.welcome", "consent.text")
        await self._step(self._press("consent|yes"), "consent.thanks", "photos.ask_button")
        await self._step(
            self._message(photo=[{**size, "file_size": len(image)}]), "photos.received_button"
        )
        await self._step(self._press("photos|done"), "location.ask_button")
        got = await self.place_step()
        wards = [b for b in got[-1].item.buttons() if b[1].startswith("ward|")]
        if not wards:
            raise Stuck("the ward question has no buttons")
        await self._step(self._press(wards[0][1]), "ward.chosen", "category.ask")
        await self._step(self._press("category|dumping"), "description.ask")
        await self.text(
            f"Bãi rác tự phát số {self.n} cạnh kênh, bốc mùi nhiều ngày.",
            *self.summary,
            "summary.how_to_send_button",
        )
        await self._step(self._press("summary|anonymous"), "submitted.normal")

    async def place_step(self) -> list[Received[Any]]:
        lat, lon = place(self.n)
        return await self._step(
            self._message(location={"latitude": lat, "longitude": lon}),
            "location.received",
            WARD_QUESTION,
        )


class ZaloResident(Resident):
    """A follower of the Official Account: numbered choices, answered by number."""

    channel = "zalo_oa"

    def __init__(self, n: int, user_id: str, platform: Platform, oa: ZaloRecorder) -> None:
        super().__init__(n, user_id, platform)
        self.oa = oa
        self.follower = ZaloFollower(oa, user_id)

    @property
    def messages(self) -> Mailboxes[Any]:
        return self.oa.messages

    async def post(self, update: dict[str, Any]) -> Delivery:
        return await self.platform.zalo(update, self.chat_id)

    async def say(self, text: str, *expect: str) -> None:
        await self._step(self.follower.event("user_send_text", {"text": text}), *expect)

    async def report(self) -> None:
        lat, lon = place(self.n)
        url = self.oa.host_image(photo(self.n))
        image = {"type": "image", "payload": {"thumbnail": url, "url": url}}
        point = {"coordinates": {"latitude": str(lat), "longitude": str(lon)}}
        await self._step(self.follower.event("follow"), "start.welcome", "consent.text")
        await self.say("1", "consent.thanks", "photos.ask")
        await self._step(
            self.follower.event("user_send_image", {"attachments": [image]}), "photos.received"
        )
        await self.say("Xong", "location.ask")
        await self._step(
            self.follower.event(
                "user_send_location", {"attachments": [{"type": "location", "payload": point}]}
            ),
            "location.received",
            WARD_QUESTION,
        )
        await self.say("1", "ward.chosen", "category.ask")
        await self.say("1", "description.ask")
        await self.say(
            f"Bãi rác tự phát số {self.n} cạnh kênh, bốc mùi nhiều ngày.",
            "summary.text",
            "summary.how_to_send",
        )
        await self.say("1", "submitted.normal")


def address_words(n: int) -> str:
    return f"Bãi rác số {n}, khu phố Bỉm Sơn"


def address_place(n: int) -> Place:
    """What the geocoder knows of the address resident n types: its grid place."""
    lat, lon = place(n)
    return Place(
        names=(f"bai rac so {n} khu pho",),
        lat=lat,
        lon=lon,
        display_name=f"Bãi rác số {n}, Phường Bỉm Sơn, Tỉnh Thanh Hóa, Việt Nam",
        address={"suburb": "Phường Bỉm Sơn", "state": "Tỉnh Thanh Hóa", "country_code": "vn"},
        osm_id=900_000 + n,
    )


class AddressResident(TelegramResident):
    """A Telegram resident who types an address rather than sharing a pin: the bot says
    it is looking, and a job (done by any process, after the turn) finds it."""

    summary = ("summary.address", "summary.text")

    async def place_step(self) -> list[Received[Any]]:
        return await self.text(
            address_words(self.n), "location.searching", "location.found_address", WARD_QUESTION
        )
