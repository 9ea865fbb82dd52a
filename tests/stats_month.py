"""A month of tickets for the statistics tests, with what each one is, written by hand.

The stories run through the real workflow, in time order, around October 2026 (local
time). Each story carries its facts: what the report should count it as when it is made
at NOW, and the minutes each step took. The expected figures are tallied from those
facts here, by simple counting, never with the code under test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Ticket, Unit
from backend.services.deadlines import Policies
from backend.services.workflow import Action, Actor, act, rate
from backend.timeutil import VN_TZ
from tests.factories import PHOTO, make_ticket, make_user

W1, W2, W3 = "14812", "14797", "00004"  # Bỉm Sơn, Hạc Thành (Thanh Hóa); Ba Đình (Hà Nội)
PROVINCE_OF = {W1: "38", W2: "38", W3: "01"}
WARD_NAMES = {W1: "Phường Bỉm Sơn", W2: "Phường Hạc Thành", W3: "Phường Ba Đình"}
POLICIES = Policies.load()


def at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A local time in 2026, as UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=VN_TZ).astimezone(UTC)


NOW = at(11, 10, 10)
OCT_FIRST, OCT_LAST = date(2026, 10, 1), date(2026, 10, 31)


@dataclass
class Story:
    """One report: where, what, when, what was done to it, and what it should count as.

    facts: "case" | "dup" | "rej:<reason>", then for cases any of urgent, transferred,
    verified, handled, answered, open, overdue, on_time, reopened.
    """

    key: str
    ward: str
    category: str
    received: datetime
    steps: list[tuple[str, datetime, Any]]
    facts: set[str]
    rating: int | None = None
    minutes: dict[str, int] = field(default_factory=dict)
    urgency: str = "normal"

    @property
    def local_day(self) -> date:
        return self.received.astimezone(VN_TZ).date()


def story(
    key: str,
    ward: str,
    category: str,
    received: datetime,
    steps: list[tuple[str, datetime, Any]],
    facts: str,
    rating: int | None = None,
    **minutes: int,
) -> Story:
    words = set(facts.split())
    urgency = "urgent" if "urgent" in words else "normal"
    return Story(key, ward, category, received, steps, words, rating, minutes, urgency)


def _answer(when: datetime) -> tuple[str, datetime, Any]:
    return ("answer", when, None)


STORIES = [
    story(
        "A",
        W1,
        "dumping",
        at(10, 5, 9),
        [
            ("classify", at(10, 5, 9, 30), "normal"),
            ("claim", at(10, 5, 10), None),
            ("verify", at(10, 5, 11), None),
            ("confirm", at(10, 5, 12), None),
            _answer(at(10, 6, 10)),
            ("close", at(10, 14, 9), None),
            ("rate", at(10, 14, 10), 5),
        ],
        "case verified handled answered on_time",
        5,
        receive=30,
        claim=30,
        verify=120,
        answer=1320,
        total=1500,
    ),
    # A second report of A's problem, merged into it; its reporter rates the answer.
    story(
        "H",
        W1,
        "dumping",
        at(10, 5, 12),
        [("merge", at(10, 5, 12, 30), "A"), ("rate", at(10, 6, 11), 4)],
        "dup",
        4,
    ),
    story(
        "B",
        W1,
        "dumping",
        at(10, 6, 10),
        [
            ("classify", at(10, 6, 10, 15), "urgent"),
            ("claim", at(10, 6, 10, 30), None),
            ("verify", at(10, 6, 11), None),
            ("not_confirmed", at(10, 6, 11, 30), "không thấy rác"),
            _answer(at(10, 6, 13, 45)),
            ("rate", at(10, 7, 9), 3),
        ],
        "case urgent verified answered on_time",
        3,
        receive=15,
        claim=15,
        verify=60,
        answer=135,
        total=225,
    ),
    # Claimed days after its due time: answered, but late.
    story(
        "C",
        W1,
        "burning",
        at(10, 7, 8),
        [
            ("classify", at(10, 7, 9), "normal"),
            ("claim", at(10, 12, 9), None),
            ("verify", at(10, 12, 9, 30), None),
            ("confirm", at(10, 12, 10), None),
            _answer(at(10, 12, 14)),
        ],
        "case verified handled answered",
        receive=60,
        claim=7200,
        verify=60,
        answer=240,
        total=7560,
    ),
    story(
        "D",
        W2,
        "wastewater",
        at(10, 10, 20),
        [("classify", at(10, 10, 22), "normal")],
        "case open overdue",
        receive=120,
    ),
    # Claimed late, now being verified with an answer due after NOW: not overdue.
    story(
        "E",
        W1,
        "noise",
        at(10, 12, 8),
        [
            ("classify", at(10, 12, 8, 30), "normal"),
            ("claim", at(11, 9, 8), None),
            ("verify", at(11, 9, 9), None),
        ],
        "case open",
        receive=30,
        claim=40290,
    ),
    # Answered, reopened, claimed again and not yet verified: overdue. It keeps the steps
    # it reached before the reopening (verified, handled).
    story(
        "F",
        W1,
        "dumping",
        at(10, 14, 8),
        [
            ("classify", at(10, 14, 8, 15), "normal"),
            ("claim", at(10, 14, 9), None),
            ("verify", at(10, 14, 9, 30), None),
            ("confirm", at(10, 14, 10), None),
            _answer(at(10, 15, 9)),
            ("reopen", at(10, 16, 9), None),
            ("claim", at(10, 16, 10), None),
            ("verify", at(10, 16, 10, 30), None),
        ],
        "case verified handled open overdue reopened",
        receive=15,
        claim=60,
    ),
    # Reopened and answered again, on time.
    story(
        "G",
        W1,
        "dumping",
        at(10, 15, 8),
        [
            ("classify", at(10, 15, 8, 30), "urgent"),
            ("claim", at(10, 15, 9), None),
            ("verify", at(10, 15, 9, 15), None),
            ("confirm", at(10, 15, 9, 30), None),
            _answer(at(10, 15, 11)),
            ("reopen", at(10, 16, 8), None),
            ("claim", at(10, 16, 8, 30), None),
            ("verify", at(10, 16, 9), None),
            ("confirm", at(10, 16, 10), None),
            _answer(at(10, 16, 11)),
            ("rate", at(10, 16, 15), 4),
        ],
        "case urgent verified handled answered on_time reopened",
        4,
        receive=30,
        claim=30,
        verify=90,
        answer=60,
        total=1620,
    ),
    # Transferred to the province's department, which has not claimed it.
    story(
        "I",
        W2,
        "dumping",
        at(10, 20, 9),
        [("classify", at(10, 20, 9, 30), "normal"), ("transfer", at(10, 20, 10), "province")],
        "case transferred open overdue",
        receive=30,
    ),
    # Transferred to another ward's committee, which answered it on time.
    story(
        "U",
        W1,
        "debris",
        at(10, 21, 8),
        [
            ("classify", at(10, 21, 8, 30), "normal"),
            ("transfer", at(10, 21, 9), f"W{W2}"),
            ("claim", at(10, 21, 10), None),
            ("verify", at(10, 21, 10, 30), None),
            ("confirm", at(10, 21, 11), None),
            _answer(at(10, 22, 9)),
            ("rate", at(10, 22, 12), 5),
        ],
        "case transferred verified handled answered on_time",
        5,
        receive=30,
        claim=60,
        verify=60,
        answer=1320,
        total=1500,
    ),
    story("J", W1, "dumping", at(10, 21, 10), [("reject", at(10, 21, 10, 30), "spam")], "rej:spam"),
    story(
        "K",
        W1,
        "other",
        at(10, 22, 10),
        [("reject", at(10, 22, 11), "not_pollution")],
        "rej:not_pollution",
    ),
    story(
        "L",
        W1,
        "dumping",
        at(10, 22, 14),
        [("reject", at(10, 22, 15), "not_pollution")],
        "rej:not_pollution",
    ),
    # Confirmed and being handled, past its answer due time.
    story(
        "Q",
        W1,
        "debris",
        at(10, 26, 8),
        [
            ("classify", at(10, 26, 8, 30), "normal"),
            ("claim", at(10, 26, 9), None),
            ("verify", at(10, 26, 9, 30), None),
            ("confirm", at(10, 26, 10), None),
        ],
        "case verified open overdue",
        receive=30,
        claim=30,
        verify=60,
    ),
    # The last hours of October in local time (still 31 October in UTC too).
    story("T", W1, "dumping", at(10, 31, 20), [], "case open overdue"),
    story(
        "M",
        W1,
        "dumping",
        at(10, 31, 23, 30),
        [("classify", at(11, 1, 0, 30), "normal")],
        "case open overdue",
        receive=60,
    ),
    # 00:05 on 1 October in Hà Nội is still 30 September in UTC; classified late.
    story(
        "P",
        W3,
        "dumping",
        at(10, 1, 0, 5),
        [
            ("classify", at(10, 1, 8), "normal"),
            ("claim", at(10, 1, 9), None),
            ("verify", at(10, 1, 9, 30), None),
            ("not_confirmed", at(10, 1, 10), "không xác định được"),
            _answer(at(10, 1, 11)),
            ("rate", at(10, 2, 8), 1),
        ],
        "case verified answered",
        1,
        receive=475,
        claim=60,
        verify=60,
        answer=60,
        total=655,
    ),
    # September's last minute: a September report, answered in October.
    story(
        "O",
        W1,
        "dumping",
        at(9, 30, 23, 59),
        [
            ("classify", at(10, 1, 8), "normal"),
            ("claim", at(10, 1, 9), None),
            ("verify", at(10, 1, 9, 30), None),
            ("confirm", at(10, 1, 10), None),
            _answer(at(10, 2, 10)),
        ],
        "case verified handled answered",
        receive=481,
        claim=60,
        verify=60,
        answer=1440,
        total=2041,
    ),
    # A September case, and an October report merged into it.
    story(
        "R",
        W1,
        "dumping",
        at(9, 28, 9),
        [("classify", at(9, 28, 9, 30), "normal"), ("claim", at(9, 28, 10), None)],
        "case open overdue",
        receive=30,
        claim=30,
    ),
    story("S", W1, "dumping", at(10, 3, 10), [("merge", at(10, 3, 10, 30), "R")], "dup"),
    # 00:30 on 1 November local is 31 October in UTC: November's.
    story("N", W1, "dumping", at(11, 1, 0, 30), [], "case open overdue"),
]


# --- running the stories ------------------------------------------------------------------


async def build_month(session: AsyncSession) -> dict[str, str]:
    """Run every story through the workflow in time order; returns key → ticket code."""
    tickets: dict[str, Ticket] = {}
    staff: dict[tuple[str, int | None], Actor] = {}

    async def person(role: str, unit_id: int | None) -> Actor:
        if (role, unit_id) not in staff:
            code = await session.scalar(select(Unit.code).where(Unit.id == unit_id))
            user = await make_user(session, role, code)
            staff[role, unit_id] = await Actor.of_user(session, user)
        return staff[role, unit_id]

    async def operator(s: Story) -> Actor:
        unit_id = await session.scalar(
            select(Unit.id).where(Unit.code == f"P{PROVINCE_OF[s.ward]}")
        )
        return await person("operator", unit_id)

    events: list[tuple[datetime, int, Story, str, Any]] = []
    for s in STORIES:
        events.append((s.received, 0, s, "receive", None))
        events += [(when, i + 1, s, action, arg) for i, (action, when, arg) in enumerate(s.steps)]
    events.sort(key=lambda e: (e[0], e[1]))
    for when, _, s, action, arg in events:
        if action == "receive":
            nature = "one_off" if s.urgency == "urgent" else "recurring"
            tickets[s.key] = await make_ticket(
                session, ward=s.ward, category=s.category, nature=nature, now=when
            )
            continue
        ticket = tickets[s.key]
        if action == "rate":
            reporter = Actor(role="reporter", reporter_id=ticket.reporter_id)
            await rate(session, ticket, arg, reporter, now=when)
            continue
        request, who = await _request(action, arg, tickets)
        if who == "operator":
            by = await operator(s)
        else:
            by = await person(who, ticket.unit_id)
        await act(session, ticket, request, by, POLICIES, now=when)
    return {key: t.code for key, t in tickets.items()}


async def _request(action: str, arg: Any, tickets: dict[str, Ticket]) -> tuple[Action, str]:
    if action == "classify":
        return Action("classify", urgency=arg, competence="ward"), "operator"
    if action == "merge":
        return Action("merge", case_code=tickets[arg].code), "operator"
    if action == "reject":
        return Action("reject", reason=arg), "operator"
    if action == "reopen":
        return Action("reopen"), "operator"
    if action == "transfer":
        if arg.startswith("W"):
            return Action("transfer", reason="sai địa bàn", unit_code=arg), "operator"
        return Action("transfer", reason="cơ sở do tỉnh cấp phép", competence=arg), "operator"
    if action == "not_confirmed":
        return Action("not_confirmed", reason=arg), "ward_staff"
    if action == "answer":
        return Action("answer", result="Đã xử lý", photos=[PHOTO]), "ward_staff"
    if action == "close":
        return Action("close"), "ward_leader"
    return Action(action), "ward_staff"


# --- what the report should say -----------------------------------------------------------

REASONS = ("not_pollution", "no_place", "abusive", "spam")
COUNTS = (
    "received",
    "duplicates",
    *(f"rejected_{r}" for r in REASONS),
    "cases",
    "transferred",
    "verified",
    "handled",
    "answered",
    "in_progress",
    "overdue",
    "on_time",
    "urgent",
    "normal",
    "reopened",
    "rated",
    "rating_sum",
)


def chosen(
    first: date,
    last: date,
    *,
    province: str | None = None,
    ward: str | None = None,
    category: str | None = None,
) -> list[Story]:
    """The stories received between two local days (inclusive), in a scope."""
    return [
        s
        for s in STORIES
        if first <= s.local_day <= last
        and province in (None, PROVINCE_OF[s.ward])
        and ward in (None, s.ward)
        and category in (None, s.category)
    ]


def expected(stories: Iterable[Story]) -> dict[str, Any]:
    """The figures of a set of stories, counted from their facts."""
    stories = list(stories)
    cases = [s for s in stories if "case" in s.facts]

    def among_cases(word: str) -> int:
        return sum(word in s.facts for s in cases)

    out: dict[str, Any] = {
        "received": len(stories),
        "duplicates": sum("dup" in s.facts for s in stories),
        **{f"rejected_{r}": sum(f"rej:{r}" in s.facts for s in stories) for r in REASONS},
        "cases": len(cases),
        "transferred": among_cases("transferred"),
        "verified": among_cases("verified"),
        "handled": among_cases("handled"),
        "answered": among_cases("answered"),
        "in_progress": among_cases("open"),
        "overdue": among_cases("overdue"),
        "on_time": among_cases("on_time"),
        "urgent": among_cases("urgent"),
        "normal": len(cases) - among_cases("urgent"),
        "reopened": among_cases("reopened"),
        "rated": sum(s.rating is not None for s in stories),
        "rating_sum": sum(s.rating or 0 for s in stories),
    }
    out["rejected"] = sum(out[f"rejected_{r}"] for r in REASONS)
    for name in ("verified", "handled", "answered"):
        out[f"{name}_pct"] = round(out[name] / len(cases), 4) if cases else None
    out["on_time_rate"] = round(out["on_time"] / out["answered"], 4) if out["answered"] else None
    out["mean_rating"] = round(out["rating_sum"] / out["rated"], 2) if out["rated"] else None
    return out


def percentile(values: list[float], p: float) -> float:
    """Linear between the two nearest ranks (as SQL's percentile_cont)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


STEP_NAMES = ("receive", "claim", "verify", "answer", "total")


def expected_steps(stories: Iterable[Story]) -> list[dict[str, Any]]:
    """Per step: count, median and p90 in hours (2 decimals), all, urgent and normal."""
    cases = [s for s in stories if "case" in s.facts]
    out = []
    for step in STEP_NAMES:
        row: dict[str, Any] = {"step": step}
        for prefix, group in (
            ("", cases),
            ("urgent_", [s for s in cases if s.urgency == "urgent"]),
            ("normal_", [s for s in cases if s.urgency == "normal"]),
        ):
            hours = [s.minutes[step] / 60 for s in group if step in s.minutes]
            row[f"{prefix}count"] = len(hours)
            row[f"{prefix}median"] = round(percentile(hours, 0.5), 2) if hours else None
            row[f"{prefix}p90"] = round(percentile(hours, 0.9), 2) if hours else None
        out.append(row)
    return out


def overdue_now(stories: Iterable[Story], now: datetime) -> int:
    """The overdue count at a later time than NOW: E's answer falls due after NOW."""
    late_e = now > POLICIES.default.answer_due(at(11, 9, 8), "normal", False)
    return sum("overdue" in s.facts or (s.key == "E" and late_e) for s in stories)
