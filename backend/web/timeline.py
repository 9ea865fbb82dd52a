"""A ticket's audit trail in words, for its page: what was done, by whom (the staff
member's name, role and unit; the reporter; the system), and why.

The trail stores short machine notes ("urgency=urgent; competence=ward", a unit's code,
"telegram; 2 photo(s)"); they are read here, and any other note (a reason typed by
staff) is shown as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import AuditEvent, Reporter, Unit, User
from backend.services.privacy import UNSEAL, UNSEAL_READERS

Translate = Callable[..., str]

_SUBMIT = re.compile(r"^(\w+); (\d+) photo\(s\)$")
_CLASSIFY = re.compile(r"^urgency=(\w+); competence=(\w+)(?:; unit=(\S+))?$")
_MOVE = re.compile(r"^(\S+) → (\S+): (.*)$", re.S)
_EXTEND = re.compile(r"^(.*?) → (.*?): (.*)$", re.S)
_STAFF = re.compile(r"^user:(\d+)$")
_REPORTER = re.compile(r"^reporter:(\d+)$")
_PHOTO = re.compile(r"^(evidence|addition|result) (\d+)$")
# Notes written by the system in English, said in words.
_FIXED_NOTES = {
    "not fixed (reporter)": "timeline.note.not_fixed",
    "reopen window over": "timeline.note.window_over",
}
# Who may see which staff member looked at a reporter's identity (as on /privacy).


def _unit_codes(note: str | None, action: str) -> list[str]:
    """The unit codes a note names: the unit forwarded to, or a transfer's two units."""
    if not note:
        return []
    if action == "assign":
        return [note]
    if action == "transfer" and (m := _MOVE.match(note)):
        return [m[1], m[2]]
    return []


@dataclass(frozen=True, slots=True)
class Step:
    at: datetime
    what: str
    who: str
    state: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class Names:
    """What the events' actors and notes refer to."""

    users: Mapping[int, User]
    units: Mapping[str, Unit]
    # Reporter id → pseudonym.
    reporters: Mapping[int, str]


async def names_for(session: AsyncSession, events: Iterable[AuditEvent]) -> Names:
    """The staff and reporters the events name, and the units (by code) of those staff
    and of the notes."""
    events = list(events)
    ids = {int(m.group(1)) for e in events if (m := _STAFF.match(e.actor))}
    users = {u.id: u for u in await session.scalars(select(User).where(User.id.in_(ids)))}
    codes = {c for e in events for c in _unit_codes(e.note, e.action)}
    unit_ids = {u.unit_id for u in users.values() if u.unit_id is not None}
    units = await session.scalars(
        select(Unit).where(or_(Unit.code.in_(codes), Unit.id.in_(unit_ids)))
    )
    reporter_ids = {int(m.group(1)) for e in events if (m := _REPORTER.match(e.actor))}
    pseudonyms = await session.execute(
        select(Reporter.id, Reporter.pseudonym).where(Reporter.id.in_(reporter_ids))
    )
    return Names(users, {u.code: u for u in units}, {rid: name for rid, name in pseudonyms})


def describe(
    events: Iterable[AuditEvent],
    names: Names,
    t: Translate,
    known: Mapping[str, Any],
    reader_role: str,
) -> list[Step]:
    """The steps in words, for a reader of this role."""
    users, units = names.users, names.units
    units_by_id = {u.id: u for u in units.values()}

    def label(prefix: str, key: str) -> str:
        return t(f"{prefix}.{key}") if f"{prefix}.{key}" in known else key

    def unit_name(code: str) -> str:
        unit = units.get(code)
        return unit.name if unit is not None else code

    def who(event: AuditEvent) -> str:
        actor = event.actor
        if event.action == UNSEAL and reader_role not in UNSEAL_READERS:
            # Who looked is for supervisors and admins: others see the role only.
            looker = users.get(int(m[1])) if (m := _STAFF.match(actor)) else None
            return label("role", looker.role) if looker else t("timeline.who.staff")
        if (m := _REPORTER.match(actor)) and int(m[1]) in names.reporters:
            # The reporters of a case are told apart by their pseudonyms.
            return t("timeline.who.reporter_n", pseudonym=names.reporters[int(m[1])])
        if m := _STAFF.match(actor):
            user = users.get(int(m.group(1)))
            if user is None:
                return t("timeline.who.staff")
            unit = units_by_id.get(user.unit_id) if user.unit_id is not None else None
            role = label("role", user.role)
            where = f", {unit.name}" if unit is not None else ""
            return f"{user.display_name} ({role}{where})"
        kind = actor.split(":", 1)[0]
        if f"timeline.who.{kind}" in known:
            return t(f"timeline.who.{kind}")
        return label("role", kind)

    def detail(event: AuditEvent) -> str | None:
        note = event.note
        if not note:
            return None
        if note in _FIXED_NOTES:
            return t(_FIXED_NOTES[note])
        if event.action == "submit" and (m := _SUBMIT.match(note)):
            return t("timeline.note.submit", channel=label("channel", m[1]), photos=int(m[2]))
        if event.action in ("classify", "reclassify") and (m := _CLASSIFY.match(note)):
            competence = m[2] if m[2] != "default" else "by_category"
            return t(
                "timeline.note.classify",
                urgency=label("urgency", m[1]),
                competence=label("competence", competence),
            )
        if event.action == "assign" and note in units:
            return t("timeline.note.assign", unit=unit_name(note))
        if event.action == "transfer" and (m := _MOVE.match(note)):
            return t(
                "timeline.note.transfer", before=unit_name(m[1]), after=unit_name(m[2]), why=m[3]
            )
        if event.action == "extend" and (m := _EXTEND.match(note)):
            return t("timeline.note.extend", before=m[1], after=m[2], why=m[3])
        if event.action == "reject":
            reason, _, words = note.partition(": ")
            return f"{label('reject', reason)}: {words}" if words else label("reject", reason)
        if event.action == "merge":
            return t("timeline.note.merge", case=note)
        if event.action == "rate":
            return t("timeline.note.rate", stars=note)
        if event.action in ("publish_photo", "unpublish_photo") and (m := _PHOTO.match(note)):
            return t("timeline.note.photo", kind=label("photo_kind", m[1]), id=m[2])
        if event.action == "escalate" and note.startswith("due "):
            return t("timeline.note.escalate", due=note[4:])
        return note

    return [
        Step(
            at=e.created_at,
            what=label("action", e.action),
            who=who(e),
            state=e.to_state if e.to_state and e.to_state != e.from_state else None,
            detail=detail(e),
        )
        for e in events
    ]
