"""The public map over real HTTP: /map/data's clusters add up to the cases in the box,
its filters, paging and "near me", what it leaves out (hidden cases, merged reports, old
answers, refused reports), hostile parameters, bounded answers, and a ward's figures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Ticket, Unit, utcnow
from backend.services.public_map import MAX_CELLS_ACROSS, POINTS_CAP, VIETNAM
from backend.web.public_map import MAP_GATE
from tests.e2e.conftest import free_port, running

API = "/map/data"
# Bỉm Sơn (Thanh Hóa) and Ba Đình (Hà Nội): two wards in two provinces.
BIM_SON, BA_DINH = "14812", "00004"
CENTRES = {BIM_SON: (20.074, 105.912), BA_DINH: (21.035, 105.83)}
COUNTRY = ",".join(map(str, VIETNAM.as_list()))
_n = count(1)


@pytest.fixture
def map_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        nominatim_url="",
        media_dir=tmp_path / "media",
        public_url=f"http://127.0.0.1:{free_port()}",
        map_tile_url="",
        stats_duty_enabled=False,
    )


@pytest.fixture
async def http(map_settings: Settings) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with running(map_settings), aiohttp.ClientSession() as session:
        yield session, map_settings.public_url or ""


async def add_case(
    s: AsyncSession,
    *,
    ward: str = BIM_SON,
    state: str = "received",
    category: str = "dumping",
    at: tuple[float, float] | None = None,
    created: datetime | None = None,
    answered_days_ago: float | None = None,
    late: bool = False,
    hidden: bool = False,
    case_id: int | None = None,
    description: str = "Bãi rác tự phát",
    polluter: str | None = None,
    reporter_id: int | None = None,
) -> Ticket:
    """A ticket as the workflow would leave it, written straight to the table."""
    now = utcnow()
    lat, lon = at or CENTRES[ward]
    unit = await s.scalar(select(Unit.id).where(Unit.ward_code == ward))
    assert unit is not None
    created = created or now - timedelta(days=20)
    answered = None if answered_days_ago is None else now - timedelta(days=answered_days_ago)
    n = next(_n)
    ticket = Ticket(
        code=f"{ward[:2]}-2612-{n:05d}",
        state=state,
        category_code=category,
        ward_code=ward,
        unit_id=unit,
        reporter_id=reporter_id,
        channel="telegram",
        description=description,
        polluter=polluter,
        nature="recurring",
        urgency="normal",
        lat=lat,
        lon=lon,
        location_source="gps",
        created_at=created,
        updated_at=created,
        due_at=None,
        answered_at=answered,
        late=late,
        hidden_at=now if hidden else None,
        hidden_reason="names a person" if hidden else None,
        case_id=case_id,
    )
    s.add(ticket)
    await s.flush()
    return ticket


@dataclass
class World:
    """Cases on the map, and tickets that must not be there."""

    shown: dict[str, Ticket] = field(default_factory=dict)
    left_out: dict[str, Ticket] = field(default_factory=dict)


async def build_world(s: AsyncSession) -> World:
    world = World()
    for i in range(4):  # open, spread around Bỉm Sơn
        t = await add_case(s, at=(20.07 + 0.002 * i, 105.91 + 0.002 * i))
        world.shown[f"bs-open-{i}"] = t
    world.shown["bs-answered"] = await add_case(
        s, state="answered", answered_days_ago=5, category="noise"
    )
    world.shown["bs-closed"] = await add_case(
        s, state="closed", answered_days_ago=80, category="burning"
    )
    world.shown["bs-reopened"] = await add_case(s, state="reopened", answered_days_ago=200)
    world.shown["bd-open"] = await add_case(s, ward=BA_DINH, state="handling")
    world.shown["bd-answered"] = await add_case(
        s, ward=BA_DINH, state="answered", answered_days_ago=1, category="noise"
    )
    case = world.shown["bs-open-0"]
    world.left_out["old-answer"] = await add_case(s, state="closed", answered_days_ago=120)
    world.left_out["hidden"] = await add_case(s, hidden=True)
    world.left_out["hidden-answered"] = await add_case(
        s, state="answered", answered_days_ago=3, hidden=True
    )
    world.left_out["merged"] = await add_case(s, state="merged", case_id=case.id)
    world.left_out["merged-open"] = await add_case(s, case_id=case.id)  # merged, any state
    world.left_out["rejected"] = await add_case(s, state="rejected")
    return world


async def get(
    http: tuple[aiohttp.ClientSession, str], path: str, **params: Any
) -> tuple[int, Any, int]:
    """Status, JSON body and size in bytes of a GET."""
    session, base = http
    async with session.get(base + path, params=params) as r:
        raw = await r.read()
        if r.content_type == "application/json":
            return r.status, json.loads(raw), len(raw)
        return r.status, raw.decode(), len(raw)


def codes(body: dict[str, Any]) -> set[str]:
    return {item["code"] for item in body["list"]["items"]}


async def all_listed(http: tuple[aiohttp.ClientSession, str], **params: Any) -> set[str]:
    status, body, _ = await get(http, API, bbox=COUNTRY, page_size=100, **params)
    assert status == 200, body
    assert body["list"]["total"] == len(body["list"]["items"])
    return codes(body)


async def test_the_map_shows_open_and_recently_answered_cases_and_nothing_else(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        world = await build_world(s)
    shown = {t.code for t in world.shown.values()}
    assert await all_listed(http) == shown
    for zoom in (5, 6, 8, 10, 12, 14):
        status, body, _ = await get(http, API, bbox=COUNTRY, zoom=zoom)
        assert status == 200
        assert sum(c["count"] for c in body["clusters"]) == len(shown) == body["total"]
        assert sum(c["open"] for c in body["clusters"]) == 6  # 4 open, reopened, handling
    # Close up, the cases come one by one, with what the public may know and no more.
    bbox = "105.90,20.06,105.93,20.09"
    status, body, _ = await get(http, API, bbox=bbox, zoom=16)
    bs = {t.code for k, t in world.shown.items() if k.startswith("bs-")}
    assert {p["code"] for p in body["points"]} == bs and body["truncated"] is False
    assert set(body["points"][0]) == {
        "code",
        "url",
        "category",
        "status",
        "status_text",
        "lat",
        "lon",
    }
    assert body["points"][0]["url"] == f"/r/{body['points'][0]['code']}"


async def test_clusters_add_up_to_the_cases_in_the_box_and_split_with_it(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        for i in range(30):
            await add_case(s, at=(19.5 + 0.05 * i, 105.0 + 0.041 * i))
    west, east = "104.9,19.4,105.6,21.2", "105.6,19.4,106.3,21.2"
    for zoom in (7, 9, 11, 13):
        totals = []
        for bbox in (west, east, "104.9,19.4,106.3,21.2"):
            status, body, _ = await get(http, API, bbox=bbox, zoom=zoom)
            assert status == 200
            assert sum(c["count"] for c in body["clusters"]) == body["total"]
            for c in body["clusters"]:
                assert 19.4 <= c["lat"] <= 21.2 and 104.9 <= c["lon"] <= 106.3
            totals.append(body["total"])
        assert totals[0] + totals[1] == totals[2] == 30
    # A finer zoom never merges more: the cells only split.
    counts = [len((await get(http, API, bbox=west, zoom=z))[1]["clusters"]) for z in (6, 9, 12)]
    assert counts == sorted(counts) and counts[-1] > counts[0]


async def test_filters_by_category_status_and_ward(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        world = await build_world(s)
    w = {k: t.code for k, t in world.shown.items()}
    assert await all_listed(http, category="noise") == {w["bs-answered"], w["bd-answered"]}
    assert await all_listed(http, status="answered") == {
        w["bs-answered"],
        w["bs-closed"],
        w["bd-answered"],
    }
    assert await all_listed(http, status="open") == {
        *(w[f"bs-open-{i}"] for i in range(4)),
        w["bs-reopened"],
        w["bd-open"],
    }
    assert await all_listed(http, ward=BA_DINH) == {w["bd-open"], w["bd-answered"]}
    assert await all_listed(http, ward=BA_DINH, status="open", category="dumping") == {w["bd-open"]}
    assert await all_listed(http, ward=BA_DINH, category="burning") == set()
    status, body, _ = await get(http, API, bbox=COUNTRY, zoom=6, ward=BIM_SON, status="answered")
    assert status == 200
    assert sum(c["count"] for c in body["clusters"]) == 2 and body["clusters"][0]["open"] == 0
    # Status in words, in the page's language.
    _, body, _ = await get(http, API, bbox=COUNTRY, ward=BA_DINH, status="answered", lang="en")
    (item,) = body["list"]["items"]
    assert item["status_text"] == "Answered" and item["url"].endswith("?lang=en")
    assert item["ward"] == "Phường Ba Đình, Hà Nội"


async def test_the_list_pages_newest_first(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = utcnow()
    async with sessions() as s, s.begin():
        made = [
            (await add_case(s, created=now - timedelta(hours=i))).code for i in range(25)
        ]  # newest first
    pages = []
    for page in (1, 2, 3, 4):
        status, body, _ = await get(http, API, bbox=COUNTRY, page=page, page_size=10)
        assert status == 200 and body["list"]["total"] == 25
        pages.append([i["code"] for i in body["list"]["items"]])
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert pages[0] + pages[1] + pages[2] == made
    status, body, _ = await get(http, API, bbox=COUNTRY, page_size=100)
    assert len(body["list"]["items"]) == 25


async def test_near_me_orders_the_list_by_distance(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        far = await add_case(s, at=(20.20, 105.95))
        near = await add_case(s, at=(20.0745, 105.9125))
        middle = await add_case(s, at=(20.10, 105.90))
        other = await add_case(s, ward=BA_DINH)
    status, body, _ = await get(http, API, bbox=COUNTRY, near="20.074,105.912")
    assert status == 200
    items = body["list"]["items"]
    assert [i["code"] for i in items] == [near.code, middle.code, far.code, other.code]
    distances = [i["distance_km"] for i in items]
    # From the public point (rounded to 3 decimals, within about 75 m of the case), to
    # 0.1 km: the nearest, 70 m from "near", is told as at most 0.2 km.
    assert distances == sorted(distances) and distances[0] <= 0.2
    assert all(round(d, 1) == d for d in distances)
    assert 100 < distances[-1] < 130  # Bỉm Sơn to Ba Đình
    _, plain, _ = await get(http, API, bbox=COUNTRY)
    assert "distance_km" not in plain["list"]["items"][0]


HOSTILE = [
    {},  # no box
    {"bbox": ""},
    {"bbox": "1,2,3"},
    {"bbox": "1,2,3,4,5"},
    {"bbox": "NaN,8,110,24"},
    {"bbox": "102,8,inf,24"},
    {"bbox": "102,8,110,-inf"},
    {"bbox": "1e999,8,110,24"},
    {"bbox": "110,8,102,24"},  # west > east
    {"bbox": "102,24,110,8"},  # south > north
    {"bbox": "102,8,102,24"},  # no width
    {"bbox": "-200,8,110,24"},
    {"bbox": "102,-95,110,24"},
    {"bbox": "a,b,c,d"},
    {"bbox": "102,8,110,24\x00"},
    {"bbox": "1" * 5000},
    {"bbox": COUNTRY, "zoom": "-1"},
    {"bbox": COUNTRY, "zoom": "20"},
    {"bbox": COUNTRY, "zoom": "6.5"},
    {"bbox": COUNTRY, "zoom": "9" * 40},
    {"bbox": COUNTRY, "zoom": "six"},
    {"bbox": COUNTRY, "page": "-1"},
    {"bbox": COUNTRY, "page": "0"},
    {"bbox": COUNTRY, "page": "--1"},
    {"bbox": COUNTRY, "page": "1e3"},
    {"bbox": COUNTRY, "page": "99999"},
    {"bbox": COUNTRY, "page_size": str(10**9)},
    {"bbox": COUNTRY, "page_size": "0"},
    {"bbox": COUNTRY, "page_size": "101"},
    {"bbox": COUNTRY, "page_size": "٣"},  # a digit, but not ASCII
    {"bbox": COUNTRY, "category": "nope"},
    {"bbox": COUNTRY, "category": "dumping\x00"},
    {"bbox": COUNTRY, "status": "closed"},
    {"bbox": COUNTRY, "status": "open' OR '1'='1"},
    {"bbox": COUNTRY, "ward": "99999"},
    {"bbox": COUNTRY, "ward": "1481"},
    {"bbox": COUNTRY, "ward": "14812\x00"},
    {"bbox": COUNTRY, "ward": "１４８１２"},  # full-width digits
    {"bbox": COUNTRY, "near": "20.0"},
    {"bbox": COUNTRY, "near": "NaN,105"},
    {"bbox": COUNTRY, "near": "20,inf"},
    {"bbox": COUNTRY, "near": "91,105"},
    {"bbox": COUNTRY, "near": "20,105,3"},
]


async def test_hostile_parameters_are_refused_with_a_reason(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        await add_case(s)
    for params in HOSTILE:
        status, body, _ = await get(http, API, **params)
        assert status == 400, params
        if isinstance(body, str):  # refused before any route
            assert body == "NUL characters are not accepted", params
        else:
            assert body["error"].startswith("bad_") and body["detail"], params
    session, base = http
    for method in ("POST", "PUT", "DELETE"):
        async with session.request(method, f"{base}{API}?bbox={COUNTRY}") as r:
            assert r.status == 405
    # Raw bytes that are not UTF-8, and a query string aiohttp would not build.
    for raw in ("bbox=%FF%FE,8,110,24", "bbox=102,8,110,24&zoom=%00", "bbox=%2C%2C%2C"):
        async with session.get(f"{base}{API}?{raw}") as r:
            assert r.status == 400


async def test_a_box_is_clipped_to_vietnam_and_the_answer_stays_small(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        for i in range(POINTS_CAP + 40):  # a dense block, 60 m apart
            await add_case(s, at=(20.06 + 0.0006 * (i % 40), 105.90 + 0.0006 * (i // 40)))
    # The whole world at the closest zoom: clipped to Vietnam, clustered at a zoom the box
    # justifies, so the cells are few.
    status, body, size = await get(http, API, bbox="-180,-90,180,90", zoom=19)
    assert status == 200 and body["bbox"] == VIETNAM.as_list()
    assert body["zoom"] < 15 and "points" not in body
    assert body["total"] == POINTS_CAP + 40 and size < 20_000
    # A box that lies outside Vietnam: nothing, and no error.
    status, body, _ = await get(http, API, bbox="2.2,48.8,2.4,48.9", zoom=12)
    assert status == 200 and body["total"] == 0 and body["clusters"] == []
    # Close up over the dense block: more than POINTS_CAP cases, so clusters, and it
    # says why; over part of it, the points alone.
    status, body, size = await get(http, API, bbox="105.89,20.05,105.93,20.09", zoom=17)
    assert body["truncated"] is True and "points" not in body
    assert sum(c["count"] for c in body["clusters"]) == body["total"] == POINTS_CAP + 40
    assert size < 100_000
    status, body, size = await get(http, API, bbox="105.89,20.05,105.93,20.0695", zoom=17)
    assert body["truncated"] is False and body["clusters"] == []
    assert len(body["points"]) == body["total"] == 16 * 14  # 16 rows of the 14 columns
    # However wide the box and high the zoom, the grid is at most MAX_CELLS_ACROSS a side.
    _, body, _ = await get(http, API, bbox="102,6,118,24", zoom=19)
    assert len(body["clusters"]) <= MAX_CELLS_ACROSS**2


async def test_a_wards_public_figures(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = utcnow()
    async with sessions() as s, s.begin():
        answered = []
        for days, late in ((1, False), (2, False), (4, True)):
            created = now - timedelta(days=30)
            t = await add_case(s, state="closed", created=created, late=late)
            t.answered_at = created + timedelta(days=days)
            answered.append(t)
        await add_case(s, state="handling")
        await add_case(s, state="rejected")
        await add_case(s, state="merged", case_id=answered[0].id)
        await add_case(s, state="answered", answered_days_ago=1, hidden=True)  # counted
        await add_case(s, created=now - timedelta(days=400))  # before the year
        await add_case(s, ward=BA_DINH)
    status, body, _ = await get(http, f"/map/wards/{BIM_SON}")
    assert status == 200
    assert (body["cases"], body["answered"], body["on_time"]) == (5, 4, 3)
    assert body["on_time_pct"] == 75.0 and body["days"] == 365
    # Median of 1, 2, 4 and the hidden case's 19 days: (2 + 4) / 2.
    assert body["median_days"] == 3.0
    assert body["name"] == "Phường Bỉm Sơn, Thanh Hóa"
    _, empty, _ = await get(http, "/map/wards/16645")
    assert (empty["cases"], empty["on_time_pct"], empty["median_days"]) == (0, None, None)
    for bad in ("99999", "1481", "x" * 300, "%F0%9F%8C%8A"):
        status, body, _ = await get(http, f"/map/wards/{bad}")
        assert status == 404 and body["error"] == "unknown_ward"
    status, _, _ = await get(http, f"/map/wards/{quote('14812' + chr(0))}")
    assert status == 400  # NUL bytes are refused before any route
    session, base = http
    async with session.get(f"{base}/map", params={"ward": BIM_SON, "lang": "en"}) as r:
        page = await r.text()
    assert r.status == 200 and "Public figures" in page
    assert '<dd class="ward-cases">5</dd>' in page
    assert '<dd class="ward-on-time">75.0 %</dd>' in page
    assert '<dd class="ward-median">3.0</dd>' in page
    async with session.get(f"{base}/map", params={"ward": BIM_SON}) as r:
        page = await r.text()
    assert '<dd class="ward-on-time">75,0 %</dd>' in page  # a decimal comma in Vietnamese
    assert "Số liệu công khai" in page and "365 ngày qua" in page


async def test_the_province_ward_list(http: tuple[aiohttp.ClientSession, str]) -> None:
    status, body, _ = await get(http, "/map/wards", province="38")
    names = {w["code"]: w["name"] for w in body["wards"]}
    assert status == 200 and names[BIM_SON] == "Phường Bỉm Sơn" and BA_DINH not in names
    for bad in ("", "3", "999", "3\x00", "٣٨"):
        status, body, _ = await get(http, "/map/wards", province=bad)
        # A NUL is refused before the handler, in JSON too.
        assert status == 400 and body["error"] == (
            "bad_request" if "\x00" in bad else "bad_province"
        )
    status, body, _ = await get(http, "/map/wards", province="99")
    assert status == 200 and body["wards"] == []


async def test_the_map_page_lists_cases_and_keeps_filters(
    http: tuple[aiohttp.ClientSession, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        world = await build_world(s)
    session, base = http
    async with session.get(f"{base}/map") as r:
        page = await r.text()
    assert r.status == 200
    assert "90 ngày qua" in page  # what "recently" means, said on the page
    for t in world.shown.values():
        assert f'href="/r/{t.code}"' in page
    for t in world.left_out.values():
        assert t.code not in page
    async with session.get(f"{base}/map", params={"category": "noise", "lang": "en"}) as r:
        page = await r.text()
    assert '<option value="noise" selected>' in page
    assert world.shown["bd-answered"].code in page and world.shown["bd-open"].code not in page
    # A hand-made link with a bad filter shows everything rather than failing.
    for junk in ({"ward": "99999"}, {"category": "x"}, {"status": "x" * 3000}):
        async with session.get(f"{base}/map", params=junk) as r:
            assert r.status == 200 and world.shown["bd-open"].code in await r.text()


async def test_a_flood_of_map_views_waits_its_turn_then_is_told_to_come_back(
    map_settings: Settings,
) -> None:
    """The map's queries run a few at a time per process: one that cannot get its turn
    within the wait is answered 503 with Retry-After, and the next is served."""
    settings = map_settings.model_copy(update={"map_queries_at_once": 1, "map_query_wait": 0.2})
    base = settings.public_url or ""
    box = f"{API}?bbox={COUNTRY}&zoom=6"
    async with running(settings) as app, aiohttp.ClientSession() as http:
        async with app[MAP_GATE].turn():  # the one turn, held by a slow query
            for path in (box, f"/map/wards/{BIM_SON}", "/map"):
                async with http.get(f"{base}{path}") as r:
                    assert r.status == 503, path
                    assert r.headers["Retry-After"] == "5"
                    assert (await r.json())["error"] == "busy"
        for path in (box, f"/map/wards/{BIM_SON}", "/map"):
            async with http.get(f"{base}{path}") as r:
                assert r.status == 200, path
