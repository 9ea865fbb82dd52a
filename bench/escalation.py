"""One escalation scan over 1,000,000 open tickets, on SQLite and on PostgreSQL, against
the same query written by hand and run on the bare driver, in the same run.

The tickets are spread over 200 wards of Thanh Hóa, in every open state, with due times
from a week ago to a month ahead: about 2 % are overdue, and a third of those were
escalated within the last hour (so the scan must skip them). Three figures per
database: the batch scan the worker runs (200 tickets, oldest due first, under row
locks on PostgreSQL), the same SQL by hand, and one whole pass of the worker (scan,
flag, audit, notify) inside a transaction that is rolled back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.common, when run as a script

import asyncpg  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from backend.cli import load_units, migrate  # noqa: E402
from backend.config import Settings  # noqa: E402
from backend.db import create_engine, session_factory  # noqa: E402
from backend.models import Unit, Ward  # noqa: E402
from backend.services.deadlines import Policies  # noqa: E402
from backend.services.escalation import _locked, escalate_overdue, overdue_query  # noqa: E402
from backend.services.workflow import OPEN_STATES  # noqa: E402
from bench.common import pg_dsn, quiet_migrations, sqlite_text, throwaway_postgres  # noqa: E402

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
BATCH = 200
AGAIN = timedelta(hours=4)
COLUMNS = (
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
    "due_at",
    "complex",
    "reopen_count",
    "escalation_count",
    "escalated_at",
)
HAND_SQL = """
SELECT id FROM tickets
WHERE due_at < {now} AND state IN ({states})
  AND (escalated_at IS NULL OR escalated_at < {again})
ORDER BY due_at LIMIT {limit}
"""


def rows(n: int, wards: list[tuple[str, int]], seed: int = 7) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(seed)
    for i in range(n):
        ward, unit = wards[i % len(wards)]
        created = NOW - timedelta(days=rnd.uniform(0, 30))
        if rnd.random() < 0.02:
            due = NOW - timedelta(hours=rnd.uniform(0.1, 24 * 7))
            escalated = NOW - timedelta(minutes=rnd.uniform(1, 60)) if rnd.random() < 0.33 else None
        else:
            due = NOW + timedelta(hours=rnd.uniform(0.1, 24 * 30))
            escalated = None
        yield (
            f"38-2611-{i:07d}",
            OPEN_STATES[i % len(OPEN_STATES)],
            "dumping",
            ward,
            unit,
            "telegram",
            "Bãi rác tự phát",
            "recurring",
            "normal",
            19.8,
            105.8,
            "gps",
            created,
            created,
            due,
            False,
            0,
            1 if escalated else 0,
            escalated,
        )


async def wards_of(url: str) -> list[tuple[str, int]]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as s:
            found = await s.execute(
                select(Ward.code, Unit.id)
                .join(Unit, Unit.ward_code == Ward.code)
                .where(Ward.province_code == "38")
                .order_by(Ward.code)
                .limit(200)
            )
            return [(code, unit_id) for code, unit_id in found]
    finally:
        await engine.dispose()


async def load_sqlite(url: str, n: int) -> None:
    wards = await wards_of(url)
    conn = sqlite3.connect(str(make_url(url).database))
    marks = ", ".join("?" * len(COLUMNS))
    sql = f"INSERT INTO tickets ({', '.join(COLUMNS)}) VALUES ({marks})"
    with conn:
        conn.executemany(sql, (tuple(map(sqlite_text, r)) for r in rows(n, wards)))
    conn.execute("ANALYZE")
    conn.close()


async def load_pg(url: str, n: int) -> None:
    wards = await wards_of(url)
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        await conn.copy_records_to_table("tickets", records=rows(n, wards), columns=COLUMNS)
        await conn.execute("ANALYZE tickets")
    finally:
        await conn.close()


async def best_of(runs: int, fn: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """Median seconds over runs (after one warm-up), and what fn returned."""
    found = await fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        found = await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), found


async def measure(url: str, runs: int) -> dict[str, tuple[float, int]]:
    policies = Policies.load()
    engine = create_engine(url)
    sessions = session_factory(engine)
    is_pg = url.startswith("postgresql")

    async def ours() -> int:
        async with sessions() as s, s.begin():
            query = _locked(s, overdue_query(NOW, NOW - AGAIN, BATCH))
            return len(list(await s.scalars(query)))

    async def whole_pass() -> int:
        async with sessions() as s:
            async with s.begin():
                done = await escalate_overdue(s, policies, now=NOW, limit=BATCH)
                await s.rollback()
            return len(done)

    states = ", ".join(f"'{s}'" for s in OPEN_STATES)
    if is_pg:
        raw_pg = await asyncpg.connect(pg_dsn(url))
        hand_sql = HAND_SQL.format(now="$1", again="$2", states=states, limit=BATCH)

        async def hand() -> int:
            async with raw_pg.transaction():
                found = await raw_pg.fetch(hand_sql + " FOR UPDATE SKIP LOCKED", NOW, NOW - AGAIN)
            return len(found)
    else:
        raw_lite = sqlite3.connect(str(make_url(url).database))
        hand_sql = HAND_SQL.format(now="?", again="?", states=states, limit=BATCH)

        async def hand() -> int:
            params = (sqlite_text(NOW), sqlite_text(NOW - AGAIN))
            return len(raw_lite.execute(hand_sql, params).fetchall())

    try:
        return {
            "ours": await best_of(runs, ours),
            "hand": await best_of(runs, hand),
            "pass": await best_of(runs, whole_pass),
        }
    finally:
        if is_pg:
            await raw_pg.close()
        else:
            raw_lite.close()
        await engine.dispose()


async def prepare(url: str, n: int) -> float:
    settings = Settings(database_url=url)
    await migrate(settings)
    await load_units(settings)
    start = time.perf_counter()
    await (load_pg(url, n) if url.startswith("postgresql") else load_sqlite(url, n))
    return time.perf_counter() - start


def report(name: str, loaded: float, n: int, figures: dict[str, tuple[float, int]]) -> None:
    ours, found = figures["ours"]
    hand, hand_found = figures["hand"]
    whole, escalated = figures["pass"]
    assert found == hand_found == escalated == BATCH, (found, hand_found, escalated)
    print(f"{name}: {n:,} open tickets loaded in {loaded:.1f} s")
    print(f"  escalation scan (ours) : {ours * 1000:8.2f} ms  for {found} tickets")
    print(f"  same query by hand     : {hand * 1000:8.2f} ms   ratio {ours / hand:.2f}")
    print(f"  whole pass (scan, flag, audit, notify, rolled back): {whole * 1000:8.2f} ms")


async def run(n: int, runs: int, pg_port: int) -> None:
    quiet_migrations()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite+aiosqlite:///{tmp}/escalation.db"
        loaded = await prepare(sqlite_url, n)
        report("SQLite", loaded, n, await measure(sqlite_url, runs))
    with throwaway_postgres(pg_port) as pg_url:
        loaded = await prepare(pg_url, n)
        figures = await measure(pg_url, runs)
        report("PostgreSQL", loaded, n, figures)
        verdict = "met" if figures["ours"][0] <= 1 else "NOT MET"
        print(f"  goal: scan <= 1 s on PostgreSQL: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1_000_000, help="open tickets")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("BENCH_PG_PORT", 54339)))
    args = parser.parse_args()
    asyncio.run(run(args.n, args.runs, args.pg_port))


if __name__ == "__main__":
    main()
