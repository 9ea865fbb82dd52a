"""Deadlines on a working-hours clock: Vietnamese holidays, swapped days, per-province policy.

A working day is Mon–Fri 07:30–11:30 and 13:30–17:00 in Asia/Ho_Chi_Minh, minus public
holidays, plus the weekend days a province works in exchange. "N working days" means
N × 7.5 working hours, so a ticket claimed at 15:00 on a Monday with 3 working days is
due at 15:00 on Thursday.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import holidays

from backend.timeutil import VN_TZ

DEFAULT_POLICY_FILE = Path(__file__).resolve().parent.parent / "data" / "deadlines.toml"
PERIODS = ((time(7, 30), time(11, 30)), (time(13, 30), time(17, 0)))
HOURS_PER_DAY = 7.5


@dataclass(frozen=True)
class WorkCalendar:
    """Which days are worked, and arithmetic in working time."""

    days_off: frozenset[date] = frozenset()
    work_days: frozenset[date] = frozenset()

    def is_working_day(self, day: date) -> bool:
        if day in self.work_days:
            return True
        return day.weekday() < 5 and day not in self.days_off and day not in _holidays(day.year)

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """The moment `hours` of working time after start (timezone-aware, in UTC)."""
        remaining = timedelta(hours=hours)
        local = start.astimezone(VN_TZ)
        day = local.date()
        for _ in range(3700):  # ten years of days: a policy never asks for more
            if self.is_working_day(day):
                for opens, closes in PERIODS:
                    begin = datetime.combine(day, opens, VN_TZ)
                    end = datetime.combine(day, closes, VN_TZ)
                    begin = max(begin, local)
                    if begin >= end:
                        continue
                    if remaining <= end - begin:
                        return (begin + remaining).astimezone(start.tzinfo)
                    remaining -= end - begin
            day += timedelta(days=1)
        raise ValueError(f"{hours} working hours is beyond the calendar")

    def add_working_days(self, start: datetime, days: float) -> datetime:
        return self.add_working_hours(start, days * HOURS_PER_DAY)

    def working_hours_between(self, start: datetime, end: datetime) -> float:
        """Working hours from start to end (0 when end is before start)."""
        if end <= start:
            return 0.0
        total = timedelta()
        day = start.astimezone(VN_TZ).date()
        last = end.astimezone(VN_TZ).date()
        while day <= last:
            if self.is_working_day(day):
                for opens, closes in PERIODS:
                    begin = max(datetime.combine(day, opens, VN_TZ), start)
                    stop = min(datetime.combine(day, closes, VN_TZ), end)
                    if stop > begin:
                        total += stop - begin
            day += timedelta(days=1)
        return total.total_seconds() / 3600


@cache
def _holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("VN", years=year))


@dataclass(frozen=True)
class DeadlinePolicy:
    """One province's deadlines (the defaults are those in DOMAIN.md)."""

    classify_hours_urgent: float = 2
    classify_hours_normal: float = 6
    forward_minutes: float = 15
    claim_working_hours: float = 8
    answer_working_hours_urgent: float = 4
    answer_working_days_normal: float = 3
    answer_working_days_complex: float = 10
    reopen_window_days: float = 7
    escalate_again_hours: float = 4
    work_days: tuple[date, ...] = ()
    days_off: tuple[date, ...] = ()
    # A province's option: a report whose category is clear is classified (urgency from
    # its category and nature, competence from its category) and forwarded at once.
    auto_classify: bool = False

    @property
    def calendar(self) -> WorkCalendar:
        return _calendar(self.days_off, self.work_days)

    def classify_due(self, received: datetime, urgency: str) -> datetime:
        hours = self.classify_hours_urgent if urgency == "urgent" else self.classify_hours_normal
        return received + timedelta(hours=hours)

    def forward_due(self, classified: datetime) -> datetime:
        return classified + timedelta(minutes=self.forward_minutes)

    def claim_due(self, assigned: datetime) -> datetime:
        return self.calendar.add_working_hours(assigned, self.claim_working_hours)

    def answer_due(self, claimed: datetime, urgency: str, complex_case: bool) -> datetime:
        cal = self.calendar
        if complex_case:
            return cal.add_working_days(claimed, self.answer_working_days_complex)
        if urgency == "urgent":
            return cal.add_working_hours(claimed, self.answer_working_hours_urgent)
        return cal.add_working_days(claimed, self.answer_working_days_normal)

    def reopen_until(self, answered: datetime) -> datetime:
        return answered + timedelta(days=self.reopen_window_days)


@cache
def _calendar(days_off: tuple[date, ...], work_days: tuple[date, ...]) -> WorkCalendar:
    return WorkCalendar(frozenset(days_off), frozenset(work_days))


class Policies:
    """The default policy and the provinces' overrides, read from TOML files."""

    def __init__(self, default: DeadlinePolicy, provinces: Mapping[str, DeadlinePolicy]):
        self.default = default
        self._provinces = dict(provinces)

    def for_province(self, code: str | None) -> DeadlinePolicy:
        return self._provinces.get(code or "", self.default)

    def overrides(self) -> list[DeadlinePolicy]:
        return list(self._provinces.values())

    def replace_with(self, other: Policies) -> None:
        """Take another's policies in place (every holder of this object sees them)."""
        self.default = other.default
        self._provinces = dict(other._provinces)

    @classmethod
    def load(cls, *files: Path | None) -> Policies:
        """The shipped defaults, then each file's [default] and [province.<code>] on top."""
        docs: list[tuple[dict[str, Any], str]] = []
        for path in (DEFAULT_POLICY_FILE, *files):
            if path is None:
                continue
            with path.open("rb") as f:
                docs.append((tomllib.load(f), str(path)))
        return cls._from_docs(docs)

    @classmethod
    def from_text(cls, content: str, where: str) -> Policies:
        """The shipped defaults with a policy file's text on top. Raises ValueError (or
        tomllib's error, a ValueError too) when it is not a valid policy."""
        with DEFAULT_POLICY_FILE.open("rb") as f:
            shipped = tomllib.load(f)
        return cls._from_docs(
            [(shipped, str(DEFAULT_POLICY_FILE)), (tomllib.loads(content), where)]
        )

    @classmethod
    def _from_docs(cls, docs: Iterable[tuple[dict[str, Any], str]]) -> Policies:
        default = DeadlinePolicy()
        overrides: dict[str, dict[str, Any]] = {}
        for doc, where in docs:
            default = _apply(default, doc.get("default", {}), where)
            for code, values in doc.get("province", {}).items():
                overrides.setdefault(str(code), {}).update(values)
        provinces = {
            code: _apply(default, values, f"province {code}") for code, values in overrides.items()
        }
        return cls(default, provinces)


_FIELDS = {f.name for f in fields(DeadlinePolicy)}


def _apply(policy: DeadlinePolicy, values: Mapping[str, Any], where: str) -> DeadlinePolicy:
    unknown = set(values) - _FIELDS
    if unknown:
        raise ValueError(f"unknown deadline settings in {where}: {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("work_days", "days_off"):
            changes[name] = tuple(_dates(value))
        elif name == "auto_classify":
            if not isinstance(value, bool):
                raise ValueError(f"auto_classify in {where} is true or false, not {value!r}")
            changes[name] = value
        else:
            changes[name] = float(value)
    return replace(policy, **changes)


def _dates(values: Iterable[Any]) -> Iterable[date]:
    for v in values:
        yield v if isinstance(v, date) else date.fromisoformat(str(v))
