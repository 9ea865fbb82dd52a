"""The monthly report over 1,000,000 tickets, on SQLite and on PostgreSQL, against
hand-written SQL for the same figures on the bare driver, in the same run: one GROUP BY
query, and the report's own plan (a GROUP BY for the counts, one pass gathering the step
spans, percentiles in numpy) written by hand.

Three years of tickets (November 2023 to October 2026, ~28,000 a month) over 600 wards
in six provinces, each with the lifecycle it would have had: most closed or answered,
some open and overdue, rejected with a reason, merged into an earlier case, transferred,
reopened, rated, urgent; and its audit events (one per transition, ~7 million). All go
in through executemany on sqlite3 and COPY on asyncpg.

The report for October 2026 is timed for the whole country and for one province. Each
measurement runs in a fresh child process, so the peak RSS printed is the report's own
(imports included), not the loader's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from backend.db import create_engine, session_factory  # noqa: E402
from backend.models import Unit, Ward  # noqa: E402
from backend.services.workflow import OPEN_STATES  # noqa: E402
from bench.common import (  # noqa: E402
    pg_dsn,
    quiet_migrations,
    sqlite_text,
    throwaway_postgres,
)

START = datetime(2023, 10, 31, 17, 0, tzinfo=UTC)  # 1 Nov 2023, local midnight
END = datetime(2026, 10, 31, 17, 0, tzinfo=UTC)  # 1 Nov 2026, local midnight
NOW = datetime(2026, 11, 10, 3, 0, tzinfo=UTC)
PROVINCES = ("38", "01", "79", "48", "31", "92")
CATEGORIES = ("dumping", "debris", "wastewater", "burning", "noise", "livestock", "other")
REASONS = ("not_pollution", "no_place", "abusive", "spam")
TICKET_COLUMNS = (
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
    "due_at",
    "case_id",
    "complex",
    "classified_at",
    "assigned_at",
    "claimed_at",
    "verified_at",
    "confirmed",
    "was_verified",
    "was_handled",
    "answered_at",
    "closed_at",
    "reopen_count",
    "rejection_reason",
    "rating",
    "escalation_count",
    "transfer_count",
    "late",
)
AUDIT_COLUMNS = ("ticket_id", "actor", "action", "from_state", "to_state", "created_at")
H = timedelta(hours=1)


# The hand-written SQL. HAND_SQL is one GROUP BY for the same figures: the counts by ward
# and category and, on PostgreSQL, the step times in the grand-total grouping set (count,
# median and 90th percentile per step, for all cases, urgent and normal ones).
CASE = "t.case_id IS NULL AND t.state <> 'rejected'"
ANSWERED = "t.case_id IS NULL AND t.state IN ('answered', 'closed')"
HAND_SQL = f"""
SELECT t.ward_code, t.category_code,
  count(*),
  count(*) FILTER (WHERE t.case_id IS NOT NULL),
  count(*) FILTER (WHERE t.state = 'rejected' AND t.rejection_reason = 'not_pollution'),
  count(*) FILTER (WHERE t.state = 'rejected' AND t.rejection_reason = 'no_place'),
  count(*) FILTER (WHERE t.state = 'rejected' AND t.rejection_reason = 'abusive'),
  count(*) FILTER (WHERE t.state = 'rejected' AND t.rejection_reason = 'spam'),
  count(*) FILTER (WHERE {CASE}),
  count(*) FILTER (WHERE {CASE} AND t.transfer_count > 0),
  count(*) FILTER (WHERE {CASE} AND t.was_verified),
  count(*) FILTER (WHERE {CASE} AND t.was_handled),
  count(*) FILTER (WHERE {ANSWERED}),
  count(*) FILTER (WHERE t.case_id IS NULL AND t.state IN ({{open}})),
  count(*) FILTER (WHERE t.case_id IS NULL AND t.state IN ({{open}}) AND t.due_at < {{now}}),
  count(*) FILTER (WHERE {ANSWERED} AND NOT t.late),
  count(*) FILTER (WHERE {CASE} AND t.urgency = 'urgent'),
  count(*) FILTER (WHERE {CASE} AND t.urgency <> 'urgent'),
  count(*) FILTER (WHERE {CASE} AND t.reopen_count > 0),
  count(t.rating),
  coalesce(sum(t.rating), 0) {{steps}}
FROM tickets t {{join}}
WHERE {{where}}
GROUP BY {{grouping}}
"""
STEP_SPANS = (
    ("created_at", "classified_at"),
    ("assigned_at", "claimed_at"),
    ("claimed_at", "verified_at"),
    ("verified_at", "answered_at"),
    ("created_at", "answered_at"),
)
URGENCY = (" AND t.urgency = 'urgent'", " AND t.urgency <> 'urgent'")


def span(is_pg: bool, start: str, end: str) -> str:
    if is_pg:
        return f"date_part('epoch', t.{end} - t.{start})"
    return f"round((julianday(t.{end}) - julianday(t.{start})) * 86400.0)"


def done(start: str, end: str) -> str:
    return f"{CASE} AND t.{start} IS NOT NULL AND t.{end} IS NOT NULL"


def hand_steps() -> str:
    """HAND_SQL's step columns (PostgreSQL's percentile_cont)."""
    parts = []
    for start, end in STEP_SPANS:
        for group in ("", *URGENCY):
            where = f"FILTER (WHERE {done(start, end)}{group})"
            parts.append(f"count({span(True, start, end)}) {where}")
            for p in (0.5, 0.9):
                order = f"WITHIN GROUP (ORDER BY {span(True, start, end)})"
                parts.append(f"percentile_cont({p}) {order} {where}")
    return ",\n  " + ",\n  ".join(parts)


def hand_queries(is_pg: bool, province: str | None) -> dict[str, str]:
    """The hand-written SQL for one scope. 'single': HAND_SQL with every figure (on SQLite,
    which has no percentile_cont, the counts only). The report's own plan by hand:
    'counts', HAND_SQL by ward and category, and 'spans', each step's spans of urgent and
    of normal cases gathered into arrays."""

    def mark(i: int) -> str:
        return f"${i}" if is_pg else "?"

    def where(first: int) -> str:
        out = f"t.created_at >= {mark(first)} AND t.created_at < {mark(first + 1)}"
        return out + (f" AND w.province_code = {mark(first + 2)}" if province else "")

    join = "JOIN wards w ON w.code = t.ward_code" if province else ""
    common = {"open": ", ".join(f"'{s}'" for s in OPEN_STATES), "now": mark(1), "join": join}
    counts = HAND_SQL.format(
        **common, where=where(2), steps="", grouping="t.ward_code, t.category_code"
    )
    # SQLite has no percentile_cont: there the single query is the counts alone.
    single = counts
    if is_pg:
        single = HAND_SQL.format(
            **common,
            where=where(2),
            steps=hand_steps(),
            grouping="GROUPING SETS ((t.ward_code, t.category_code), ())",
        )
    gather = "array_agg" if is_pg else "json_group_array"
    spans = ", ".join(
        f"{gather}({span(is_pg, start, end)}) FILTER (WHERE {done(start, end)}{group})"
        for start, end in STEP_SPANS
        for group in URGENCY
    )
    return {
        "single": single,
        "counts": counts,
        "spans": f"SELECT {spans} FROM tickets t {join} WHERE {where(1)}",
    }


def generate(
    n: int, wards: list[tuple[str, int]], seed: int = 11
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Tickets in the order received, and their audit events."""
    rnd = random.Random(seed)
    span = (END - START).total_seconds()
    times = sorted(START + timedelta(seconds=rnd.uniform(0, span)) for _ in range(n))
    tickets: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for i, created in enumerate(times, 1):
        ward, unit = wards[rnd.randrange(len(wards))]
        urgent = rnd.random() < 0.15
        roll = rnd.random()
        age = (NOW - created).total_seconds() / 3600
        state = "closed"
        case_id = reason = rating = None
        classified: datetime | None = None
        assigned = claimed = verified = answered = closed = due = classified
        confirmed = None
        chain: list[tuple[str, str | None, str]] = [("submit", None, "received")]
        if roll < 0.07 and i > 100:
            state, case_id = "merged", rnd.randrange(max(1, i - 500), i)
            chain.append(("merge", "received", "merged"))
        elif roll < 0.15:
            state, reason = "rejected", REASONS[rnd.randrange(4)]
            chain.append(("reject", "received", "rejected"))
        else:
            classified = created + H * rnd.uniform(0.1, 8)
            assigned = classified
            chain += [("classify", "received", "classified"), ("assign", "classified", "assigned")]
            finished = age > 24 * 30 or rnd.random() < 0.85
            if finished or rnd.random() < 0.6:
                claimed = assigned + H * rnd.uniform(0.2, 30)
                verified = claimed + H * rnd.uniform(0.5, 24)
                confirmed = rnd.random() < 0.8
                chain += [
                    ("claim", "assigned", "claimed"),
                    ("verify", "claimed", "verifying"),
                    (
                        "confirm" if confirmed else "not_confirmed",
                        "verifying",
                        "handling" if confirmed else "not_confirmed",
                    ),
                ]
            if finished and claimed is not None and verified is not None:
                answered = verified + H * rnd.uniform(1, 90)
                chain.append(("answer", chain[-1][2], "answered"))
                if answered + 7 * 24 * H < NOW:
                    state, closed = "closed", answered + 7 * 24 * H
                    chain.append(("close", "answered", "closed"))
                else:
                    state = "answered"
                rating = rnd.randint(1, 5) if rnd.random() < 0.4 else None
            else:
                state = chain[-1][2]
                due = (claimed or classified) + H * rnd.uniform(8, 80)
                verified = verified if state in ("handling", "not_confirmed") else None
        late = answered is not None and rnd.random() < 0.12
        transfers = 1 if rnd.random() < 0.04 and classified is not None else 0
        reopens = 1 if rnd.random() < 0.03 and answered is not None else 0
        tickets.append(
            (
                i,
                f"{ward[:2]}-{created:%y%m}-{i:07d}",
                state,
                CATEGORIES[rnd.randrange(len(CATEGORIES))],
                ward,
                unit,
                "telegram",
                "Bãi rác tự phát",
                "one_off" if urgent else "recurring",
                "urgent" if urgent else "normal",
                19.8,
                105.8,
                "gps",
                created,
                created,
                due,
                case_id,
                False,
                classified,
                assigned,
                claimed,
                verified,
                confirmed,
                verified is not None,
                answered is not None and bool(confirmed),
                answered,
                closed,
                reopens,
                reason,
                rating,
                0,
                transfers,
                late,
            )
        )
        at = created
        for action, before, after in chain:
            events.append((i, "system", action, before, after, at))
            at = at + H * 0.5
    return tickets, events


async def wards_of(url: str) -> list[tuple[str, int]]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as s:
            found = await s.execute(
                select(Ward.code, Unit.id)
                .join(Unit, Unit.ward_code == Ward.code)
                .where(Ward.province_code.in_(PROVINCES))
                .order_by(Ward.province_code, Ward.code)
            )
            rows = [(code, unit_id) for code, unit_id in found]
            return rows[:: max(1, len(rows) // 600)][:600]
    finally:
        await engine.dispose()


async def load(url: str, n: int) -> tuple[float, int]:
    # Only the loader needs the command line's imports; the measuring child stays lean.
    from backend.cli import load_units, migrate
    from backend.config import Settings

    settings = Settings(database_url=url)
    await migrate(settings)
    await load_units(settings)
    wards = await wards_of(url)
    tickets, events = generate(n, wards)
    start = time.perf_counter()
    if url.startswith("postgresql"):
        conn = await asyncpg.connect(pg_dsn(url))
        try:
            await conn.copy_records_to_table("tickets", records=tickets, columns=TICKET_COLUMNS)
            await conn.copy_records_to_table("audit_events", records=events, columns=AUDIT_COLUMNS)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
    else:
        db = sqlite3.connect(str(make_url(url).database))
        with db:
            for table, columns, rows in (
                ("tickets", TICKET_COLUMNS, tickets),
                ("audit_events", AUDIT_COLUMNS, events),
            ):
                marks = ", ".join("?" * len(columns))
                db.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                    (tuple(map(sqlite_text, r)) for r in rows),
                )
        db.execute("ANALYZE")
        db.close()
    return time.perf_counter() - start, len(events)


# --- the measurement, in a child process ---------------------------------------------------


async def measure(url: str, province: str | None, runs: int) -> dict[str, Any]:
    from backend.services.report_files import to_xlsx
    from backend.services.stats import Scope, monthly_report, period_of

    period = period_of("2026-10")
    engine = create_engine(url)
    sessions = session_factory(engine)
    scope = Scope(province_code=province)

    async def ours() -> Any:
        async with sessions() as s:
            return await monthly_report(s, period, scope, now=NOW)

    is_pg = url.startswith("postgresql")
    sql = hand_queries(is_pg, province)
    spans_values = (period.start, period.end, *([province] if province else []))
    values = (NOW, *spans_values)
    if is_pg:
        raw_pg = await asyncpg.connect(pg_dsn(url))

        async def fetch(query: str, args: tuple[Any, ...]) -> list[Any]:
            return list(await raw_pg.fetch(query, *args))
    else:
        raw = sqlite3.connect(str(make_url(url).database))

        async def fetch(query: str, args: tuple[Any, ...]) -> list[Any]:
            return raw.execute(query, tuple(map(sqlite_text, args))).fetchall()

    async def single() -> list[Any]:
        return await fetch(sql["single"], values)

    async def plan() -> list[Any]:
        rows = await fetch(sql["counts"], values)
        (gathered,) = await fetch(sql["spans"], spans_values)
        for urgent, normal in zip(gathered[::2], gathered[1::2], strict=True):
            arrays = [
                np.asarray(json.loads(v) if isinstance(v, str) else v or [], dtype=np.float64)
                for v in (urgent, normal)
            ]
            for seconds in (np.concatenate(arrays), *arrays):
                if seconds.size:
                    np.percentile(seconds, [50, 90])
        return rows

    # Round robin, so that drift in the machine's speed falls on all three alike.
    ways = {"ours": ours, "single": single, "plan": plan}
    times: dict[str, list[float]] = {name: [] for name in ways}
    results = {name: await fn() for name, fn in ways.items()}  # warm-up
    for _ in range(runs):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            results[name] = await fn()
            times[name].append(time.perf_counter() - t0)
    report, rows, plan_rows = results["ours"], results["single"], results["plan"]
    t0 = time.perf_counter()
    xlsx = to_xlsx(report)
    xlsx_s = time.perf_counter() - t0
    if is_pg:
        await raw_pg.close()
    else:
        raw.close()
    await engine.dispose()
    for found in (rows, plan_rows):
        received = sum(r[2] for r in found if r[0] is not None)
        if report.total.received != received or report.problems:
            raise SystemExit(f"figures differ: {report.total.received} vs {received}")
    return {
        **{name: statistics.median(taken) for name, taken in times.items()},
        "xlsx": xlsx_s,
        "xlsx_bytes": len(xlsx),
        "received": report.total.received,
        "cases": report.total.cases,
        "rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). getrusage's ru_maxrss would report the
    parent's peak, which Linux carries across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(url: str, province: str | None, runs: int) -> dict[str, Any]:
    args = [sys.executable, __file__, "--measure", url, "--runs", str(runs)]
    if province:
        args += ["--province", province]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def show(
    name: str, loaded: float, n: int, events: int, url: str, runs: int
) -> list[dict[str, Any]]:
    """Measure the whole country and one province, print them, return the figures."""
    print(f"{name}: {n:,} tickets and {events:,} audit events loaded in {loaded:.1f} s")
    # SQLite has no percentile_cont: its single hand query gives the counts only.
    single = "one GROUP BY" if url.startswith("postgresql") else "one GROUP BY (counts only)"
    measured = []
    for province in (None, "38"):
        f = child(url, province, runs)
        label = f"province {province}" if province else "whole country"
        print(
            f"  October 2026, {label}: {f['received']:,} reports"
            f" | report {f['ours'] * 1000:.1f} ms | peak RSS {f['rss_mb']:.0f} MB"
            f" | XLSX {f['xlsx'] * 1000:.0f} ms\n"
            f"    hand-written, {single}: {f['single'] * 1000:.1f} ms,"
            f" ratio {f['ours'] / f['single']:.2f}\n"
            f"    hand-written, the report's plan (counts + spans, numpy percentiles):"
            f" {f['plan'] * 1000:.1f} ms, ratio {f['ours'] / f['plan']:.2f}"
        )
        measured.append(f)
    return measured


def run(n: int, runs: int, pg_port: int, databases: list[str]) -> None:
    quiet_migrations()
    if "sqlite" in databases:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite_url = f"sqlite+aiosqlite:///{tmp}/stats.db"
            loaded, events = asyncio.run(load(sqlite_url, n))
            show("SQLite", loaded, n, events, sqlite_url, runs)
    if "postgresql" not in databases:
        return
    with throwaway_postgres(pg_port) as pg_url:
        loaded, events = asyncio.run(load(pg_url, n))
        figures = show("PostgreSQL", loaded, n, events, pg_url, runs)
        seconds = max(f["ours"] for f in figures)
        ratio = max(f["ours"] / f["single"] for f in figures)
        rss = max(f["rss_mb"] for f in figures)
        print(
            f"  goals on PostgreSQL: <= 1 s: {'met' if seconds <= 1 else 'NOT MET'};"
            f" <= 1.5x the one GROUP BY: {'met' if ratio <= 1.5 else 'NOT MET'};"
            f" RSS <= 150 MB: {'met' if rss <= 150 else 'NOT MET'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1_000_000, help="tickets")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("BENCH_PG_PORT", 54349)))
    parser.add_argument(
        "--databases", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--province", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure, args.province, args.runs))))
        return
    run(args.n, args.runs, args.pg_port, args.databases)


if __name__ == "__main__":
    main()
