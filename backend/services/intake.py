"""Intake (tiếp nhận): a confirmed report becomes a routed ticket with a tracking code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import AuditEvent, Photo, Province, Ticket, TicketCounter, Ward
from backend.services.deadlines import Policies
from backend.services.reporters import set_phone
from backend.services.routing import route
from backend.services.upsert import insert_for
from backend.services.webhooks import CREATED, ticket_event
from backend.timeutil import local


@dataclass(frozen=True, slots=True)
class ReportDraft:
    category_code: str
    ward_code: str
    lat: float
    lon: float
    location_source: str
    description: str
    nature: str
    polluter: str | None = None
    phone: str | None = None
    photos: list[dict[str, Any]] = field(default_factory=list)
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Submitted:
    ticket_id: int
    code: str
    unit_name: str
    ward_name: str
    province_name: str
    urgency: str
    due_at: datetime


# Where the place came from when it is only the ward's centre (a ward picked or named,
# no point): shown as approximate wherever the place is.
APPROXIMATE_SOURCES = frozenset({"ward_pick", "ward_name"})


def is_approximate(location_source: str) -> bool:
    return location_source in APPROXIMATE_SOURCES


# Categories urgent whatever the nature: hazardous or medical waste is a police matter
# and spreads harm before anyone can classify it (DOMAIN.md, competence).
URGENT_CATEGORIES = frozenset({"hazardous"})


def suggest_urgency(category_code: str, nature: str) -> str:
    """Điều 6: a sudden one-off event is urgent; a recurring one within a commune is
    normal; some categories are urgent either way. An operator may change it."""
    if category_code in URGENT_CATEGORIES or nature == "one_off":
        return "urgent"
    return "normal"


def photo_rows(
    ticket_id: int, photos: Sequence[dict[str, Any]], kind: str, now: datetime
) -> list[Photo]:
    """Photo rows for stored images (StoredImage.as_dict()), with their sealed EXIF."""
    rows = []
    for p in photos:
        lat, lon = p.get("gps") or (None, None)
        exif = {"lat": lat, "lon": lon, "taken_at": p.get("taken_at")}
        rows.append(
            Photo(
                ticket_id=ticket_id,
                sha256=p["sha256"],
                content_type=p["content_type"],
                width=p["width"],
                height=p["height"],
                size_bytes=p["size_bytes"],
                exif=exif if any(v is not None for v in exif.values()) else None,
                kind=kind,
                created_at=now,
            )
        )
    return rows


async def next_code(session: AsyncSession, province_code: str, now: datetime) -> str:
    """`<province>-<yymm>-<seq>`, the sequence restarting each month per province."""
    period = local(now).strftime("%y%m")
    stmt = insert_for(session, TicketCounter).values(
        province_code=province_code, period=period, value=1
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["province_code", "period"],
        set_={"value": TicketCounter.value + 1},
    ).returning(TicketCounter.value)
    seq = (await session.execute(stmt)).scalar_one()
    return f"{province_code}-{period}-{seq:05d}"


async def submit_report(
    session: AsyncSession,
    draft: ReportDraft,
    *,
    reporter_id: int | None,
    channel: str,
    now: datetime,
    policies: Policies | None = None,
) -> Submitted:
    """Store the ticket, route it, give it a code and start the classification clock."""
    ward = await session.get(Ward, draft.ward_code)
    if ward is None:
        raise LookupError(f"unknown ward {draft.ward_code}")
    province = await session.get(Province, ward.province_code)
    if province is None:
        raise LookupError(f"unknown province {ward.province_code}")
    unit = await route(session, draft.category_code, ward.code)
    urgency = suggest_urgency(draft.category_code, draft.nature)
    policy = (policies or Policies.load()).for_province(ward.province_code)
    due_at = policy.classify_due(now, urgency)
    ticket = Ticket(
        code=await next_code(session, ward.province_code, now),
        state="received",
        category_code=draft.category_code,
        ward_code=ward.code,
        unit_id=unit.id,
        reporter_id=reporter_id,
        channel=channel,
        description=draft.description,
        polluter=draft.polluter,
        nature=draft.nature,
        urgency=urgency,
        lat=draft.lat,
        lon=draft.lon,
        location_source=draft.location_source,
        address=draft.address,
        created_at=now,
        updated_at=now,
        due_at=due_at,
    )
    session.add(ticket)
    await session.flush()
    session.add_all(photo_rows(ticket.id, draft.photos, "evidence", now))
    session.add(
        AuditEvent(
            ticket_id=ticket.id,
            actor="reporter" if reporter_id is not None else "system",
            action="submit",
            from_state=None,
            to_state="received",
            note=f"{channel}; {len(draft.photos)} photo(s)",
            created_at=now,
        )
    )
    if reporter_id is not None:
        await set_phone(session, reporter_id, draft.phone)
    await ticket_event(session, ticket, CREATED, now)
    return Submitted(
        ticket_id=ticket.id,
        code=ticket.code,
        unit_name=unit.name,
        ward_name=ward.name,
        province_name=province.short_name,
        urgency=urgency,
        due_at=due_at,
    )
