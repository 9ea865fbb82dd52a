"""The public map's query over 1,000,000 tickets, on SQLite and on PostgreSQL, against
hand-written SQL doing the same on the bare driver, in the same run.

Three years of tickets (November 2023 to November 2026) over all 3,321 wards, denser in
some wards than others, each point scattered around its ward's centre: most answered
and closed long ago, some open, some answered in the last 90 days (what the map shows),
7 % merged into a case, 8 % rejected, 0.5 % hidden. They go in through executemany on
sqlite3 and COPY on asyncpg, in batches, so the loader's memory stays small.

Timed for typical views: the whole country at zoom 6, a province (Hà Nội) at zoom 10 and
a ward (Hoàn Kiếm) at zoom 15, each with and without filters. "ours" is
services.public_map.map_view (what GET /map/data runs: the clusters, the points
close up, and a page of the list) through SQLAlchemy; "hand" is the same three answers
written by hand as single queries (one WHERE with an OR for open or recently answered)
on sqlite3 or asyncpg. The totals of both are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from backend.db import create_engine, session_factory  # noqa: E402
from backend.models import Unit, Ward  # noqa: E402
from backend.services.public_map import (  # noqa: E402
    POINTS_CAP,
    POINTS_ZOOM,
    RECENT_DAYS,
    VIETNAM,
    Box,
    MapQuery,
    cell_degrees,
    fitted_zoom,
    map_view,
)
from backend.services.workflow import OPEN_STATES  # noqa: E402
from bench.common import pg_dsn, quiet_migrations, sqlite_text, throwaway_postgres  # noqa: E402

START = datetime(2023, 10, 31, 17, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 10, 3, 0, tzinfo=UTC)
CATEGORIES = ("dumping", "debris", "wastewater", "burning", "noise", "livestock", "other")
BATCH = 50_000
DAY = timedelta(days=1)
COLUMNS = (
    "id",
    "code",
    "state",
    "category_code",
    "ward_code",
    "unit_id",
    "channel",
    "description",
    "nature",
    "urgency",
    "lat",
    "lon",
    "location_source",
    "created_at",
    "updated_at",
    "case_id",
    "complex",
    "was_verified",
    "was_handled",
    "answered_at",
    "closed_at",
    "reopen_count",
    "escalation_count",
    "transfer_count",
    "late",
    "hidden_at",
)


@dataclass(frozen=True)
class View:
    name: str
    box: Box
    zoom: int
    category: str | None = None
    status: str | None = None
    ward: str | None = None


COUNTRY = Box(102.1, 8.4, 109.6, 23.4)
HANOI = Box(105.3, 20.55, 106.05, 21.4)
HOAN_KIEM = Box(105.835, 21.015, 105.865, 21.04)
VIEWS = (
    View("whole country, zoom 6", COUNTRY, 6),
    View("whole country, zoom 6, dumping, open", COUNTRY, 6, "dumping", "open"),
    View("province (Hà Nội), zoom 10", HANOI, 10),
    View("province (Hà Nội), zoom 10, answered", HANOI, 10, None, "answered"),
    View("ward (Hoàn Kiếm), zoom 15", HOAN_KIEM, 15),
    View("ward (Hoàn Kiếm), zoom 15, dumping", HOAN_KIEM, 15, "dumping"),
)


# --- the data ---------------------------------------------------------------------------------


async def wards_of(url: str) -> list[tuple[str, int, float, float, float]]:
    """Every ward with its unit, centre and radius in degrees."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as s:
            found = await s.execute(
                select(Ward.code, Unit.id, Ward.lat, Ward.lon, Ward.area_km2)
                .join(Unit, Unit.ward_code == Ward.code)
                .order_by(Ward.code)
            )
            return [
                (code, unit, lat, lon, math.sqrt((area or 20.0) / math.pi) / 111.0)
                for code, unit, lat, lon, area in found
            ]
    finally:
        await engine.dispose()


def batches(
    n: int, wards: list[tuple[str, int, float, float, float]], seed: int = 19
) -> Iterator[list[tuple[Any, ...]]]:
    """The tickets, in order received, BATCH at a time."""
    rnd = random.Random(seed)
    # Some wards get many more reports than others (towns, industrial zones).
    weights = [rnd.lognormvariate(0, 1.2) for _ in wards]
    # Hoàn Kiếm's neighbourhood, where the ward view looks, is a busy one.
    span = (NOW - START).total_seconds()
    step = span / n
    batch: list[tuple[Any, ...]] = []
    chosen = rnd.choices(range(len(wards)), weights=weights, k=n)
    for i in range(1, n + 1):
        created = START + timedelta(seconds=step * (i - 1) + rnd.uniform(0, step))
        ward, unit, lat0, lon0, radius = wards[chosen[i - 1]]
        lat = min(max(rnd.gauss(lat0, radius / 2), VIETNAM.south), VIETNAM.north)
        lon = min(max(rnd.gauss(lon0, radius / 2), VIETNAM.west), VIETNAM.east)
        age = (NOW - created) / DAY
        roll = rnd.random()
        case_id = answered = closed = None
        if roll < 0.07 and i > 1000:
            state, case_id = "merged", rnd.randrange(i - 1000, i)
        elif roll < 0.15:
            state = "rejected"
        elif rnd.random() < (0.97 if age > 30 else 0.85 * age / 30):
            answered = min(created + DAY * rnd.uniform(0.5, 20), NOW - timedelta(minutes=1))
            state = "closed" if answered + 7 * DAY < NOW else "answered"
            closed = answered + 7 * DAY if state == "closed" else None
        else:
            state = rnd.choice(OPEN_STATES)
        hidden = created + DAY if rnd.random() < 0.005 else None
        batch.append(
            (
                i,
                f"{ward[:2]}-{created:%y%m}-{i:07d}",
                state,
                CATEGORIES[rnd.randrange(len(CATEGORIES))],
                ward,
                unit,
                "telegram",
                "Bãi rác tự phát",
                "recurring",
                "normal",
                lat,
                lon,
                "gps",
                created,
                created,
                case_id,
                False,
                answered is not None,
                answered is not None,
                answered,
                closed,
                0,
                0,
                0,
                answered is not None and rnd.random() < 0.15,
                hidden,
            )
        )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def load(url: str, n: int) -> float:
    from backend.cli import load_units, migrate
    from backend.config import Settings

    settings = Settings(database_url=url)
    await migrate(settings)
    await load_units(settings)
    wards = await wards_of(url)
    start = time.perf_counter()
    if url.startswith("postgresql"):
        conn = await asyncpg.connect(pg_dsn(url))
        try:
            for rows in batches(n, wards):
                await conn.copy_records_to_table("tickets", records=rows, columns=COLUMNS)
            await conn.execute("VACUUM ANALYZE tickets")
        finally:
            await conn.close()
    else:
        db = sqlite3.connect(str(make_url(url).database))
        marks = ", ".join("?" * len(COLUMNS))
        with db:
            for rows in batches(n, wards):
                db.executemany(
                    f"INSERT INTO tickets ({', '.join(COLUMNS)}) VALUES ({marks})",
                    (tuple(map(sqlite_text, r)) for r in rows),
                )
        db.execute("ANALYZE")
        db.close()
    return time.perf_counter() - start


# --- the hand-written SQL ---------------------------------------------------------------------


def hand_sql(is_pg: bool, view: View, zoom: int) -> tuple[dict[str, str], list[Any]]:
    """The clusters, the list's first page and (close up) the points, as single queries
    with one WHERE: open, or answered or closed since the cut; not hidden, not merged."""
    args: list[Any] = []

    def mark(value: Any) -> str:
        args.append(value)
        return f"${len(args)}" if is_pg else "?"

    box = view.box
    opened = ", ".join(f"'{s}'" for s in OPEN_STATES)
    where = (
        "hidden_at IS NULL AND case_id IS NULL"
        f" AND lat BETWEEN {mark(box.south)} AND {mark(box.north)}"
        f" AND lon BETWEEN {mark(box.west)} AND {mark(box.east)}"
    )
    if view.status == "open":
        where += f" AND state IN ({opened})"
    elif view.status == "answered":
        since = mark(NOW - RECENT_DAYS * DAY)
        where += f" AND state IN ('answered', 'closed') AND answered_at >= {since}"
    else:
        where += (
            f" AND (state IN ({opened}) OR (state IN ('answered', 'closed')"
            f" AND answered_at >= {mark(NOW - RECENT_DAYS * DAY)}))"
        )
    if view.category:
        where += f" AND category_code = {mark(view.category)}"
    size = cell_degrees(zoom)
    if is_pg:
        cells = f"floor((lon - {VIETNAM.west}) / {size}), floor((lat - {VIETNAM.south}) / {size})"
    else:
        cells = (
            f"CAST((lon - {VIETNAM.west}) / {size} AS INTEGER),"
            f" CAST((lat - {VIETNAM.south}) / {size} AS INTEGER)"
        )
    queries = {
        "clusters": (
            f"SELECT count(*), sum(CASE WHEN state IN ({opened}) THEN 1 ELSE 0 END),"
            f" avg(lat), avg(lon) FROM tickets WHERE {where} GROUP BY {cells}"
        ),
        "list": (
            "SELECT code, category_code, ward_code, state, created_at, lat, lon"
            f" FROM tickets WHERE {where} ORDER BY created_at DESC, code LIMIT 20"
        ),
    }
    if zoom >= POINTS_ZOOM:
        queries["points"] = (
            "SELECT code, category_code, state, lat, lon FROM tickets"
            f" WHERE {where} ORDER BY code LIMIT {POINTS_CAP + 1}"
        )
    return queries, args


# --- the measurement ----------------------------------------------------------------------------


async def measure(url: str, runs: int) -> list[dict[str, Any]]:
    is_pg = url.startswith("postgresql")
    engine = create_engine(url)
    sessions = session_factory(engine)
    if is_pg:
        raw_pg = await asyncpg.connect(pg_dsn(url))

        async def fetch(query: str, args: list[Any]) -> list[Any]:
            return list(await raw_pg.fetch(query, *args))
    else:
        raw = sqlite3.connect(str(make_url(url).database))

        async def fetch(query: str, args: list[Any]) -> list[Any]:
            return raw.execute(query, tuple(map(sqlite_text, args))).fetchall()

    out = []
    for view in VIEWS:
        query = MapQuery(
            view.box,
            view.zoom,
            view.category,
            view.status,  # type: ignore[arg-type]
            view.ward,
        )
        zoom = fitted_zoom(view.box, view.zoom)
        sql, args = hand_sql(is_pg, view, zoom)

        async def ours(q: MapQuery = query) -> Any:
            async with sessions() as s:
                return await map_view(s, q, NOW)

        async def hand(sql: dict[str, str] = sql, args: list[Any] = args) -> dict[str, Any]:
            return {name: await fetch(text, args) for name, text in sql.items()}

        ways: dict[str, Callable[[], Awaitable[Any]]] = {"ours": ours, "hand": hand}
        results = {name: await fn() for name, fn in ways.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(runs):
            for name, fn in ways.items():
                t0 = time.perf_counter()
                results[name] = await fn()
                times[name].append(time.perf_counter() - t0)
        mine, theirs = results["ours"], results["hand"]
        hand_total = sum(r[0] for r in theirs["clusters"])
        if mine.total != hand_total or len(mine.clusters) != len(theirs["clusters"]):
            raise SystemExit(f"{view.name}: ours {mine.total} vs hand {hand_total}")
        if [i.code for i in mine.items] != [r[0] for r in theirs["list"]]:
            raise SystemExit(f"{view.name}: the lists differ")
        out.append(
            {
                "view": view.name,
                "total": mine.total,
                "clusters": len(mine.clusters),
                "points": None if mine.points is None else len(mine.points),
                "ours": statistics.median(times["ours"]),
                "hand": statistics.median(times["hand"]),
            }
        )
    if is_pg:
        await raw_pg.close()
    else:
        raw.close()
    await engine.dispose()
    return out


def show(name: str, loaded: float, n: int, figures: list[dict[str, Any]]) -> None:
    print(f"{name}: {n:,} tickets loaded in {loaded:.1f} s")
    for f in figures:
        shown = f"{f['clusters']} clusters" + (
            f", {f['points']} points" if f["points"] is not None else ""
        )
        print(
            f"  {f['view']}: {f['total']:,} cases, {shown}"
            f" | ours {f['ours'] * 1000:.1f} ms | hand {f['hand'] * 1000:.1f} ms"
            f" | ratio {f['ours'] / f['hand']:.2f}"
        )


def run_on(url: str, name: str, n: int, runs: int) -> None:
    loaded = asyncio.run(load(url, n))
    show(name, loaded, n, asyncio.run(measure(url, runs)))


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1_000_000, help="tickets")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--pg-url", help="a PostgreSQL server to use (a database bench_map is made in it)"
    )
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("BENCH_PG_PORT", 54359)))
    parser.add_argument(
        "--databases", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    args = parser.parse_args()
    quiet_migrations()
    if "sqlite" in args.databases:
        with tempfile.TemporaryDirectory() as tmp:
            run_on(f"sqlite+aiosqlite:///{tmp}/map.db", "SQLite", args.n, args.runs)
    if "postgresql" not in args.databases:
        return
    if args.pg_url:
        server = make_url(args.pg_url)
        asyncio.run(_admin(args.pg_url, "DROP DATABASE IF EXISTS bench_map WITH (FORCE)"))
        asyncio.run(_admin(args.pg_url, "CREATE DATABASE bench_map"))
        url = server.set(database="bench_map").render_as_string(hide_password=False)
        try:
            run_on(url, "PostgreSQL", args.n, args.runs)
        finally:
            asyncio.run(_admin(args.pg_url, "DROP DATABASE IF EXISTS bench_map WITH (FORCE)"))
        return
    with throwaway_postgres(args.pg_port) as pg_url:
        run_on(pg_url, "PostgreSQL", args.n, args.runs)


if __name__ == "__main__":
    main()
