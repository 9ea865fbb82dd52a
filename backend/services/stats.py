"""Monthly complaint statistics in the shape of the regulation's report: one period, one
scope, counted over the reports (thông tin) received in the period.

What each figure means (the same words head the report's columns):
- received: every report received in the period;
- duplicates: reports merged into a case (vụ việc); rejected: refused, per reason;
  cases: the rest, so received = cases + duplicates + rejected;
- of the cases: transferred (sent to another unit at least once); verified (verification
  ended in the current round); handled (pollution confirmed and answered); answered
  (answered or closed); in progress (a step still to do), so cases = answered +
  in progress; overdue (in progress and past its due time now); answered on time (no
  step finished after its due time); urgent and normal; reopened (at least once);
- rated reports and their mean satisfaction (1–5), over every report with a rating;
- median and 90th-percentile wall-clock hours per step, over the cases that did it.

The state is the state when the report is made: the report kept on the 25th is the one
filed. Counting is one GROUP BY over ward and category, rolled up here; the step times
are one more pass over the same rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, time
from operator import attrgetter
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.functions import Function

from backend.models import Category, Province, Ticket, Unit, Ward, utcnow
from backend.services.workflow import OPEN_STATES, REJECT_REASONS, Actor, overdue_filter
from backend.timeutil import VN_TZ

PeriodKind = Literal["month", "cut25"]
PERIOD_KINDS: tuple[PeriodKind, ...] = ("month", "cut25")
# The monthly report is due on this day (TCMT CV 3043/2017); the cut ends on it too.
CUT_DAY = 25
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


class StatsError(Exception):
    """A request the statistics cannot answer; `code` names why (bad_month, forbidden)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


# --- the period ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """One reporting period in local time: [start, end), stored as UTC bounds."""

    kind: PeriodKind
    month: str  # yyyy-mm, the month the period ends in
    first_day: date
    last_day: date  # inclusive

    @property
    def start(self) -> datetime:
        return _utc_midnight(self.first_day)

    @property
    def end(self) -> datetime:
        return _utc_midnight(date.fromordinal(self.last_day.toordinal() + 1))

    def shifted(self, months: int) -> Period:
        year, month = _add_months(*_split(self.month), months)
        return period_of(f"{year:04d}-{month:02d}", self.kind)

    def label(self) -> str:
        return f"{self.first_day:%d/%m/%Y} – {self.last_day:%d/%m/%Y}"


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), VN_TZ).astimezone(UTC)


def _split(month: str) -> tuple[int, int]:
    found = _MONTH.fullmatch(month)
    if (
        found is None
        or not 1 <= int(found.group(2)) <= 12
        or not 2000 <= int(found.group(1)) < 3000
    ):
        raise StatsError("bad_month", f"{month!r} is not yyyy-mm")
    return int(found.group(1)), int(found.group(2))


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def period_of(month: str, kind: PeriodKind = "month") -> Period:
    """The calendar month, or the cut from the 25th of the month before to the 24th."""
    if kind not in PERIOD_KINDS:
        raise StatsError("bad_period", f"one of {', '.join(PERIOD_KINDS)}")
    year, mon = _split(month)
    next_year, next_month = _add_months(year, mon, 1)
    if kind == "month":
        first, after = date(year, mon, 1), date(next_year, next_month, 1)
    else:
        before_year, before_month = _add_months(year, mon, -1)
        first, after = date(before_year, before_month, CUT_DAY), date(year, mon, CUT_DAY)
    last = date.fromordinal(after.toordinal() - 1)
    return Period(kind, f"{year:04d}-{mon:02d}", first, last)


def period_containing(day: date, kind: PeriodKind = "month") -> Period:
    """The period a local day falls in."""
    year, month = day.year, day.month
    if kind == "cut25" and day.day >= CUT_DAY:
        year, month = _add_months(year, month, 1)
    return period_of(f"{year:04d}-{month:02d}", kind)


def period_due(day: date, kind: PeriodKind = "month") -> Period:
    """The period whose report is due on the 25th of day's month: the calendar month
    before, or the cut that ends on that 25th."""
    if kind == "cut25":
        return period_of(f"{day.year:04d}-{day.month:02d}", kind)
    year, month = _add_months(day.year, day.month, -1)
    return period_of(f"{year:04d}-{month:02d}", kind)


# --- the scope ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Which reports: a province, a ward, a handling unit, a category (None: all)."""

    province_code: str | None = None
    ward_code: str | None = None
    unit_id: int | None = None
    category_code: str | None = None


async def scope_for(session: AsyncSession, actor: Actor, asked: Scope) -> Scope:
    """The scope an actor asked for, narrowed to what they may see: admins everything,
    operators and supervisors their province, ward staff and leaders their ward (or, in a
    unit without a ward, the unit's own tickets). Raises StatsError("forbidden") when the
    request reaches outside."""
    ward = await session.get(Ward, asked.ward_code) if asked.ward_code else None
    if asked.ward_code and ward is None:
        raise StatsError("unknown_ward", asked.ward_code)
    if asked.province_code and await session.get(Province, asked.province_code) is None:
        raise StatsError("unknown_province", asked.province_code)
    if asked.category_code and await session.get(Category, asked.category_code) is None:
        raise StatsError("unknown_category", asked.category_code)
    if ward is not None and asked.province_code not in (None, ward.province_code):
        raise StatsError("unknown_ward", f"{ward.code} is not in {asked.province_code}")
    province = asked.province_code or (ward.province_code if ward else None)
    if actor.role in ("admin", "system"):
        return Scope(province, asked.ward_code, asked.unit_id, asked.category_code)
    if actor.role in ("operator", "supervisor"):
        if actor.province_code is None or province not in (None, actor.province_code):
            raise StatsError("forbidden", "outside the province")
        return Scope(actor.province_code, asked.ward_code, None, asked.category_code)
    unit = await session.get(Unit, actor.unit_id) if actor.unit_id else None
    if unit is None or actor.role == "reporter":
        raise StatsError("forbidden", "no unit")
    if unit.ward_code is None:
        if asked.ward_code or province not in (None, unit.province_code):
            raise StatsError("forbidden", "outside the unit")
        return Scope(unit.province_code, None, unit.id, asked.category_code)
    if asked.ward_code not in (None, unit.ward_code) or province not in (
        None,
        unit.province_code,
    ):
        raise StatsError("forbidden", "outside the ward")
    return Scope(unit.province_code, unit.ward_code, None, asked.category_code)


def _scoped(query: Select[Any], scope: Scope, period_start: datetime, end: datetime) -> Select[Any]:
    query = query.where(Ticket.created_at >= period_start, Ticket.created_at < end)
    if scope.province_code is not None:
        query = query.join(Ward, Ward.code == Ticket.ward_code).where(
            Ward.province_code == scope.province_code
        )
    if scope.ward_code is not None:
        query = query.where(Ticket.ward_code == scope.ward_code)
    if scope.unit_id is not None:
        query = query.where(Ticket.unit_id == scope.unit_id)
    if scope.category_code is not None:
        query = query.where(Ticket.category_code == scope.category_code)
    return query


# --- the figures --------------------------------------------------------------------------


@dataclass
class Figures:
    """The counts of one row of the report. They add up: a total is the sum of its rows."""

    received: int = 0
    duplicates: int = 0
    rejected_not_pollution: int = 0
    rejected_no_place: int = 0
    rejected_abusive: int = 0
    rejected_spam: int = 0
    cases: int = 0
    transferred: int = 0
    verified: int = 0
    handled: int = 0
    answered: int = 0
    in_progress: int = 0
    overdue: int = 0
    on_time: int = 0
    urgent: int = 0
    normal: int = 0
    reopened: int = 0
    rated: int = 0
    rating_sum: int = 0

    @property
    def rejected(self) -> int:
        return sum(_rejected_of(self))

    def share(self, count: int, of: int | None = None) -> float | None:
        """count as a fraction of the cases (or of `of`); None when there are none."""
        whole = self.cases if of is None else of
        return count / whole if whole else None

    @property
    def on_time_rate(self) -> float | None:
        return self.share(self.on_time, self.answered)

    @property
    def mean_rating(self) -> float | None:
        return self.rating_sum / self.rated if self.rated else None

    def problems(self) -> list[str]:
        """The identities the figures must satisfy; empty when they hold."""
        checks = {
            "received = cases + duplicates + rejected": self.received
            == self.cases + self.duplicates + self.rejected,
            "cases = answered + in progress": self.cases == self.answered + self.in_progress,
            "cases = urgent + normal": self.cases == self.urgent + self.normal,
            "handled <= verified": self.handled <= self.verified,
            "on time <= answered": self.on_time <= self.answered,
            "overdue <= in progress": self.overdue <= self.in_progress,
        }
        return [name for name, holds in checks.items() if not holds]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        out["rejected"] = self.rejected
        for name in ("verified", "handled", "answered"):
            out[f"{name}_pct"] = rounded(self.share(getattr(self, name)), 4)
        out["on_time_rate"] = rounded(self.on_time_rate, 4)
        out["mean_rating"] = rounded(self.mean_rating, 2)
        return out


FIGURES = tuple(f.name for f in fields(Figures))
# A Figures' counts as a tuple, in field order; its rejections per reason.
_counts_of = attrgetter(*FIGURES)
_rejected_of = attrgetter(*(f"rejected_{r}" for r in REJECT_REASONS))


def rounded(value: float | None, digits: int) -> float | None:
    """value to `digits` places, as the report shows it; None stays None."""
    return None if value is None else round(value, digits)


# What the figures count, once: a case is a report neither merged nor rejected.
IS_CASE = and_(Ticket.case_id.is_(None), Ticket.state != "rejected")
ANSWERED = and_(IS_CASE, Ticket.state.in_(("answered", "closed")))
ON_TIME = and_(ANSWERED, Ticket.late.is_(False))
URGENT = Ticket.urgency == "urgent"


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.count(Ticket.id).filter(condition)


def _figure_columns(now: datetime) -> list[ColumnElement[Any]]:
    """One aggregate per Figures field, in its order."""
    columns: list[ColumnElement[Any]] = [
        func.count(Ticket.id),
        _count(Ticket.case_id.is_not(None)),
        *(
            _count(and_(Ticket.state == "rejected", Ticket.rejection_reason == reason))
            for reason in REJECT_REASONS
        ),
        _count(IS_CASE),
        _count(and_(IS_CASE, Ticket.transfer_count > 0)),
        _count(and_(IS_CASE, Ticket.was_verified.is_(True))),
        _count(and_(IS_CASE, Ticket.was_handled.is_(True))),
        _count(ANSWERED),
        _count(and_(IS_CASE, Ticket.state.in_(OPEN_STATES))),
        _count(and_(IS_CASE, overdue_filter(now))),
        _count(ON_TIME),
        _count(and_(IS_CASE, URGENT)),
        _count(and_(IS_CASE, ~URGENT)),
        _count(and_(IS_CASE, Ticket.reopen_count > 0)),
        _count(Ticket.rating.is_not(None)),
        func.coalesce(func.sum(Ticket.rating), 0),
    ]
    return columns


# --- step times ---------------------------------------------------------------------------

# (step, from, to): wall-clock time between two of the ticket's moments, in the current
# round (a transfer or a reopen starts the later steps again).
STEPS: tuple[tuple[str, Any, Any], ...] = (
    ("receive", Ticket.created_at, Ticket.classified_at),  # tiếp nhận → phân loại
    ("claim", Ticket.assigned_at, Ticket.claimed_at),  # chuyển → nhận xử lý
    ("verify", Ticket.claimed_at, Ticket.verified_at),  # xác minh
    ("answer", Ticket.verified_at, Ticket.answered_at),  # xử lý → phản hồi
    ("total", Ticket.created_at, Ticket.answered_at),  # tiếp nhận → phản hồi
)


def _seconds(dialect: str, start: Any, end: Any) -> ColumnElement[float]:
    if dialect == "postgresql":
        # date_part gives a float; EXTRACT would work out a numeric first.
        return func.date_part("epoch", end - start)
    # SQLite keeps timestamps as text; julianday reads them, to the second here.
    return func.round((func.julianday(end) - func.julianday(start)) * 86400.0)


@dataclass(frozen=True)
class StepTime:
    """Hours a step took: how many cases did it, the median and the 90th percentile, for
    all of them and for urgent and normal ones apart."""

    step: str
    count: int
    median: float | None
    p90: float | None
    urgent_count: int
    urgent_median: float | None
    urgent_p90: float | None
    normal_count: int
    normal_median: float | None
    normal_p90: float | None


def _percentiles(seconds: np.ndarray[Any, Any]) -> tuple[int, float | None, float | None]:
    """Count, median and 90th percentile in hours (linear between ranks, like SQL's
    percentile_cont)."""
    if seconds.size == 0:
        return 0, None, None
    median, p90 = np.percentile(seconds, [50, 90]) / 3600.0
    return int(seconds.size), round(float(median), 2), round(float(p90), 2)


def _gathered(dialect: str, span: ColumnElement[float]) -> Function[Any]:
    """An aggregate collecting every span into one value: an array on PostgreSQL, a JSON
    array in SQLite."""
    return func.array_agg(span) if dialect == "postgresql" else func.json_group_array(span)


def _spans(dialect: str, value: Any) -> np.ndarray[Any, Any]:
    """The seconds _gathered collected (None when no row was collected)."""
    if value is None:
        return np.empty(0)
    return np.asarray(value if dialect == "postgresql" else json.loads(value), dtype=np.float64)


async def _step_times(session: AsyncSession, period: Period, scope: Scope) -> list[StepTime]:
    """The step times. The database gathers each step's spans, of urgent and of normal
    cases, into arrays; numpy takes the percentiles.

    One way for both databases: SQLite has no percentile_cont, and on PostgreSQL sorting
    the spans for 15 percentile_cont aggregates takes longer than sending them here."""
    dialect = session.get_bind().dialect.name
    columns = [
        _gathered(dialect, _seconds(dialect, start, end)).filter(
            and_(IS_CASE, start.is_not(None), end.is_not(None), URGENT if urgent else ~URGENT)
        )
        for _, start, end in STEPS
        for urgent in (True, False)
    ]
    connection = await session.connection()
    found = (
        await connection.execute(_scoped(select(*columns), scope, period.start, period.end))
    ).one()
    out = []
    for i, (name, _, _) in enumerate(STEPS):
        urgent, normal = _spans(dialect, found[2 * i]), _spans(dialect, found[2 * i + 1])
        out.append(
            StepTime(
                name,
                *_percentiles(np.concatenate((urgent, normal))),
                *_percentiles(urgent),
                *_percentiles(normal),
            )
        )
    return out


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A named row: a category or a ward, with its figures."""

    code: str
    name: str
    figures: Figures


@dataclass
class Report:
    """The monthly report for one period and scope, as of `made_at`."""

    period: Period
    scope: Scope
    scope_name: str
    made_at: datetime
    total: Figures
    by_category: list[Row]
    by_ward: list[Row]
    steps: list[StepTime]
    category_name: str | None = None
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "period": {
                "kind": self.period.kind,
                "month": self.period.month,
                "first_day": self.period.first_day.isoformat(),
                "last_day": self.period.last_day.isoformat(),
            },
            "scope": {**asdict(self.scope), "name": self.scope_name},
            "made_at": self.made_at.isoformat(),
            "total": self.total.as_dict(),
            "by_category": [_row_json(r) for r in self.by_category],
            "by_ward": [_row_json(r) for r in self.by_ward],
            "steps": [asdict(s) for s in self.steps],
            "problems": self.problems,
        }


def _row_json(row: Row) -> dict[str, Any]:
    return {"code": row.code, "name": row.name, **row.figures.as_dict()}


async def monthly_report(
    session: AsyncSession, period: Period, scope: Scope, *, now: datetime | None = None
) -> Report:
    """Count the period's reports in the scope, by ward and category, and the step times:
    one GROUP BY for the counts, rolled up here, and one pass for the step times."""
    now = now or utcnow()
    query = _scoped(
        select(Ticket.ward_code, Ticket.category_code, *_figure_columns(now)),
        scope,
        period.start,
        period.end,
    ).group_by(Ticket.ward_code, Ticket.category_code)
    # Core, not the ORM's result handling: these are plain rows.
    connection = await session.connection()
    rows = (await connection.execute(query)).all()
    counts = np.array([row[2:] for row in rows], dtype=np.int64).reshape(len(rows), len(FIGURES))
    by_ward = _summed([row[0] for row in rows], counts)
    by_category = _summed([row[1] for row in rows], counts)
    total = Figures(*counts.sum(axis=0).tolist())
    steps = await _step_times(session, period, scope)
    found = await connection.execute(
        select(Category.code, Category.name_vi).order_by(Category.sort_order)
    )
    categories: dict[str, str] = {code: name for code, name in found}
    found = await connection.execute(
        select(Ward.code, Ward.name).where(Ward.code.in_(list(by_ward)))
    )
    wards: dict[str, str] = {code: name for code, name in found}
    category_rows = [
        Row(code, name, by_category.get(code, Figures()))
        for code, name in categories.items()
        if scope.category_code in (None, code)
    ]
    ward_rows = [Row(code, wards.get(code, code), by_ward[code]) for code in sorted(by_ward)]
    category_name = categories.get(scope.category_code or "")
    return Report(
        period=period,
        scope=scope,
        scope_name=await scope_name(session, scope),
        made_at=now,
        total=total,
        by_category=category_rows,
        by_ward=ward_rows,
        steps=steps,
        category_name=category_name,
        problems=_checked(total, category_rows, ward_rows),
    )


def _summed(keys: list[str], counts: np.ndarray[Any, Any]) -> dict[str, Figures]:
    """The rows of `counts` added up by their key."""
    index: dict[str, int] = {}
    positions = [index.setdefault(key, len(index)) for key in keys]
    sums = np.zeros((len(index), counts.shape[1]), dtype=np.int64)
    np.add.at(sums, positions, counts)
    return {key: Figures(*sums[i].tolist()) for key, i in index.items()}


def _column_sums(figures: Iterable[Figures]) -> tuple[int, ...]:
    """The counts of `figures` added up field by field (all zero for none)."""
    return tuple(map(sum, zip((0,) * len(FIGURES), *map(_counts_of, figures), strict=True)))


def _checked(total: Figures, *tables: Sequence[Row]) -> list[str]:
    """The totals check: every table adds up to the total, and the identities hold."""
    problems = total.problems()
    for rows in tables:
        if _column_sums(r.figures for r in rows) != _counts_of(total):
            problems.append("a table does not add up to the total")
        problems += [f"{r.code}: {p}" for r in rows for p in r.figures.problems()]
    return problems


async def scope_name(session: AsyncSession, scope: Scope) -> str:
    """The unit the report is for, as its title names it; "" for the whole country."""
    if scope.ward_code is not None:
        ward = await session.get(Ward, scope.ward_code)
        province = await session.get(Province, ward.province_code) if ward else None
        return ", ".join(n for n in (ward and ward.name, province and province.name) if n)
    if scope.unit_id is not None:
        unit = await session.get(Unit, scope.unit_id)
        return unit.name if unit else str(scope.unit_id)
    if scope.province_code is not None:
        province = await session.get(Province, scope.province_code)
        return province.name if province else scope.province_code
    return ""


# --- the trend ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrendPoint:
    """One period of the trend."""

    month: str
    received: int
    cases: int
    answered: int
    on_time: int

    @property
    def on_time_rate(self) -> float | None:
        return self.on_time / self.answered if self.answered else None


async def trend(
    session: AsyncSession, last: Period, scope: Scope, months: int = 12
) -> list[TrendPoint]:
    """The figures of the `months` periods up to and including `last`, oldest first, in
    one query."""
    periods = [last.shifted(-k) for k in range(months - 1, -1, -1)]
    bucket = case(
        *((Ticket.created_at < p.end, i) for i, p in enumerate(periods)), else_=months
    ).label("bucket")
    query = _scoped(
        select(bucket, func.count(Ticket.id), _count(IS_CASE), _count(ANSWERED), _count(ON_TIME)),
        scope,
        periods[0].start,
        last.end,
    ).group_by(bucket)
    found = {int(b): tuple(int(v) for v in rest) for b, *rest in await session.execute(query)}
    return [TrendPoint(p.month, *found.get(i, (0, 0, 0, 0))) for i, p in enumerate(periods)]
