"""The report flow: consent → photos → place → ward → category → words → confirm."""

from __future__ import annotations

from backend.services.categories import CATEGORIES
from backend.services.intake import ReportDraft, submit_report
from backend.services.reporters import (
    find_or_create_reporter,
    has_consent,
    normalise_phone,
    record_consent,
)
from backend.text import parse_point
from backend.timeutil import format_local
from handlers.events import Button, Incoming
from handlers.turn import Turn

MAX_PHOTOS = 5
MAX_DESCRIPTION = 2000
MAX_POLLUTER = 200
NATURES = ("one_off", "recurring")
EDITABLE = ("photos", "location", "category", "description", "polluter", "nature", "contact")


def category_name(turn: Turn, code: str) -> str:
    for c in CATEGORIES:
        if c.code == code:
            return c.name_en if turn.conv.language == "en" else c.name_vi
    return code


class Step:
    """One step of the flow. A handler returns False when the input does not fit."""

    name = ""

    def options(self, turn: Turn) -> list[Button]:
        return []

    def prompt(self, turn: Turn) -> None:
        raise NotImplementedError

    async def choose(self, turn: Turn, value: str) -> bool:
        return False

    async def text(self, turn: Turn, text: str) -> bool:
        return False

    async def photo(self, turn: Turn, event: Incoming) -> bool:
        return False

    async def location(self, turn: Turn, lat: float, lon: float, source: str) -> bool:
        return False

    async def contact(self, turn: Turn, phone: str) -> bool:
        return False

    def button(self, turn: Turn, value: str, key: str, **params: object) -> Button:
        return Button(turn.t(key, **params), f"{self.name}|{value}")


async def advance(turn: Turn, next_state: str) -> None:
    """Go to next_state, or back to the summary when the reporter was editing one field."""
    if turn.data.get("editing"):
        turn.data.pop("editing")
        next_state = "summary"
    turn.goto(next_state)
    STEPS[next_state].prompt(turn)


async def begin(turn: Turn) -> None:
    """/start: consent first unless given for the current text version, then photos."""
    returning = turn.conv.reporter_id is not None
    if turn.conv.reporter_id is None:
        reporter_id, created = await find_or_create_reporter(
            turn.session, turn.channel, turn.chat_id
        )
        returning = not created
        turn.conv.reporter_id = reporter_id
    turn.reset("consent")
    turn.say("start.welcome", remove_keyboard=True)
    if returning and await has_consent(turn.session, turn.conv.reporter_id):
        turn.goto("photos")
    STEPS[turn.state].prompt(turn)


class Consent(Step):
    name = "consent"

    def options(self, turn: Turn) -> list[Button]:
        return [self.button(turn, "yes", "consent.yes"), self.button(turn, "no", "consent.no")]

    def prompt(self, turn: Turn) -> None:
        turn.say("consent.text", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "no":
            turn.reset()
            turn.say("consent.declined")
            return True
        if turn.conv.reporter_id is None:
            return False
        await record_consent(turn.session, turn.conv.reporter_id, turn.conv.language)
        turn.say("consent.thanks")
        await advance(turn, "photos")
        return True


class Photos(Step):
    name = "photos"

    def options(self, turn: Turn) -> list[Button]:
        if turn.data.get("photos"):
            return [self.button(turn, "done", "photos.done")]
        return [self.button(turn, "skip", "photos.skip")]

    def prompt(self, turn: Turn) -> None:
        turn.data["photos"] = []
        turn.data["media_groups"] = []
        turn.data.pop("photo_gps", None)
        turn.say("photos.ask", buttons=self.options(turn), max=MAX_PHOTOS)

    async def photo(self, turn: Turn, event: Incoming) -> bool:
        if event.media_error is not None:
            turn.say(f"photos.error.{event.media_error}")
            return True
        if event.media is None:
            return False
        photos: list[dict[str, object]] = turn.data.setdefault("photos", [])
        groups: list[str] = turn.data.setdefault("media_groups", [])
        # An album arrives as one update per photo: answer its first photo only.
        quiet = event.media_group is not None and event.media_group in groups
        if event.media_group is not None and not quiet:
            groups.append(event.media_group)
        if len(photos) >= MAX_PHOTOS:
            if not quiet:
                turn.say("photos.full", max=MAX_PHOTOS)
            return True
        if all(p["sha256"] != event.media.sha256 for p in photos):
            m = event.media
            photos.append(
                {
                    "sha256": m.sha256,
                    "content_type": m.content_type,
                    "width": m.width,
                    "height": m.height,
                    "size_bytes": m.size_bytes,
                    "gps": list(m.gps) if m.gps else None,
                    "taken_at": m.taken_at,
                }
            )
            if m.gps and "lat" not in turn.data and "photo_gps" not in turn.data:
                # A photo sent as a file kept its position: offer it as the place.
                turn.data["photo_gps"] = list(m.gps)
        if len(photos) >= MAX_PHOTOS:
            if not quiet:
                turn.say("photos.full", max=MAX_PHOTOS)
            await advance(turn, "location")
        elif not quiet:
            turn.say("photos.received", buttons=self.options(turn), max=MAX_PHOTOS)
        return True

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "skip":
            turn.say("photos.skipped")
        await advance(turn, "location")
        return True


class Location(Step):
    name = "location"

    def options(self, turn: Turn) -> list[Button]:
        if turn.data.get("photo_gps"):
            return [self.button(turn, "photo", "location.use_photo")]
        return []

    def prompt(self, turn: Turn) -> None:
        if turn.caps.request_location:
            turn.say(
                "location.ask_button",
                request="location",
                request_label=turn.t("location.button"),
                buttons=self.options(turn),
            )
        else:
            turn.say("location.ask", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        gps = turn.data.get("photo_gps")
        if value != "photo" or not gps:
            return False
        return await self.location(turn, float(gps[0]), float(gps[1]), "photo_exif")

    async def text(self, turn: Turn, text: str) -> bool:
        point = parse_point(text)
        if point is None:
            turn.say("location.not_understood")
            self.prompt(turn)
            return True
        return await self.location(turn, point[0], point[1], "typed")

    async def location(self, turn: Turn, lat: float, lon: float, source: str) -> bool:
        wards = turn.services.wards
        if not wards.covers(lat, lon):
            turn.say("location.outside_vietnam")
            self.prompt(turn)
            return True
        nearest = wards.nearest(lat, lon, k=3)
        turn.goto(
            "location",
            lat=lat,
            lon=lon,
            location_source=source,
            ward_candidates=[n.ward.code for n in nearest],
        )
        turn.say("location.received", lat=f"{lat:.5f}", lon=f"{lon:.5f}", remove_keyboard=True)
        # Choosing the ward is part of giving the place, even when editing it.
        turn.goto("ward")
        STEPS["ward"].prompt(turn)
        return True


class WardChoice(Step):
    name = "ward"

    def options(self, turn: Turn) -> list[Button]:
        wards = turn.services.wards
        buttons = []
        for code in turn.data.get("ward_candidates", []):
            info = wards.get(code)
            if info is not None:
                buttons.append(Button(info.label, f"{self.name}|{code}"))
        return buttons

    def prompt(self, turn: Turn) -> None:
        turn.say("ward.ask", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        info = turn.services.wards.get(value)
        if info is None:
            return False
        turn.data["ward_code"] = value
        turn.say("ward.chosen", ward=info.label)
        await advance(turn, "category")
        return True

    async def text(self, turn: Turn, text: str) -> bool:
        near = (turn.data["lat"], turn.data["lon"])
        found = turn.services.wards.search(text, near=near)
        if not found:
            turn.say("ward.not_found", text=text[:100])
            self.prompt(turn)
            return True
        turn.data["ward_candidates"] = [w.code for w in found]
        if len(found) == 1:
            return await self.choose(turn, found[0].code)
        self.prompt(turn)
        return True


class CategoryChoice(Step):
    name = "category"

    def options(self, turn: Turn) -> list[Button]:
        return [Button(category_name(turn, c.code), f"{self.name}|{c.code}") for c in CATEGORIES]

    def prompt(self, turn: Turn) -> None:
        turn.say("category.ask", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        turn.data["category"] = value
        await advance(turn, "description")
        return True


class Description(Step):
    name = "description"

    def prompt(self, turn: Turn) -> None:
        turn.say("description.ask", max=MAX_DESCRIPTION)

    async def text(self, turn: Turn, text: str) -> bool:
        text = text.strip()
        if not text:
            turn.say("description.empty")
        elif len(text) > MAX_DESCRIPTION:
            turn.say("description.too_long", max=MAX_DESCRIPTION, length=len(text))
        else:
            turn.data["description"] = text
            await advance(turn, "polluter")
        return True


class Polluter(Step):
    name = "polluter"

    def options(self, turn: Turn) -> list[Button]:
        return [self.button(turn, "skip", "polluter.skip")]

    def prompt(self, turn: Turn) -> None:
        turn.say("polluter.ask", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        turn.data["polluter"] = None
        await advance(turn, "nature")
        return True

    async def text(self, turn: Turn, text: str) -> bool:
        text = text.strip()
        if not text or len(text) > MAX_POLLUTER:
            turn.say("polluter.invalid", max=MAX_POLLUTER)
            return True
        turn.data["polluter"] = text
        await advance(turn, "nature")
        return True


class Nature(Step):
    name = "nature"

    def options(self, turn: Turn) -> list[Button]:
        return [self.button(turn, n, f"nature.{n}") for n in NATURES]

    def prompt(self, turn: Turn) -> None:
        turn.say("nature.ask", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        turn.data["nature"] = value
        await advance(turn, "contact")
        return True


class Contact(Step):
    name = "contact"

    def options(self, turn: Turn) -> list[Button]:
        return [self.button(turn, "anonymous", "contact.anonymous")]

    def prompt(self, turn: Turn) -> None:
        if turn.caps.request_contact:
            turn.say(
                "contact.ask_button",
                buttons=self.options(turn),
                request="contact",
                request_label=turn.t("contact.button"),
            )
        else:
            turn.say("contact.ask", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        turn.data["phone"] = None
        turn.say("contact.anonymous_ok", remove_keyboard=True)
        await advance(turn, "summary")
        return True

    async def text(self, turn: Turn, text: str) -> bool:
        return await self.contact(turn, text)

    async def contact(self, turn: Turn, phone: str) -> bool:
        normalised = normalise_phone(phone)
        if normalised is None:
            turn.say("contact.invalid")
            self.prompt(turn)
            return True
        turn.data["phone"] = normalised
        turn.say("contact.saved", phone=normalised, remove_keyboard=True)
        await advance(turn, "summary")
        return True


class Summary(Step):
    name = "summary"

    def options(self, turn: Turn) -> list[Button]:
        return [
            self.button(turn, "confirm", "summary.confirm"),
            self.button(turn, "edit", "summary.edit"),
            self.button(turn, "cancel", "summary.cancel"),
        ]

    def prompt(self, turn: Turn) -> None:
        d = turn.data
        ward = turn.services.wards.get(d["ward_code"])
        turn.say(
            "summary.text",
            buttons=self.options(turn),
            photos=len(d.get("photos", [])),
            lat=f"{d['lat']:.5f}",
            lon=f"{d['lon']:.5f}",
            ward=ward.label if ward else d["ward_code"],
            category=category_name(turn, d["category"]),
            description=d["description"],
            polluter=d.get("polluter") or turn.t("summary.none"),
            nature=turn.t(f"nature.{d['nature']}"),
            contact=d.get("phone") or turn.t("contact.anonymous"),
        )

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "cancel":
            turn.reset()
            turn.say("summary.cancelled")
        elif value == "edit":
            turn.goto("edit")
            STEPS["edit"].prompt(turn)
        else:
            await self._submit(turn)
        return True

    async def _submit(self, turn: Turn) -> None:
        d = turn.data
        result = await submit_report(
            turn.session,
            ReportDraft(
                category_code=d["category"],
                ward_code=d["ward_code"],
                lat=d["lat"],
                lon=d["lon"],
                location_source=d["location_source"],
                description=d["description"],
                nature=d["nature"],
                polluter=d.get("polluter"),
                phone=d.get("phone"),
                photos=list(d.get("photos", [])),
            ),
            reporter_id=turn.conv.reporter_id,
            channel=turn.channel,
            now=turn.services.now(),
            policies=turn.services.policies,
        )
        turn.reset()
        turn.say(
            f"submitted.{result.urgency}",
            code=result.code,
            ward=f"{result.ward_name}, {result.province_name}",
            unit=result.unit_name,
            due=format_local(result.due_at),
        )


class Edit(Step):
    name = "edit"

    def options(self, turn: Turn) -> list[Button]:
        buttons = [self.button(turn, f, f"edit.{f}") for f in EDITABLE]
        return [*buttons, self.button(turn, "back", "edit.back")]

    def prompt(self, turn: Turn) -> None:
        turn.say("edit.ask", buttons=self.options(turn), columns=2)

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "back":
            turn.goto("summary")
        else:
            turn.goto(value, editing=True)
        STEPS[turn.state].prompt(turn)
        return True


class Idle(Step):
    name = "idle"

    def prompt(self, turn: Turn) -> None:
        turn.say("idle.help")


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Idle(),
        Consent(),
        Photos(),
        Location(),
        WardChoice(),
        CategoryChoice(),
        Description(),
        Polluter(),
        Nature(),
        Contact(),
        Summary(),
        Edit(),
    )
}
