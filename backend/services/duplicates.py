"""Open cases near a new report: the same pile of rubbish should join its first report.

An indexed bounding box (category, latitude, longitude) narrows the search on SQLite and
PostgreSQL alike, without PostGIS; the great-circle distance then decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.geo import EARTH_RADIUS_KM, haversine_km
from backend.models import Photo, Ticket
from backend.services.deadlines import Policies
from backend.services.workflow import OPEN_STATES, Action, Actor, apply

# A case still being worked on, or answered and open to reopening.
CASE_STATES = (*OPEN_STATES, "answered")
METRES_PER_DEGREE = EARTH_RADIUS_KM * 1000 * math.pi / 180


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    radius_m: float = 150.0
    days: int = 30
    per_category: Mapping[str, float] = field(default_factory=dict)
    limit: int = 3

    def radius(self, category_code: str) -> float:
        return self.per_category.get(category_code, self.radius_m)


@dataclass(frozen=True, slots=True)
class NearbyCase:
    ticket_id: int
    code: str
    state: str
    nature: str
    distance_m: float
    created_at: datetime
    photo_sha256: str | None


def bounding_box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(south, north, west, east) holding every point within radius_m of (lat, lon)."""
    dlat = radius_m / METRES_PER_DEGREE
    dlon = dlat / max(math.cos(math.radians(min(abs(lat) + dlat, 89.9))), 1e-6)
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


async def nearby_cases(
    session: AsyncSession,
    category_code: str,
    lat: float,
    lon: float,
    now: datetime,
    rule: DuplicateRule,
) -> list[NearbyCase]:
    """Up to rule.limit open cases of the category within its radius, nearest first:
    offered to a resident, so only what the public may see. A case hidden from the
    public is left out (a case joins nothing, so its own flag is the whole rule of
    tickets.public_where), and its photo is one staff published, or none."""
    radius = rule.radius(category_code)
    south, north, west, east = bounding_box(lat, lon, radius)
    rows = await session.execute(
        select(
            Ticket.id,
            Ticket.code,
            Ticket.state,
            Ticket.nature,
            Ticket.lat,
            Ticket.lon,
            Ticket.created_at,
        )
        .where(
            Ticket.category_code == category_code,
            Ticket.lat.between(south, north),
            Ticket.lon.between(west, east),
            Ticket.state.in_(CASE_STATES),
            Ticket.case_id.is_(None),
            Ticket.hidden_at.is_(None),
            Ticket.created_at >= now - timedelta(days=rule.days),
        )
        .limit(500)
    )
    near = []
    for tid, code, state, nature, tlat, tlon, created in rows:
        metres = haversine_km(lat, lon, tlat, tlon) * 1000
        if metres <= radius:
            near.append((metres, tid, code, state, nature, created))
    near.sort()
    near = near[: rule.limit]
    photos: dict[int, str] = {}
    if near:
        for tid, sha in await session.execute(
            select(Photo.ticket_id, Photo.sha256)
            .where(
                Photo.ticket_id.in_([n[1] for n in near]),
                Photo.kind == "evidence",
                Photo.public.is_(True),
            )
            .order_by(Photo.id.desc())
        ):
            photos[tid] = sha  # the first photo wins: rows come last to first
    return [
        NearbyCase(tid, code, state, nature, metres, created, photos.get(tid))
        for metres, tid, code, state, nature, created in near
    ]


async def join_case(
    session: AsyncSession, ticket_id: int, case_code: str, policies: Policies, now: datetime
) -> Ticket:
    """Merge a new report into the case its reporter said it repeats."""
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        raise LookupError(ticket_id)
    return await apply(
        session,
        ticket,
        Action("merge", case_code=case_code, note="reporter: same problem"),
        Actor.system(),
        policies,
        now=now,
    )
