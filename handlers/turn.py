"""What a dialogue step works with: the session, the chat's state, and where replies go."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Ticket, utcnow
from backend.services.abuse import MutedReporters, ReporterLimits
from backend.services.deadlines import Policies
from backend.services.duplicates import DuplicateRule
from backend.services.geocoding import Geocoder
from backend.services.tickets import is_public
from backend.services.units import WardIndex
from handlers.case_page import case_page_line, case_page_link
from handlers.events import Ack, Button, Capabilities, ConversationState, Reply
from handlers.i18n import translate


@dataclass(frozen=True, slots=True)
class Job:
    """Work that must not hold the batch's transaction (a geocoder call): stored in the
    turn's transaction as the chat's next update, done by the inbox's worker in any
    process (again, if a process dies doing it), and its outcome (handlers.jobs) handled
    like an update of the chat."""

    kind: str
    args: dict[str, Any]


@dataclass(slots=True)
class Services:
    """Long-lived helpers the dialogue needs besides the database."""

    wards: WardIndex
    now: Callable[[], datetime] = utcnow
    policies: Policies = field(default_factory=Policies.load)
    geocoder: Geocoder | None = None
    duplicates: DuplicateRule = field(default_factory=DuplicateRule)
    # Said to a reporter whose place is outside the provinces served.
    out_of_area_hotlines: str = ""
    # After how long without contact an identity is erased (the consent text says so).
    identity_months: int = 12
    # The service's public address: messages with a code link to its case page there.
    case_base: str = ""
    # How many reports and additions a reporter may send per channel (settings).
    limits: ReporterLimits = field(default_factory=ReporterLimits)
    # Who is muted, as this process knows it (refreshed every few seconds).
    muted: MutedReporters = field(default_factory=MutedReporters)


@dataclass(slots=True)
class Turn:
    """One update's worth of dialogue: read state, call services, collect replies."""

    session: AsyncSession
    conv: ConversationState
    caps: Capabilities
    services: Services
    channel: str
    chat_id: str
    update_id: str = ""
    out: list[Reply | Ack] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    # The resident had this chat forgotten (/forgetme): its state is not stored again.
    erased: bool = False
    # The case page links in this turn's messages, by the code each is for: taken out
    # again (drop_hidden_pages) for a case the public may not see.
    pages: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.conv.state

    @property
    def data(self) -> dict[str, Any]:
        return self.conv.data

    def t(self, key: str, **params: Any) -> str:
        return translate(self.conv.language, key, **params)

    def page_line(self, code: str) -> str:
        """The case page of a code, for a line in a list (see case_page_line)."""
        return self._page(case_page_line(self.services.case_base, code, self.conv.language), code)

    def _page(self, link: str, code: str | None) -> str:
        if link and code:
            self.pages[link] = code
        return link

    async def drop_hidden_pages(self) -> None:
        """Take the case page's link out of this turn's messages for each code the public
        may not see (hidden, or joined with a hidden case): it would answer 404."""
        if not self.pages:
            return
        found = await self.session.scalars(
            select(Ticket).where(Ticket.code.in_(set(self.pages.values())))
        )
        hidden = {t.code for t in found if not await is_public(self.session, t)}
        gone = [link for link, code in self.pages.items() if code in hidden]
        if not gone:
            return
        for i, message in enumerate(self.out):
            if isinstance(message, Reply):
                text = message.text
                for link in gone:
                    text = text.replace(link, "")
                self.out[i] = replace(message, text=text)

    def say(
        self,
        key: str,
        *,
        buttons: Sequence[Button] = (),
        columns: int = 1,
        request: Literal["location", "contact"] | None = None,
        request_label: str | None = None,
        remove_keyboard: bool = False,
        photo_sha256: str | None = None,
        thumbnail: bool = False,
        page: str | None = None,
        **params: Any,
    ) -> None:
        """Send the catalogue message key, with buttons laid out in rows of `columns`;
        page: a code whose public case page the message links to."""
        link = case_page_link(self.services.case_base, page, self.conv.language)
        text = self.t(key, **params) + self._page(link, page)
        # Only a channel that shows a keyboard (to share the place or the phone) has one
        # to remove.
        remove_keyboard = remove_keyboard and (
            self.caps.request_location or self.caps.request_contact
        )
        if buttons and not self.caps.inline_buttons:
            # No buttons on this channel: numbered choices, answered by typing the number
            # (handlers.text_match), or the words.
            listed = "\n".join(f"{n}. {b.label}" for n, b in enumerate(buttons, 1))
            text = f"{text}\n\n{listed}\n{self.t('choices.reply_with_number')}"
            buttons = ()
        rows = tuple(
            tuple(buttons[i : i + columns]) for i in range(0, len(buttons), max(1, columns))
        )
        last = self.out[-1] if self.out else None
        if (
            isinstance(last, Reply)
            and last == Reply(text=last.text, remove_keyboard=last.remove_keyboard)
            and photo_sha256 is None
            # Inline buttons cannot ride on a message that removes the keyboard.
            and not (last.remove_keyboard and rows and request is None)
        ):
            # An acknowledgement followed by the next prompt ("photo received" + the
            # next question) goes as one message: the resident reads it at once, and a
            # chat gets one message a second. A keyboard of the prompt's own replaces the
            # one the acknowledgement removed.
            self.out.pop()
            text = f"{last.text}\n\n{text}"
            remove_keyboard = remove_keyboard or (last.remove_keyboard and request is None)
        self.out.append(
            Reply(
                text=text,
                buttons=rows,
                request=request,
                request_label=request_label,
                remove_keyboard=remove_keyboard,
                photo_sha256=photo_sha256,
                thumbnail=thumbnail,
            )
        )

    def ack(self, callback_id: str | None, key: str | None = None) -> None:
        if callback_id is not None:
            self.out.append(Ack(callback_id, self.t(key) if key else None))

    def goto(self, state: str, **updates: Any) -> None:
        self.conv.state = state
        self.conv.data.update(updates)

    def reset(self, state: str = "idle") -> None:
        self.conv.state = state
        self.conv.data = {}
