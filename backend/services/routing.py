"""Which unit handles a report: the category's default handler over the ward's area."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Category, Unit, Ward
from backend.services.units import (
    MINISTRY_CODE,
    police_unit_code,
    province_unit_code,
    ward_unit_code,
)


class RoutingError(LookupError):
    pass


COMPETENCES = ("ward", "province", "ministry", "police")


async def unit_for(session: AsyncSession, competence: str, ward_code: str) -> Unit:
    """The unit with a competence (Điều 6) over a ward: its committee, the province's Sở
    NN&MT or police, or the ministry."""
    ward = await session.get(Ward, ward_code)
    if ward is None:
        raise RoutingError(f"unknown ward {ward_code!r}")
    codes = {
        "ward": ward_unit_code(ward.code),
        "province": province_unit_code(ward.province_code),
        "police": police_unit_code(ward.province_code),
        "ministry": MINISTRY_CODE,
    }
    if competence not in codes:
        raise RoutingError(f"unknown competence {competence!r}")
    unit = await session.scalar(select(Unit).where(Unit.code == codes[competence]))
    if unit is None:
        raise RoutingError(f"no unit {codes[competence]}: run `hotline import-units`")
    return unit


async def default_competence(session: AsyncSession, category_code: str) -> str:
    category = await session.get(Category, category_code)
    if category is None:
        raise RoutingError(f"unknown category {category_code!r}")
    return category.default_handler


async def route(session: AsyncSession, category_code: str, ward_code: str) -> Unit:
    """The handling unit for a category at a ward (Điều 6 competence, by default)."""
    return await unit_for(session, await default_competence(session, category_code), ward_code)
