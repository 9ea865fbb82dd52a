"""Which unit handles a report: the category's default handler over the ward's area."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Category, Unit, Ward
from backend.services.units import police_unit_code, province_unit_code, ward_unit_code


class RoutingError(LookupError):
    pass


async def route(session: AsyncSession, category_code: str, ward_code: str) -> Unit:
    """The handling unit for a category at a ward (Điều 6 competence, by default)."""
    category = await session.get(Category, category_code)
    ward = await session.get(Ward, ward_code)
    if category is None or ward is None:
        raise RoutingError(f"unknown category {category_code!r} or ward {ward_code!r}")
    unit_code = {
        "ward": ward_unit_code(ward.code),
        "province": province_unit_code(ward.province_code),
        "police": police_unit_code(ward.province_code),
    }[category.default_handler]
    unit = await session.scalar(select(Unit).where(Unit.code == unit_code))
    if unit is None:
        raise RoutingError(f"no unit {unit_code}: run `hotline import-units`")
    return unit
