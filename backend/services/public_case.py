"""What the public case page (/r/{code}) may show of a ticket, chosen field by field.

Nothing here reads the reporter, the description, the polluter, internal notes, EXIF or
staff accounts: the page is built from a whitelist, and the history from a whitelist of
audit actions said in public words (never the staff timeline, which names staff and
shows typed reasons).
"""

from __future__ import annotations

import asyncio
import io
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, ImageFilter
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.geo import public_point
from backend.models import AuditEvent, Category, Photo, Province, Ticket, Unit, Ward
from backend.services.intake import is_approximate
from backend.services.tickets import is_public
from backend.services.workflow import OPEN_STATES, REJECT_REASONS

# A tracking code: province, yymm, sequence ("38-2612-00042"). Anything else is not
# looked up at all.
CODE = re.compile(r"^\d{2}-\d{4}-\d{5,8}$")

# Audit actions said on the public page, and the public words for each (keys in the
# public catalogue, "public.step.<action>"). Every other action (notes, identity
# look-ups, ratings, escalations, additions, hiding, publishing) stays internal.
PUBLIC_STEPS = frozenset(
    {
        "submit",
        "classify",
        "assign",
        "claim",
        "verify",
        "confirm",
        "not_confirmed",
        "answer",
        "close",
        "reopen",
        "reject",
        "transfer",
        "extend",
        "mark_complex",
        "merge",
        # Only when it sent the ticket to another unit (its note names the unit).
        "reclassify",
    }
)
# The steps with a due time of their own: classify (or reject), forward, take up, answer.
TIMED_STEPS = frozenset({"classify", "reject", "assign", "claim", "answer"})
# What the next step is, by the state the ticket waits in.
NEXT_STEP = {
    "received": "classify",
    "classified": "assign",
    "assigned": "claim",
    "transferred": "claim",
    "reopened": "claim",
    "claimed": "answer",
    "verifying": "answer",
    "handling": "answer",
    "not_confirmed": "answer",
}
_EXTENDED_TO = re.compile(r"^.*? → (.*?): ", re.S)
_MOVED_TO = re.compile(r"^\S+ → (\S+): ", re.S)
_SENT_TO = re.compile(r"; unit=(\S+)$")


@dataclass(frozen=True, slots=True)
class PublicStep:
    at: datetime
    action: str
    # Words to fill in: a unit's name, a rejection reason's key, an extended date.
    unit: str | None = None
    reason_key: str | None = None
    until: str | None = None
    due: datetime | None = None

    @property
    def on_time(self) -> bool | None:
        """Whether the step was taken by its due time; None when nothing was due."""
        return None if self.due is None else self.at <= self.due


@dataclass(frozen=True, slots=True)
class PublicPhoto:
    id: int
    kind: str  # evidence · result
    public: bool


@dataclass(frozen=True, slots=True)
class PublicCase:
    code: str
    received_at: datetime
    category_vi: str
    category_en: str
    ward: str
    province: str
    point: tuple[float, float] | None
    state: str
    steps: list[PublicStep]
    next_step: str | None
    next_due: datetime | None
    answer: str | None
    answered_at: datetime | None
    photos: list[PublicPhoto]
    # Set when this report was joined with others into a case: the case's code and how
    # many reports it has in all.
    case_code: str | None = None
    case_reports: int = 0


def well_formed(code: str) -> bool:
    return len(code) <= 20 and CODE.match(code) is not None


async def visible_ticket(session: AsyncSession, code: str) -> tuple[Ticket, Ticket] | None:
    """(the report with this code, the case it follows: itself or the case it was joined
    with), or None when unknown, malformed or hidden (the report or its case)."""
    if not well_formed(code):
        return None
    ticket = await session.scalar(select(Ticket).where(Ticket.code == code))
    if ticket is None or not await is_public(session, ticket):
        return None
    # Loaded by is_public already: from the session, with no query.
    case = await session.get(Ticket, ticket.case_id) if ticket.case_id is not None else ticket
    return (ticket, case) if case is not None else None


def _unit_code(event: AuditEvent) -> str | None:
    """The code of the unit a step sent the ticket to: forwarded (assign), passed on by
    competence (transfer), or sent elsewhere by a reclassification; else None."""
    note = event.note or ""
    if event.action == "assign":
        return note
    found = None
    if event.action == "transfer":
        found = _MOVED_TO.match(note)
    elif event.action == "reclassify":
        found = _SENT_TO.search(note)
    return found[1] if found else None


def _step(event: AuditEvent, units: dict[str, str]) -> PublicStep:
    unit = reason = until = None
    note = event.note or ""
    if (sent_to := _unit_code(event)) is not None:
        unit = units.get(sent_to)
    elif event.action == "reject":
        code = note.partition(": ")[0]
        reason = f"public.reject.{code}" if code in REJECT_REASONS else "public.reject.other"
    elif event.action == "extend" and (m := _EXTENDED_TO.match(note)):
        until = m[1]
    # Only the steps the regulation times are measured against the due time in force
    # (verification runs within the answer's time, and is not a step of its own).
    timed = event.action in TIMED_STEPS
    action = event.action
    if action == "reopen" and not event.actor.startswith("reporter:"):
        action = "reopen_by_staff"  # not the reporter's word that it was not fixed
    return PublicStep(
        at=event.created_at,
        action=action,
        unit=unit,
        reason_key=reason,
        until=until,
        due=event.due_by if timed else None,
    )


async def public_steps(session: AsyncSession, tickets: list[Ticket]) -> list[PublicStep]:
    """The public history of these tickets' audit trails, in time order."""
    events = list(
        await session.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.ticket_id.in_([t.id for t in tickets]),
                AuditEvent.action.in_(PUBLIC_STEPS),
            )
            .order_by(AuditEvent.created_at, AuditEvent.id)
        )
    )
    # A reclassification that kept the unit is internal (the urgency, say).
    events = [e for e in events if e.action != "reclassify" or _unit_code(e) is not None]
    codes = {code for e in events if (code := _unit_code(e)) is not None}
    units = {
        u.code: u.name for u in await session.scalars(select(Unit).where(Unit.code.in_(codes)))
    }
    return [_step(e, units) for e in events]


async def public_case(session: AsyncSession, ticket: Ticket, case: Ticket) -> PublicCase:
    """The page's content for a visible report (see visible_ticket)."""
    ward = await session.get(Ward, ticket.ward_code)
    province = await session.get(Province, ward.province_code) if ward else None
    category = await session.get(Category, ticket.category_code)
    joined = case.id != ticket.id
    # A joined report: its own receipt and joining, then the case's progress.
    if joined:
        # Its own receipt and joining, with the case's progress (not the case's receipt,
        # which is another resident's).
        own = await public_steps(session, [ticket])
        theirs = [s for s in await public_steps(session, [case]) if s.action != "submit"]
        steps = sorted(own + theirs, key=lambda s: s.at)
    else:
        steps = await public_steps(session, [case])
    photos = list(
        await session.scalars(
            select(Photo)
            .where(Photo.ticket_id.in_({ticket.id, case.id}))
            .order_by(Photo.ticket_id != ticket.id, Photo.id)
        )
    )
    shown = [
        PublicPhoto(p.id, "result" if p.kind == "result" else "evidence", p.public)
        for p in photos
        if p.kind != "result" or p.public
    ]
    point = None
    if not is_approximate(ticket.location_source):
        # Rounded to about a hundred metres: where, not whose door. Never the address
        # text: it may be what someone typed (naming people, a phone, the polluter).
        point = public_point(ticket.lat, ticket.lon)
    reports = 0
    if joined:
        # The case and its reports the public may see (a hidden one is not counted).
        reports = 1 + int(
            await session.scalar(
                select(func.count()).where(Ticket.case_id == case.id, Ticket.hidden_at.is_(None))
            )
            or 0
        )
    waiting = case.state in OPEN_STATES
    return PublicCase(
        code=ticket.code,
        received_at=ticket.created_at,
        category_vi=category.name_vi if category else ticket.category_code,
        category_en=category.name_en if category else ticket.category_code,
        ward=ward.name if ward else ticket.ward_code,
        province=province.name if province else "",
        point=point,
        state=case.state,
        steps=steps,
        next_step=NEXT_STEP.get(case.state) if waiting else None,
        next_due=case.due_at if waiting else None,
        answer=case.result_text if case.answered_at is not None else None,
        answered_at=case.answered_at,
        photos=shown,
        case_code=case.code if joined else None,
        case_reports=reports,
    )


async def public_photo(
    session: AsyncSession, ticket: Ticket, case: Ticket, photo_id: int
) -> Photo | None:
    """A photo of this visible report or its case that the page shows (a result photo
    only once published), or None."""
    photo = await session.get(Photo, photo_id)
    if photo is None or photo.ticket_id not in (ticket.id, case.id):
        return None
    if photo.kind == "result" and not photo.public:
        return None
    return photo


# The blurred stand-in: this small, and this blurred, whatever the original.
BLUR_WIDTH = 240
BLUR_SHRINK = 16


def _blurred(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as opened:
        # A JPEG is decoded at a fraction of its size: the copy is small anyway.
        opened.draft("RGB", (BLUR_WIDTH, BLUR_WIDTH))
        image = opened.convert("RGB")
    image.thumbnail((BLUR_WIDTH, BLUR_WIDTH))
    # Shrunk to a few pixels and blown up again: faces and number plates cannot be read
    # back, only the colours and shapes of the scene.
    tiny = image.resize(
        (max(1, image.width // BLUR_SHRINK), max(1, image.height // BLUR_SHRINK)),
        Image.Resampling.BOX,
    )
    image = tiny.resize(image.size, Image.Resampling.BILINEAR).filter(
        ImageFilter.GaussianBlur(radius=6)
    )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=60)
    return out.getvalue()


# Blurred copies made lately, by photo (content-addressed, so never stale): a page
# opened again does not blur its photos again. Small: about 2 kB each.
_MADE: OrderedDict[str, bytes] = OrderedDict()
KEEP_BLURRED = 512


async def blurred(sha256: str, data: bytes) -> bytes:
    """A small, strongly blurred JPEG of a stored photo (made off the event loop)."""
    if (made := _MADE.get(sha256)) is not None:
        _MADE.move_to_end(sha256)
        return made
    made = await asyncio.to_thread(_blurred, data)
    _MADE[sha256] = made
    while len(_MADE) > KEEP_BLURRED:
        _MADE.popitem(last=False)
    return made
