"""The web report form as a channel: a submitted form becomes the neutral events a chat
would have sent (start, consent, photos, the place, the ward, the category, the words,
send with or without the phone), run through the same conversation core in one
transaction, on the channel "web".

The core answers with catalogue messages; the form shows none of the chat's prompts,
only the problems the core found (the keys it said), so the rules (what a photo must
be, where the place may be, how long the words must be) are the chat's and nowhere
else. The caller rolls the transaction back unless a ticket was filed: a form that the
core refused leaves nothing (no reporter, no consent) behind.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.config import Settings
from backend.services.deadlines import Policies
from backend.services.duplicates import DuplicateRule
from backend.services.units import WardIndex
from backend.web.report_form import FiledForm, FormProblem, WebForm
from handlers.core import step
from handlers.events import Capabilities, ConversationState, Incoming, MediaRef
from handlers.i18n import translate
from handlers.report import MAX_DESCRIPTION, MAX_PHOTOS, STEPS, category_name
from handlers.turn import Services, Turn

CHANNEL = "web"
# A form is a page: choices are shown as fields, nothing is shared from a keyboard.
CAPABILITIES = Capabilities(inline_buttons=True, request_location=False, request_contact=False)

# What the core says when input does not fit, and the form field it is about.
PROBLEM_FIELDS = {
    "photos.error.not_image": "photos",
    "photos.error.too_large": "photos",
    "photos.error.download_failed": "photos",
    "location.outside_vietnam": "place",
    "location.out_of_area": "place",
    "description.empty": "description",
    "description.too_short": "description",
    "description.too_long": "description",
    "description.too_short_without_photos": "description",
    "button.stale": "",
    "unexpected.summary": "phone",
}


@dataclass(slots=True)
class _WebTurn(Turn):
    """A turn that also notes which catalogue messages the core said, and with what."""

    said: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def t(self, key: str, **params: Any) -> str:
        self.said.append((key, params))
        return translate(self.conv.language, key, **params)


class WebChannel:
    """The form's way into the conversation core (backend.web.report_form.ReportChannel)."""

    max_photos = MAX_PHOTOS
    max_description = MAX_DESCRIPTION

    def consent_text(self, language: str, months: int) -> str:
        return translate(language, "consent.text", months=months)

    def categories(self, language: str) -> list[tuple[str, str]]:
        options = STEPS["category"].options(_turn_for_labels(language))
        return [(b.data.partition("|")[2], b.label) for b in options]

    async def file(
        self,
        session: AsyncSession,
        form: WebForm,
        *,
        wards: WardIndex,
        policies: Policies,
        settings: Settings,
    ) -> FiledForm:
        return await _Run(session, form, _services(wards, policies, settings)).run()


def _services(wards: WardIndex, policies: Policies, settings: Settings) -> Services:
    # No geocoder: the form gives a point, and a ward is chosen on the page.
    return Services(
        wards=wards,
        policies=policies,
        geocoder=None,
        duplicates=DuplicateRule(
            radius_m=settings.duplicate_radius_m,
            days=settings.duplicate_days,
            per_category=settings.duplicate_radii,
        ),
        out_of_area_hotlines=settings.out_of_area_hotlines,
        identity_months=settings.retention_identity_months,
    )


def _turn_for_labels(language: str) -> Turn:
    conv = ConversationState(state="category", language=language)
    return Turn(
        session=None,  # type: ignore[arg-type] # labels read no database
        conv=conv,
        caps=CAPABILITIES,
        services=None,  # type: ignore[arg-type]
        channel=CHANNEL,
        chat_id="",
    )


class _Refused(Exception):
    def __init__(self, filed: FiledForm) -> None:
        self.filed = filed


class _Run:
    """One form's events, in the order a chat would send them."""

    def __init__(self, session: AsyncSession, form: WebForm, services: Services) -> None:
        self.session = session
        self.form = form
        self.services = services
        # Each form is a chat of its own: a new reporter, never found again by chat.
        self.chat_id = secrets.token_hex(16)
        self.conv = ConversationState(state="idle", language=form.language)
        self.count = 0

    async def send(self, field_name: str, **event: Any) -> _WebTurn:
        """One event through the core; _Refused when the core said a problem."""
        self.count += 1
        update_id = f"web-{self.count}"
        turn = _WebTurn(
            session=self.session,
            conv=self.conv,
            caps=CAPABILITIES,
            services=self.services,
            channel=CHANNEL,
            chat_id=self.chat_id,
            update_id=update_id,
        )
        incoming = Incoming(channel=CHANNEL, chat_id=self.chat_id, update_id=update_id, **event)
        await step(turn, incoming)
        problems = [
            FormProblem(PROBLEM_FIELDS[key] or field_name, key, _plain(params))
            for key, params in turn.said
            if key in PROBLEM_FIELDS
        ]
        if problems:
            raise _Refused(FiledForm(problems=problems))
        return turn

    def expect(self, *states: str) -> None:
        if self.conv.state not in states:
            problem = FormProblem("", "unexpected", {"state": self.conv.state})
            raise _Refused(FiledForm(problems=[problem]))

    async def run(self) -> FiledForm:
        try:
            return await self._events()
        except _Refused as refused:
            return refused.filed

    async def _events(self) -> FiledForm:
        form = self.form
        await self.send("", kind="command", command="start")
        self.expect("consent")
        # The box ticked on the form, as the consent button is pressed in a chat.
        await self.send("consent", kind="button", button="consent|yes")
        self.expect("photos")
        for photo in form.photos:
            await self.send("photos", kind="photo", media=MediaRef(**photo))
        for error in form.photo_errors:
            await self.send("photos", kind="photo", media_error=error)
        if self.conv.state == "photos":
            done = "photos|done" if form.photos else "photos|skip"
            await self.send("photos", kind="button", button=done)
        self.expect("location")
        await self.send("place", kind="location", location=(form.lat, form.lon))
        if self.conv.state == "ward":
            choices = self._ward_choices()
            if form.ward not in {code for code, _ in choices}:
                # The point lies between wards: the resident says which (as in a chat).
                return FiledForm(ward_choices=choices)
            await self.send("ward", kind="button", button=f"ward|{form.ward}")
        self.expect("category")
        await self.send("category", kind="button", button=f"category|{form.category}")
        if self.conv.state == "duplicate":
            # Open cases nearby are for staff to merge with; the form files its own.
            await self.send("category", kind="button", button="duplicate|new")
        self.expect("description")
        await self.send("description", kind="text", text=form.description)
        self.expect("summary")
        if form.phone:
            turn = await self.send("phone", kind="contact", phone=form.phone)
        else:
            turn = await self.send("", kind="button", button="summary|anonymous")
        self.expect("idle")
        for key, params in turn.said:
            if key.startswith("submitted.") and "code" in params:
                label = category_name(turn, form.category)
                return FiledForm(code=str(params["code"]), category=label)
        raise _Refused(FiledForm(problems=[FormProblem("", "unexpected", {"state": "idle"})]))

    def _ward_choices(self) -> list[tuple[str, str]]:
        turn = _turn_for_labels(self.conv.language)
        turn.conv = self.conv
        turn.services = self.services
        options = STEPS["ward"].options(turn)
        return [(b.data.partition("|")[2], b.label) for b in options]


def _plain(params: dict[str, Any]) -> dict[str, str | int]:
    """The problem's parameters as the page may show them."""
    return {k: v if isinstance(v, int) else str(v) for k, v in params.items()}
