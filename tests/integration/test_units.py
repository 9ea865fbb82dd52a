"""Administrative units: the import, routing by nearest centroid, typed names."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Category, Province, Unit, Ward
from backend.services.routing import route
from backend.services.units import WardIndex, import_units


async def test_import_is_complete_and_idempotent(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        again = await import_units(session)
    assert (again.provinces, again.wards) == (34, 3321)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Province)) == 34
        assert await session.scalar(select(func.count()).select_from(Ward)) == 3321
        assert await session.scalar(select(func.count()).select_from(Unit)) == again.units
        ward = await session.get(Ward, "14812")
        hanoi = await session.get(Province, "01")
    assert ward is not None and ward.name == "Phường Bỉm Sơn" and ward.province_code == "38"
    assert ward.area_km2 is not None and abs(ward.lat - 20.074) < 1e-6
    assert hanoi is not None and hanoi.short_name == "Hà Nội"


async def test_categories_are_seeded_with_handlers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        cats = {c.code: c for c in await session.scalars(select(Category))}
    assert len(cats) == 13
    assert cats["emissions"].default_handler == "province"
    assert cats["truck"].default_handler == "police"
    assert cats["hazardous"].notify_police
    assert cats["dumping"].name_en == "Illegal dumping of household waste"


async def test_routing_follows_the_category(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        ward_unit = await route(session, "dumping", "14812")
        province_unit = await route(session, "emissions", "14812")
        police = await route(session, "truck", "14812")
    assert ward_unit.name == "UBND Phường Bỉm Sơn"
    assert province_unit.kind == "province_department" and province_unit.province_code == "38"
    assert police.kind == "police" and police.name == "Công an tỉnh Thanh Hóa"


async def test_nearest_wards_and_name_search(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        index = await WardIndex.load(session)
    nearest = index.nearest(20.0740, 105.9120)
    assert nearest[0].ward.code == "14812"
    assert nearest[0].distance_km < 0.1 and len(nearest) == 3
    assert index.covers(21.0285, 105.8542)  # Hà Nội
    assert index.covers(10.7769, 106.7009)  # TP Hồ Chí Minh
    assert not index.covers(13.7563, 100.5018)  # Bangkok
    assert not index.covers(22.3193, 114.1694)  # Hong Kong
    assert [w.code for w in index.search("Phường Bỉm Sơn")] == ["14812"]
    assert index.search("bim son", near=(20.07, 105.91))[0].code == "14812"
    assert index.search("x") == []
