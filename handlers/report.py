"""The report flow: consent → photos → place → ward → category → words → confirm."""

from __future__ import annotations

from typing import Any

from backend.services.categories import CATEGORIES
from backend.services.duplicates import join_case, nearby_cases
from backend.services.geocoding import GeocoderDown, find_place
from backend.services.intake import ReportDraft, submit_report
from backend.services.photos import ACCEPTED_NAMES
from backend.services.reporters import (
    find_or_create_reporter,
    has_consent,
    has_open_reports,
    is_erased,
    normalise_phone,
    record_consent,
)
from backend.services.workflow import WorkflowError
from backend.text import parse_point, search_key
from backend.timeutil import format_local, local
from handlers.events import Button, GeocodeOutcome, Incoming, MediaRef
from handlers.turn import Job, Services, Turn

MAX_PHOTOS = 5
MAX_DESCRIPTION = 2000
# Without a photo, a description shorter than this says too little to verify.
MIN_DESCRIPTION = 10
MAX_POLLUTER = 200
MAX_ADDRESS = 300
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

    async def location(
        self, turn: Turn, lat: float, lon: float, source: str, address: str | None = None
    ) -> bool:
        return False

    async def geocoded(self, turn: Turn, event: Incoming) -> bool:
        # A look-up that finished after the chat moved on: nothing to say.
        return True

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
    if turn.conv.reporter_id is not None and await is_erased(turn.session, turn.conv.reporter_id):
        # Erased (by the retention pass, or on a request by phone) while this chat went
        # on: a new reporter, who is asked for consent afresh.
        turn.conv.reporter_id = None
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
        turn.say("consent.text", buttons=self.options(turn), months=turn.services.identity_months)

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "no":
            turn.reset()
            turn.say("consent.declined")
            return True
        if turn.conv.reporter_id is None:
            return False
        await record_consent(turn.session, turn.conv.reporter_id, turn.conv.language)
        turn.say("consent.thanks")
        early = turn.data.pop("early_photos", [])
        if not early:
            await advance(turn, "photos")
            return True
        # The photos sent before consenting are the report's first.
        turn.goto("photos")
        turn.data.update(photos=early, media_groups=[])
        for photo in early:
            _offer_its_place(turn, photo)
        turn.say("photos.received", buttons=STEPS["photos"].options(turn), max=MAX_PHOTOS)
        return True

    async def photo(self, turn: Turn, event: Incoming) -> bool:
        """A photo before consenting is kept for the report (until they decline)."""
        if event.media is None:
            return False
        early: list[dict[str, object]] = turn.data.setdefault("early_photos", [])
        if len(early) < MAX_PHOTOS and all(p["sha256"] != event.media.sha256 for p in early):
            early.append(_photo(event.media))
        turn.say("consent.photo_kept", buttons=self.options(turn))
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
            turn.say(f"photos.error.{event.media_error}", formats=ACCEPTED_NAMES)
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
            photos.append(_photo(event.media))
            _offer_its_place(turn, photos[-1])
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
        if point is not None:
            return await self.location(turn, point[0], point[1], "typed")
        query = " ".join(text.split())
        if len(search_key(query)) < 3 or len(query) > MAX_ADDRESS:
            turn.say("location.not_understood")
            self.prompt(turn)
            return True
        # An address: looked up after this update is committed (the geocoder may take
        # seconds), or at once when only the ward names can answer.
        turn.data["geocoding"] = query
        geocoder = turn.services.geocoder
        if geocoder is not None and geocoder.online:
            turn.say("location.searching", address=query)
            turn.jobs.append(Job(GEOCODE, {"query": query}))
            return True
        update_id = f"{turn.update_id}:{GEOCODE}"
        found = await look_up(turn.services, turn.channel, turn.chat_id, update_id, query)
        return await self.geocoded(turn, found)

    async def geocoded(self, turn: Turn, event: Incoming) -> bool:
        if event.text is None or turn.data.get("geocoding") != event.text:
            return True  # an answer to an address typed before this one
        turn.data.pop("geocoding")
        if event.geocoded == "unavailable":
            turn.say("location.geocoder_down")
        elif event.location is None:
            turn.say("location.address_not_found", address=event.text[:100])
        else:
            source = "address" if event.geocoded == "nominatim" else "ward_name"
            return await self.location(turn, *event.location, source, event.address)
        self.prompt(turn)
        return True

    async def location(
        self, turn: Turn, lat: float, lon: float, source: str, address: str | None = None
    ) -> bool:
        place = turn.services.wards.place(lat, lon)
        if not place.in_vietnam:
            turn.say("location.outside_vietnam")
            self.prompt(turn)
            return True
        if not place.served:
            hotlines = turn.services.out_of_area_hotlines or turn.t("location.hotline_default")
            nearest = place.nearest
            turn.say(
                "location.out_of_area",
                province=nearest.province_name if nearest else "",
                hotlines=hotlines,
            )
            self.prompt(turn)
            return True
        turn.goto(
            "location",
            lat=lat,
            lon=lon,
            location_source=source,
            address=address,
            ward_candidates=[n.ward.code for n in place.nearby],
        )
        lat_text, lon_text = f"{lat:.5f}", f"{lon:.5f}"
        if address:
            turn.say(
                "location.found_address",
                address=address,
                lat=lat_text,
                lon=lon_text,
                remove_keyboard=True,
            )
        else:
            turn.say("location.received", lat=lat_text, lon=lon_text, remove_keyboard=True)
        if place.ward is not None:
            # The ward's boundary holds the point: no need to ask.
            turn.data["ward_code"] = place.ward.code
            turn.say("ward.located", ward=place.ward.label)
            await advance(turn, "category")
            return True
        # Choosing the ward is part of giving the place, even when editing it.
        turn.goto("ward")
        STEPS["ward"].prompt(turn)
        return True


GEOCODE = "geocoded"


async def look_up(
    services: Services, channel: str, chat_id: str, update_id: str, query: str
) -> Incoming:
    """The geocoder's answer for an address, as an event for the chat that typed it."""
    outcome: GeocodeOutcome
    try:
        found = await find_place(services.geocoder, services.wards, query)
    except GeocoderDown:
        found, outcome = None, "unavailable"
    else:
        outcome = found.source if found is not None else "not_found"
    return Incoming(
        channel=channel,
        chat_id=chat_id,
        update_id=update_id,
        kind="geocoded",
        text=query,
        location=(found.lat, found.lon) if found else None,
        address=found.address if found else None,
        geocoded=outcome,
    )


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
        turn.data.pop("joins", None)
        if not turn.data.get("editing") and await self._suggest_cases(turn, value):
            return True
        await advance(turn, "description")
        return True

    async def _suggest_cases(self, turn: Turn, category: str) -> bool:
        """Show open cases of the category nearby, if any, and ask whether this is one."""
        d = turn.data
        near = await nearby_cases(
            turn.session,
            category,
            d["lat"],
            d["lon"],
            turn.services.now(),
            turn.services.duplicates,
        )
        if not near:
            return False
        d["cases"] = []
        for n, case in enumerate(near, 1):
            entry: dict[str, Any] = {
                "code": case.code,
                "n": n,
                "distance": round(case.distance_m),
                "state": case.state,
                "nature": case.nature,
                "date": local(case.created_at).strftime("%d/%m/%Y"),
            }
            d["cases"].append(entry)
            if case.photo_sha256 is not None:
                turn.say(
                    "duplicate.case",
                    photo_sha256=case.photo_sha256,
                    thumbnail=True,
                    status=turn.t(f"ticket_state.{case.state}"),
                    **entry,
                )
        turn.goto("duplicate")
        STEPS["duplicate"].prompt(turn)
        return True


class Duplicate(Step):
    name = "duplicate"

    def options(self, turn: Turn) -> list[Button]:
        same = [
            self.button(turn, c["code"], "duplicate.same", n=c["n"])
            for c in turn.data.get("cases", [])
        ]
        return [*same, self.button(turn, "new", "duplicate.different")]

    def prompt(self, turn: Turn) -> None:
        lines = "\n".join(
            turn.t("duplicate.line", status=turn.t(f"ticket_state.{c['state']}"), **c)
            for c in turn.data.get("cases", [])
        )
        turn.say("duplicate.ask", buttons=self.options(turn), cases=lines)

    async def choose(self, turn: Turn, value: str) -> bool:
        case = next((c for c in turn.data.get("cases", []) if c["code"] == value), None)
        if case is not None:
            turn.data.update(joins=value, nature=case["nature"], polluter=None)
            turn.say("duplicate.joining", code=value)
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
        elif len(text) < MIN_DESCRIPTION and not turn.data.get("photos"):
            # Without a photo, a few letters cannot be verified.
            turn.say("description.too_short", min=MIN_DESCRIPTION, length=len(text))
        elif len(text) > MAX_DESCRIPTION:
            turn.say("description.too_long", max=MAX_DESCRIPTION, length=len(text))
        else:
            turn.data["description"] = text
            # A report joining a case takes its polluter and nature from the case.
            await advance(turn, "contact" if turn.data.get("joins") else "polluter")
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
        if d.get("joins"):
            turn.say("summary.joins", code=d["joins"])
        if d.get("address"):
            turn.say("summary.address", address=d["address"])
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
        now = turn.services.now()
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
                address=d.get("address"),
            ),
            reporter_id=turn.conv.reporter_id,
            channel=turn.channel,
            now=now,
            policies=turn.services.policies,
        )
        joins = d.get("joins")
        turn.reset()
        if joins:
            try:
                await join_case(turn.session, result.ticket_id, joins, turn.services.policies, now)
            except WorkflowError:
                # The case was closed or merged meanwhile: this stays a report of its own.
                turn.say("submitted.case_gone", case=joins)
            else:
                turn.say("submitted.joined", code=result.code, case=joins)
                return
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

    async def photo(self, turn: Turn, event: Incoming) -> bool:
        """A photo before anything else, as residents often begin: the report starts,
        and the photo waits in it for their consent (dropped if they decline)."""
        if event.media is None:
            return False
        reporter_id = turn.conv.reporter_id
        if reporter_id is not None and await has_open_reports(turn.session, reporter_id):
            return False
        await begin(turn)
        # Waiting for consent, or (consent given before) the report's first photo.
        return await STEPS[turn.state].photo(turn, event)


def _photo(m: MediaRef) -> dict[str, object]:
    """A photo as the draft keeps it."""
    return {
        "sha256": m.sha256,
        "content_type": m.content_type,
        "width": m.width,
        "height": m.height,
        "size_bytes": m.size_bytes,
        "gps": list(m.gps) if m.gps else None,
        "taken_at": m.taken_at,
    }


def _offer_its_place(turn: Turn, photo: dict[str, object]) -> None:
    gps = photo.get("gps")
    if isinstance(gps, list) and "lat" not in turn.data and "photo_gps" not in turn.data:
        # A photo sent as a file kept its position: offer it as the place.
        turn.data["photo_gps"] = gps


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
        Duplicate(),
        Summary(),
        Edit(),
    )
}
