"""The report flow: consent → photos → place → ward → category → words → send.

Each step is one message: its acknowledgement joins the next prompt (Turn.say). The
polluter and the event's nature are one optional step, offered with the summary; the
summary asks how to send (with the phone shared, or anonymously), so sending is one tap.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

from backend.geo import haversine_km
from backend.models import Ticket, Unit
from backend.services.additions import MAX_TEXT as ADDITION_TEXT
from backend.services.additions import add_to_report, open_reports
from backend.services.categories import CATEGORIES
from backend.services.duplicates import join_case, nearby_cases
from backend.services.geocoding import GeocoderDown, find_place
from backend.services.intake import ReportDraft, is_approximate, submit_report
from backend.services.photos import ACCEPTED_NAMES
from backend.services.reporters import (
    find_or_create_reporter,
    has_consent,
    is_erased,
    normalise_phone,
    phone_only,
    record_consent,
)
from backend.services.units import WardInfo
from backend.services.workflow import WorkflowError, auto_classify
from backend.text import parse_point, search_key
from backend.timeutil import format_local, local
from handlers.abuse import (
    count_addition,
    count_report,
    is_muted,
    refuse_addition,
    refuse_new_report,
    say_neutral,
    uncount_addition,
)
from handlers.events import Button, GeocodeOutcome, Incoming, MediaRef
from handlers.turn import Job, Services, Turn

MAX_PHOTOS = 5
MAX_DESCRIPTION = 2000
# Without a photo, a description shorter than this says too little to verify.
MIN_DESCRIPTION = 10
MAX_POLLUTER = 200
MAX_ADDRESS = 300
NATURES = ("one_off", "recurring")
# The nature of a report whose reporter did not say.
UNKNOWN_NATURE = "unknown"
EDITABLE = ("photos", "location", "category", "description", "details", "contact")
# Typed answers to the consent question, as search_key() folds them.
AGREE_WORDS = frozenset({"dongy", "toidongy", "co", "agree", "iagree", "yes", "ok"})
DECLINE_WORDS = frozenset({"khong", "khongdongy", "toikhongdongy", "no", "disagree"})
# Steps whose prompt may show a keyboard that shares the place or the phone.
KEYBOARD_STATES = frozenset({"photos", "location", "contact", "summary"})
# Steps of earlier versions, and where a chat left in one of them goes on.
RENAMED_STEPS = {"polluter": "details", "nature": "details"}


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

    def remind(self, turn: Turn, problem: str | None) -> None:
        """After input that does not fit: say what went wrong, then ask again."""
        if problem is not None:
            turn.say(problem)
        self.prompt(turn)

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
    d = turn.data
    short = len(d.get("description", "")) < MIN_DESCRIPTION
    if next_state == "summary" and short and not d.get("photos"):
        # The photos were edited away: a few letters no longer say enough.
        turn.say("description.too_short_without_photos", min=MIN_DESCRIPTION)
        turn.goto("description", editing=True)
        STEPS["description"].prompt(turn)
        return
    turn.goto(next_state)
    STEPS[next_state].prompt(turn)


async def _said_muted(turn: Turn) -> bool:
    """Whether the chat's reporter is muted (said so, neutrally)."""
    if not await is_muted(turn):
        return False
    say_neutral(turn)
    return True


async def begin(turn: Turn) -> bool:
    """/start: consent first unless given for the current text version, then photos.
    False (and said why) when the reporter may not begin a report now: muted, or over
    their allowance of reports (handlers.abuse); the chat then stays as it was."""
    if turn.conv.reporter_id is not None and await is_erased(turn.session, turn.conv.reporter_id):
        # Erased (by the retention pass, or on a request by phone) while this chat went
        # on: a new reporter, who is asked for consent afresh.
        turn.conv.reporter_id = None
    returning = turn.conv.reporter_id is not None
    # A step that showed a keyboard (share the place, the phone) leaves it on screen.
    keyboard = turn.state in KEYBOARD_STATES
    # The count is the chat's, and outlives a /forgetme: asked of everyone, before a
    # reporter is made for a new contact (refused, nothing of them is stored).
    if await _said_muted(turn) or await refuse_new_report(turn):
        return False
    if turn.conv.reporter_id is None:
        reporter_id, created = await find_or_create_reporter(
            turn.session, turn.channel, turn.chat_id
        )
        returning = not created
        turn.conv.reporter_id = reporter_id
        # A reporter new this moment has no mute: no query for them.
        if returning and await _said_muted(turn):
            return False
    turn.reset("consent")
    turn.say("start.welcome", remove_keyboard=keyboard)
    if returning and await has_consent(turn.session, turn.conv.reporter_id):
        turn.goto("photos")
    STEPS[turn.state].prompt(turn)
    return True


class Consent(Step):
    name = "consent"

    def options(self, turn: Turn) -> list[Button]:
        return [self.button(turn, "yes", "consent.yes"), self.button(turn, "no", "consent.no")]

    def prompt(self, turn: Turn) -> None:
        turn.say("consent.text", buttons=self.options(turn), months=turn.services.identity_months)

    def remind(self, turn: Turn, problem: str | None) -> None:
        # One line, not the whole text again.
        turn.say("unexpected.consent", buttons=self.options(turn))

    async def text(self, turn: Turn, text: str) -> bool:
        """ "Đồng ý" / "agree" typed rather than pressed."""
        key = search_key(text)
        if key in AGREE_WORDS:
            return await self.choose(turn, "yes")
        if key in DECLINE_WORDS:
            return await self.choose(turn, "no")
        return False

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
        _ask_with_location(turn, "photos.received", STEPS["photos"].options(turn))
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


async def said_photo_error(turn: Turn, event: Incoming) -> bool:
    """A photo that could not be taken (not an image, too large, not downloaded, or not
    taken at all): said what to do, and True. One not taken because the reporter is
    muted gets the neutral answer, and one over the allowance of additions says so and
    when they can add again: sending it again would not help."""
    if event.media_error is None:
        return False
    if event.media_error == "not_taken":
        if await _said_muted(turn):
            return True
        if turn.state == "addition" and await refuse_addition(turn, say=True):
            turn.reset()  # nothing more can be added now: the addition is dropped
            return True
    turn.say(f"photos.error.{event.media_error}", formats=ACCEPTED_NAMES)
    return True


class Photos(Step):
    name = "photos"

    def options(self, turn: Turn) -> list[Button]:
        if turn.data.get("photos"):
            return [self.button(turn, "done", "photos.done")]
        return [self.button(turn, "skip", "photos.skip")]

    def prompt(self, turn: Turn) -> None:
        # Asked again (a reminder, /help, /lang): the photos sent so far stay.
        key = "photos.received" if turn.data.get("photos") else "photos.ask"
        _ask_with_location(turn, key, self.options(turn))

    async def photo(self, turn: Turn, event: Incoming) -> bool:
        if await said_photo_error(turn, event):
            return True
        if event.media is None:
            return False
        photos: list[dict[str, object]] = turn.data.setdefault("photos", [])
        quiet = _album_answered(turn, event)
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
            _ask_with_location(turn, "photos.received", self.options(turn))
        return True

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "skip":
            turn.say("photos.skipped")
        await advance(turn, "location")
        return True

    async def location(
        self, turn: Turn, lat: float, lon: float, source: str, address: str | None = None
    ) -> bool:
        """The place sent with the photos' prompt: the photos are done (or skipped)."""
        return await STEPS["location"].location(turn, lat, lon, source, address)

    async def text(self, turn: Turn, text: str) -> bool:
        """Coordinates or an address typed with the photos: the place, as at its step."""
        return await STEPS["location"].text(turn, text)

    async def geocoded(self, turn: Turn, event: Incoming) -> bool:
        return await STEPS["location"].geocoded(turn, event)


def _ask_with_location(turn: Turn, key: str, buttons: list[Button]) -> None:
    """A photos prompt, with the button that shares the place where the channel has one."""
    _ask_sharing(turn, key, buttons, "location", "location.button", max=MAX_PHOTOS)


def _ask_sharing(
    turn: Turn,
    key: str,
    buttons: list[Button],
    request: Literal["location", "contact"],
    label_key: str,
    **params: Any,
) -> None:
    """Say key_button with a keyboard button that shares the location or the phone, where
    the channel has one (the options below it); else key, which says how to type it."""
    able = turn.caps.request_location if request == "location" else turn.caps.request_contact
    if able:
        label = turn.t(label_key)
        turn.say(f"{key}_button", buttons=buttons, request=request, request_label=label, **params)
    else:
        turn.say(key, buttons=buttons, **params)


class Location(Step):
    name = "location"

    def options(self, turn: Turn) -> list[Button]:
        if turn.data.get("photo_gps"):
            return [self.button(turn, "photo", "location.use_photo")]
        return []

    def prompt(self, turn: Turn) -> None:
        _ask_sharing(turn, "location.ask", self.options(turn), "location", "location.button")

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
            _ask_again(turn)
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
        if event.text is None:
            return await self._reversed(turn, event)
        if turn.data.get("geocoding") != event.text:
            return True  # an answer to an address typed before this one
        turn.data.pop("geocoding")
        if event.geocoded == "unavailable":
            turn.say("location.geocoder_down")
        elif event.location is None:
            turn.say("location.address_not_found", address=event.text[:100])
        else:
            source = "address" if event.geocoded == "nominatim" else "ward_name"
            return await self.location(turn, *event.location, source, event.address)
        _ask_again(turn)
        return True

    async def location(
        self, turn: Turn, lat: float, lon: float, source: str, address: str | None = None
    ) -> bool:
        place = turn.services.wards.place(lat, lon)
        if not place.in_vietnam:
            turn.say("location.outside_vietnam")
            _ask_again(turn)
            return True
        if not place.served:
            hotlines = turn.services.out_of_area_hotlines or turn.t("location.hotline_default")
            nearest = place.nearest
            turn.say(
                "location.out_of_area",
                province=nearest.province_name if nearest else "",
                hotlines=hotlines,
            )
            _ask_again(turn)
            return True
        turn.goto(
            "location",
            lat=lat,
            lon=lon,
            location_source=source,
            address=address,
            ward_candidates=[n.ward.code for n in place.nearby],
            pin_wards=[n.ward.code for n in place.nearby],
            ward_named=None,
        )
        turn.data.pop("reversing", None)
        if place.ward is not None:
            # The ward's boundary holds the point: no need to ask.
            _acknowledge(turn)
            turn.data["ward_code"] = place.ward.code
            turn.say("ward.located", ward=place.ward.label)
            await advance(turn, "category")
            return True
        if address:
            _name_ward(turn, address)
        elif turn.services.geocoder is not None and turn.services.geocoder.online:
            # The map's name for the place picks the ward among the nearest centres: asked
            # after this update is committed; the answer asks the ward question.
            turn.data["reversing"] = [lat, lon]
            turn.jobs.append(Job(REVERSE, {"lat": lat, "lon": lon}))
            return True
        _acknowledge(turn)
        _ask_ward(turn)
        return True

    async def _reversed(self, turn: Turn, event: Incoming) -> bool:
        """The map's address for the pin: the ward it names goes first in the choice."""
        asked = turn.data.get("reversing")
        if event.location is None or asked != list(event.location):
            return True  # an answer for a pin sent before this one
        turn.data.pop("reversing")
        if event.address:
            _name_ward(turn, event.address)
        _acknowledge(turn)
        _ask_ward(turn)
        return True


def _acknowledge(turn: Turn) -> None:
    """Say what place was taken: the pin's point, or the address found."""
    d = turn.data
    lat, lon, address = f"{d['lat']:.5f}", f"{d['lon']:.5f}", d.get("address")
    if address:
        approximate = is_approximate(d["location_source"])
        key = "location.found_ward_only" if approximate else "location.found_address"
        turn.say(key, address=address, lat=lat, lon=lon, remove_keyboard=True)
    else:
        turn.say("location.received", lat=lat, lon=lon, remove_keyboard=True)


def _name_ward(turn: Turn, address: str) -> None:
    """Put first among the candidates the ward an address names, matched by name within
    the candidates' provinces."""
    wards = turn.services.wards
    candidates: list[str] = turn.data["ward_candidates"]
    provinces = {w.province_code for c in candidates if (w := wards.get(c)) is not None}
    named = wards.named_in(address, provinces)
    if named is not None and not _far_from_pin(turn, named):
        turn.data["ward_named"] = named.code
        turn.data["ward_candidates"] = [named.code, *[c for c in candidates if c != named.code]]
        turn.data["pin_wards"] = list(turn.data["ward_candidates"])


def _ask_ward(turn: Turn) -> None:
    # Choosing the ward is part of giving the place, even when editing it.
    turn.goto("ward")
    STEPS["ward"].prompt(turn)


def _ask_again(turn: Turn) -> None:
    """After a place that could not be taken: the step the chat is in asks again (the
    photos' step, for a place sent with the photos)."""
    STEPS[turn.state].prompt(turn)


GEOCODE = "geocoded"
REVERSE = "reversed"
# Seconds a pin's ward question waits for the map's name for the place.
REVERSE_WAIT = 1.5


async def reverse_look_up(
    services: Services, channel: str, chat_id: str, update_id: str, lat: float, lon: float
) -> Incoming:
    """The geocoder's address for a pin, as an event for the chat that sent it. The
    resident waits for the ward question: at most REVERSE_WAIT seconds, then the nearest
    wards are asked without it. A look-up not done by then is dropped, not left queued:
    the geocoder takes one request a second for everyone, and typed addresses need it."""
    outcome: GeocodeOutcome = "not_found"
    address = None
    if services.geocoder is not None:
        try:
            address = await asyncio.wait_for(services.geocoder.reverse(lat, lon), REVERSE_WAIT)
        except (TimeoutError, GeocoderDown):
            outcome = "unavailable"
        else:
            outcome = "nominatim" if address else "not_found"
    return Incoming(
        channel=channel,
        chat_id=chat_id,
        update_id=update_id,
        kind="geocoded",
        location=(lat, lon),
        address=address,
        geocoded=outcome,
    )


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
        named = turn.data.get("ward_named")
        buttons = []
        for code in turn.data.get("ward_candidates", []):
            info = wards.get(code)
            if info is not None:
                label = turn.t("ward.named", ward=info.label) if code == named else info.label
                buttons.append(Button(label, f"{self.name}|{code}"))
        return buttons

    def prompt(self, turn: Turn) -> None:
        named = turn.services.wards.get(turn.data.get("ward_named") or "")
        if named is not None:
            turn.say("ward.ask_named", ward=named.label, buttons=self.options(turn))
        else:
            turn.say("ward.ask", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        info = turn.services.wards.get(value)
        if info is None:
            return False
        if value not in turn.data.get("pin_wards", []) and _far_from_pin(turn, info):
            # A ward typed rather than one offered for the pin, and they disagree.
            turn.goto("ward_check", check_ward=value)
            STEPS["ward_check"].prompt(turn)
            return True
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


# Farther than this (or than twice the ward's radius) from the pin, a typed ward is
# checked with the reporter.
FAR_KM = 5.0


def _far_from_pin(turn: Turn, ward: WardInfo) -> bool:
    """Whether the ward is more than a few km from the pin, or in another province than
    the pin's nearest ward."""
    lat, lon = turn.data["lat"], turn.data["lon"]
    if haversine_km(lat, lon, ward.lat, ward.lon) > max(FAR_KM, 2 * ward.radius_km):
        return True
    near = turn.services.wards.place(lat, lon).nearest
    return near is not None and near.province_code != ward.province_code


class WardCheck(Step):
    """The pin and a typed ward disagree: which is right?"""

    name = "ward_check"

    def _ward(self, turn: Turn) -> WardInfo | None:
        return turn.services.wards.get(turn.data.get("check_ward") or "")

    def options(self, turn: Turn) -> list[Button]:
        ward = self._ward(turn)
        if ward is None:
            return []
        return [
            self.button(turn, "pin", "ward_check.pin"),
            self.button(turn, "ward", "ward_check.ward", ward=ward.label),
        ]

    def prompt(self, turn: Turn) -> None:
        ward = self._ward(turn)
        if ward is None:
            _ask_ward(turn)
            return
        d = turn.data
        pin = turn.services.wards.place(d["lat"], d["lon"]).nearest
        km = haversine_km(d["lat"], d["lon"], ward.lat, ward.lon)
        turn.say(
            "ward_check.ask",
            buttons=self.options(turn),
            ward=ward.label,
            km=f"{km:.0f}",
            near=pin.label if pin is not None else "",
        )

    async def choose(self, turn: Turn, value: str) -> bool:
        ward = self._ward(turn)
        d = turn.data
        d.pop("check_ward", None)
        if ward is None or value == "pin":
            # The pin is right: its nearest wards again.
            d["ward_candidates"] = list(d.get("pin_wards", []))
            _ask_ward(turn)
            return True
        # The ward is right, the pin is not: the ward's centre stands for the place.
        d.update(
            lat=ward.lat,
            lon=ward.lon,
            location_source="ward_name",
            address=ward.label,
            ward_code=ward.code,
            pin_wards=[ward.code],
        )
        turn.say("ward_check.centre", ward=ward.label)
        await advance(turn, "category")
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
                # Within about this many metres: a finer distance from the resident's
                # own point would tell the case's place better than the public may know.
                "distance": max(100, math.ceil(case.distance_m / 100) * 100),
                "state": case.state,
                "nature": case.nature,
                "date": local(case.created_at).strftime("%d/%m/%Y"),
            }
            d["cases"].append(entry)
            if case.photo_sha256 is not None:
                turn.say(
                    "duplicate.case",
                    page=case.code,
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
            + turn.page_line(c["code"])
            for c in turn.data.get("cases", [])
        )
        turn.say("duplicate.ask", buttons=self.options(turn), cases=lines)

    async def choose(self, turn: Turn, value: str) -> bool:
        case = next((c for c in turn.data.get("cases", []) if c["code"] == value), None)
        if case is not None:
            turn.data.update(joins=value, nature=case["nature"], polluter=None)
            turn.say("duplicate.joining", code=value, page=value)
        await advance(turn, "description")
        return True


class Description(Step):
    name = "description"

    def options(self, turn: Turn) -> list[Button]:
        # A description written before (when editing it, or the words sent to start
        # this report) can be kept as it is.
        if turn.data.get("description"):
            return [self.button(turn, "keep", "description.keep")]
        return []

    def prompt(self, turn: Turn) -> None:
        written = turn.data.get("description")
        if written:
            turn.say("description.ask_keep", text=written[:300], buttons=self.options(turn))
        else:
            turn.say("description.ask", max=MAX_DESCRIPTION)

    async def choose(self, turn: Turn, value: str) -> bool:
        await advance(turn, "summary")
        return True

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
            await advance(turn, "summary")
        return True


class Details(Step):
    """The optional step: who causes it, and whether it is a one-off or recurring."""

    name = "details"

    def options(self, turn: Turn) -> list[Button]:
        natures = [self.button(turn, n, f"nature.{n}") for n in NATURES]
        return [*natures, self.button(turn, "back", "details.back")]

    def prompt(self, turn: Turn) -> None:
        turn.say("details.ask", buttons=self.options(turn), max=MAX_POLLUTER)

    async def choose(self, turn: Turn, value: str) -> bool:
        if value in NATURES:
            turn.data["nature"] = value
        turn.data.pop("editing", None)
        turn.goto("summary")
        STEPS["summary"].prompt(turn)
        return True

    async def text(self, turn: Turn, text: str) -> bool:
        text = text.strip()
        if not text or len(text) > MAX_POLLUTER:
            turn.say("polluter.invalid", max=MAX_POLLUTER)
        else:
            turn.data["polluter"] = text
            turn.say("details.polluter_saved", polluter=text)
        self.prompt(turn)
        return True


class Contact(Step):
    name = "contact"

    def options(self, turn: Turn) -> list[Button]:
        return [self.button(turn, "anonymous", "contact.anonymous")]

    def prompt(self, turn: Turn) -> None:
        _ask_sharing(turn, "contact.ask", self.options(turn), "contact", "contact.button")

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
    """The report as it will go, and how to send it: with the phone (shared or typed
    here, or given before with Edit → Contact) or anonymously."""

    name = "summary"

    def options(self, turn: Turn) -> list[Button]:
        d = turn.data
        send = (
            self.button(turn, "confirm", "summary.confirm")
            if d.get("phone")
            else self.button(turn, "anonymous", "summary.send_anonymous")
        )
        more = [] if d.get("joins") else [self.button(turn, "details", "summary.details")]
        return [
            send,
            *more,
            self.button(turn, "edit", "summary.edit"),
            self.button(turn, "cancel", "summary.cancel"),
        ]

    def prompt(self, turn: Turn) -> None:
        d = turn.data
        ward = turn.services.wards.get(d["ward_code"])
        if d.get("joins"):
            turn.say("summary.joins", code=d["joins"], page=d["joins"])
        if d.get("address"):
            turn.say("summary.address", address=d["address"])
        nature = d.get("nature")
        turn.say(
            "summary.text",
            photos=len(d.get("photos", [])),
            lat=f"{d['lat']:.5f}",
            lon=f"{d['lon']:.5f}",
            approx=turn.t("summary.approximate") if is_approximate(d["location_source"]) else "",
            ward=ward.label if ward else d["ward_code"],
            category=category_name(turn, d["category"]),
            description=d["description"],
            polluter=d.get("polluter") or turn.t("summary.none"),
            nature=turn.t(f"nature.{nature}") if nature in NATURES else turn.t("summary.none"),
            contact=d.get("phone") or turn.t("contact.anonymous"),
        )
        if d.get("phone"):
            turn.say("summary.send", buttons=self.options(turn))
        else:
            _ask_sharing(
                turn, "summary.how_to_send", self.options(turn), "contact", "summary.share_phone"
            )

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "cancel":
            turn.reset()
            turn.say("summary.cancelled", remove_keyboard=True)
        elif value == "edit":
            turn.goto("edit")
            STEPS["edit"].prompt(turn)
        elif value == "details":
            turn.goto("details")
            STEPS["details"].prompt(turn)
        else:
            if value == "anonymous":
                turn.data["phone"] = None
            await self._submit(turn)
        return True

    async def text(self, turn: Turn, text: str) -> bool:
        """A phone number typed at the summary (and nothing else): sent with it."""
        phone = phone_only(text)
        return phone is not None and await self._send_with(turn, phone)

    async def contact(self, turn: Turn, phone: str) -> bool:
        """The reporter's own number shared at the summary: sent with it."""
        normalised = normalise_phone(phone)
        return normalised is not None and await self._send_with(turn, normalised)

    async def _send_with(self, turn: Turn, phone: str) -> bool:
        turn.data["phone"] = phone
        await self._submit(turn)
        return True

    async def _submit(self, turn: Turn) -> None:
        if not await count_report(turn):
            return
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
                nature=d.get("nature") or UNKNOWN_NATURE,
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
        contact = d.get("phone") or turn.t("contact.anonymous")
        turn.reset()
        if joins:
            try:
                await join_case(turn.session, result.ticket_id, joins, turn.services.policies, now)
            except WorkflowError:
                # The case was closed or merged meanwhile: this stays a report of its own.
                turn.say("submitted.case_gone", case=joins)
            else:
                turn.say(
                    "submitted.joined",
                    page=result.code,
                    code=result.code,
                    case=joins,
                    contact=contact,
                    remove_keyboard=True,
                )
                return
        key, unit, due = f"submitted.{result.urgency}", result.unit_name, result.due_at
        ticket = await turn.session.get(Ticket, result.ticket_id)
        if ticket is not None and await auto_classify(
            turn.session, ticket, turn.services.policies, now
        ):
            # Classified and forwarded as it came in (the province's policy).
            forwarded_to = await turn.session.get(Unit, ticket.unit_id)
            key, unit = "submitted.forwarded", forwarded_to.name if forwarded_to else unit
            due = ticket.due_at or due
        turn.say(
            key,
            remove_keyboard=True,
            contact=contact,
            page=result.code,
            code=result.code,
            ward=f"{result.ward_name}, {result.province_name}",
            unit=unit,
            due=format_local(due),
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
        if value == "photos":
            # The photos are chosen afresh.
            turn.data.update(photos=[], media_groups=[])
            turn.data.pop("photo_gps", None)
        STEPS[turn.state].prompt(turn)
        return True


class Idle(Step):
    name = "idle"

    def prompt(self, turn: Turn) -> None:
        turn.say("idle.help")

    async def photo(self, turn: Turn, event: Incoming) -> bool:
        """A photo before anything else, as residents often begin: added to a report of
        theirs still being handled, if they want, or else the first photo of a new
        report (waiting for their consent, dropped if they decline). One not taken (see
        bot.media) would have begun a report: beginning one says why it was not taken."""
        if event.media is None and event.media_error != "not_taken":
            return False
        if event.media is not None and await _offer_addition(
            turn, [_photo(event.media)], None, event.media_group
        ):
            return True
        if not await begin(turn):
            return True
        if event.media is None:
            # Begun after all (the allowance came back meanwhile): the photo is sent again.
            return await said_photo_error(turn, event)
        # Waiting for consent, or (consent given before) the report's first photo.
        return await STEPS[turn.state].photo(turn, event)

    async def text(self, turn: Turn, text: str) -> bool:
        """Words after a report was sent: offered as an addition to it (a word of thanks
        or a greeting is too short to be one, and gets the help)."""
        if len(text.strip()) < MIN_DESCRIPTION:
            return False
        return await _offer_addition(turn, [], text)


async def _offer_addition(
    turn: Turn,
    photos: list[dict[str, object]],
    text: str | None,
    media_group: str | None = None,
) -> bool:
    """Ask which open report of theirs this is for, if the reporter has one."""
    reporter_id = turn.conv.reporter_id
    if reporter_id is None or not await has_consent(turn.session, reporter_id):
        return False
    if await is_muted(turn):
        say_neutral(turn)
        return True
    reports = await open_reports(turn.session, reporter_id)
    if not reports:
        return False
    text = (text or "").strip()
    if not photos and not text:
        return False
    # Over the allowance of additions: words are refused (said so); photos begin a new
    # report instead, as for a reporter with nothing open.
    if await refuse_addition(turn, say=not photos):
        return not photos
    turn.goto(
        "addition",
        add_photos=photos,
        add_text=text[:ADDITION_TEXT] or None,
        reports=[
            {
                "code": r.code,
                "category": r.category_code,
                "date": local(r.created_at).strftime("%d/%m/%Y"),
            }
            for r in reports
        ],
        # The rest of the album this photo came in is added without another question.
        media_groups=[media_group] if media_group else [],
    )
    STEPS["addition"].prompt(turn)
    return True


class Addition(Step):
    """Photos or words sent after a report: added to one of the reporter's open reports
    (bổ sung), or the start of a new one."""

    name = "addition"

    def options(self, turn: Turn) -> list[Button]:
        to = [
            self.button(turn, r["code"], "addition.to", code=r["code"])
            for r in turn.data.get("reports", [])
        ]
        return [
            *to,
            self.button(turn, "new", "addition.new"),
            self.button(turn, "cancel", "addition.cancel"),
        ]

    def prompt(self, turn: Turn) -> None:
        d = turn.data
        reports = d.get("reports", [])
        got = turn.t(
            "addition.got", photos=len(d.get("add_photos", [])), text=d.get("add_text") or "-"
        )
        if len(reports) == 1:
            turn.say("addition.ask_one", got=got, code=reports[0]["code"], page=reports[0]["code"])
        else:
            lines = "\n".join(
                turn.t(
                    "addition.line",
                    code=r["code"],
                    category=category_name(turn, r["category"]),
                    date=r["date"],
                )
                + turn.page_line(r["code"])
                for r in reports
            )
            turn.say("addition.ask_which", got=got, reports=lines)
        turn.say("addition.choose", buttons=self.options(turn))

    async def photo(self, turn: Turn, event: Incoming) -> bool:
        if await said_photo_error(turn, event):
            return True
        if event.media is None:
            return False
        photos: list[dict[str, object]] = turn.data.setdefault("add_photos", [])
        quiet = _album_answered(turn, event)
        if len(photos) < MAX_PHOTOS and all(p["sha256"] != event.media.sha256 for p in photos):
            photos.append(_photo(event.media))
        if not quiet:
            self.prompt(turn)
        return True

    async def text(self, turn: Turn, text: str) -> bool:
        words = " ".join(filter(None, [turn.data.get("add_text"), text.strip()]))
        turn.data["add_text"] = words[:ADDITION_TEXT] or None
        self.prompt(turn)
        return True

    async def choose(self, turn: Turn, value: str) -> bool:
        d = turn.data
        photos = list(d.get("add_photos", []))
        if value == "cancel":
            turn.reset()
            turn.say("addition.cancelled")
            return True
        if value == "new":
            # Consent is on record (it was checked to offer this): a new report that
            # begins with these photos, and these words as its description.
            text = d.get("add_text")
            if await refuse_new_report(turn):
                turn.reset()
                return True
            turn.reset("photos")
            turn.data.update(photos=photos[:MAX_PHOTOS], media_groups=[])
            if text:
                turn.data["description"] = text
            for photo in photos:
                _offer_its_place(turn, photo)
            STEPS["photos"].prompt(turn)
            return True
        reporter_id = turn.conv.reporter_id
        added = None
        if not await count_addition(turn):
            return True
        if reporter_id is not None:
            added = await add_to_report(
                turn.session, value, reporter_id, photos, d.get("add_text"), turn.services.now()
            )
        if added is None:
            await uncount_addition(turn)
            # Closed or merged since it was offered: ask again among those still open.
            turn.say("addition.gone", code=value, page=value)
            turn.reset()
            if not await _offer_addition(turn, photos, d.get("add_text")):
                turn.say("idle.help")
            return True
        turn.reset()
        told = "addition.saved" if added.told else "addition.saved_on_page"
        turn.say(told, code=added.ticket.code, photos=len(photos), page=added.ticket.code)
        return True


def _album_answered(turn: Turn, event: Incoming) -> bool:
    """Whether the photo is of an album already answered: an album arrives as one update
    per photo, and only its first is answered."""
    groups: list[str] = turn.data.setdefault("media_groups", [])
    if event.media_group is None:
        return False
    if event.media_group in groups:
        return True
    groups.append(event.media_group)
    return False


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
        Details(),
        Contact(),
        Duplicate(),
        Summary(),
        Edit(),
        Addition(),
        WardCheck(),
    )
}
