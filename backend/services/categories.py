"""The pollution categories and their default handlers (DOMAIN.md)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Category
from backend.services.upsert import upsert


@dataclass(frozen=True, slots=True)
class CategorySeed:
    code: str
    name_vi: str
    name_en: str
    default_handler: str
    notify_police: bool = False


CATEGORIES: tuple[CategorySeed, ...] = (
    CategorySeed(
        "dumping",
        "Đổ rác, xả rác trái phép",
        "Illegal dumping of household waste",
        "ward",
    ),
    CategorySeed(
        "debris",
        "Phế thải xây dựng trên đường, vỉa hè",
        "Construction debris on roads",
        "ward",
    ),
    CategorySeed(
        "wastewater",
        "Xả nước thải ra ao, hồ, kênh, mương",
        "Wastewater discharge",
        "ward",
    ),
    CategorySeed(
        "emissions",
        "Khói, bụi, khí thải từ cơ sở sản xuất",
        "Smoke, dust, emissions",
        "province",
    ),
    CategorySeed("burning", "Đốt rác, đốt rơm rạ", "Open burning", "ward"),
    CategorySeed("noise", "Tiếng ồn", "Noise", "ward"),
    CategorySeed("livestock", "Chất thải chăn nuôi", "Livestock waste", "ward"),
    CategorySeed(
        "pesticide",
        "Vỏ chai, bao bì thuốc BVTV vứt bừa bãi",
        "Discarded pesticide containers",
        "ward",
    ),
    CategorySeed(
        "hazardous",
        "Chất thải nguy hại, y tế",
        "Hazardous or medical waste",
        "province",
        notify_police=True,
    ),
    CategorySeed(
        "truck",
        "Xe chở vật liệu không che chắn, rơi vãi",
        "Uncovered trucks spilling loads",
        "police",
    ),
    CategorySeed(
        "mining",
        "Khai thác cát, khoáng sản trái phép",
        "Illegal sand or mineral mining",
        "province",
        notify_police=True,
    ),
    CategorySeed(
        "forest",
        "Chặt phá rừng, lấn chiếm đất rừng",
        "Forest clearing",
        "ward",
    ),
    CategorySeed("other", "Khác", "Other pollution", "ward"),
)


async def seed_categories(session: AsyncSession) -> int:
    """Insert or refresh the built-in categories; returns how many there are."""
    rows = [
        {
            "code": c.code,
            "name_vi": c.name_vi,
            "name_en": c.name_en,
            "default_handler": c.default_handler,
            "notify_police": c.notify_police,
            "sort_order": i,
        }
        for i, c in enumerate(CATEGORIES)
    ]
    await upsert(session, Category, rows, ["code"])
    return len(rows)


async def list_categories(session: AsyncSession) -> list[Category]:
    result = await session.scalars(select(Category).order_by(Category.sort_order))
    return list(result)
