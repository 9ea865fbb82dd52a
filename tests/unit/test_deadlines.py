"""Deadlines on the working-hours clock, with real dates: weekends, Tết 2027, 30/4–1/5,
2/9, lunch time, after 17:00, the 24/11 holiday and a configured swapped Saturday."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from backend.services.deadlines import DeadlinePolicy, Policies, WorkCalendar
from backend.timeutil import VN_TZ

POLICY = Policies.load().default


def vn(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=VN_TZ)


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        # Friday 16:00 + 8 h: 1 h on Friday, 4 h Monday morning, 3 h after lunch.
        (vn(2026, 11, 20, 16), 8, vn(2026, 11, 23, 16, 30)),
        # Claimed at lunch: the clock starts at 13:30 and runs into the next morning.
        (vn(2026, 11, 25, 12), 4, vn(2026, 11, 26, 8)),
        # After 17:00 on Monday; Tuesday 24/11 is Vietnam Cultural Day.
        (vn(2026, 11, 23, 18), 1, vn(2026, 11, 25, 8, 30)),
        # Tết 2027: Thursday 4/2 to Wednesday 10/2 are off.
        (vn(2027, 2, 3, 10), 22.5, vn(2027, 2, 15, 10)),
        # 30/4 (Friday), 1/5 (Saturday) and its Monday in lieu, 3/5.
        (vn(2027, 4, 29, 16), 8, vn(2027, 5, 4, 16, 30)),
        # 2/9 and 3/9 2027 (Thursday and Friday).
        (vn(2027, 9, 1, 15), 4, vn(2027, 9, 6, 9, 30)),
        # Saturday 22/8/2026 is worked in exchange for Monday 31/8.
        (vn(2026, 8, 21, 16), 4, vn(2026, 8, 22, 10, 30)),
        (vn(2026, 8, 28, 16), 2, vn(2026, 9, 3, 8, 30)),
    ],
)
def test_working_hours(start: datetime, hours: float, due: datetime) -> None:
    assert POLICY.calendar.add_working_hours(start, hours) == due


def test_without_the_swap_saturday_is_a_weekend() -> None:
    plain = WorkCalendar()
    assert plain.add_working_hours(vn(2026, 8, 21, 16), 4) == vn(2026, 8, 24, 10, 30)


def test_step_deadlines_follow_the_policy() -> None:
    # Reception runs 24/7: classification is due in wall-clock hours, even at night.
    assert POLICY.classify_due(vn(2026, 11, 21, 23), "urgent") == vn(2026, 11, 22, 1)
    assert POLICY.classify_due(vn(2026, 11, 21, 23), "normal") == vn(2026, 11, 22, 5)
    assert POLICY.forward_due(vn(2026, 11, 21, 23)) == vn(2026, 11, 21, 23, 15)
    monday = vn(2026, 11, 30, 15)
    assert POLICY.claim_due(monday) == vn(2026, 12, 1, 15, 30)
    assert POLICY.answer_due(monday, "urgent", False) == vn(2026, 12, 1, 9, 30)
    # Three working days: Monday 15:00 → Thursday 15:00.
    assert POLICY.answer_due(monday, "normal", False) == vn(2026, 12, 3, 15)
    assert POLICY.answer_due(monday, "normal", True) == vn(2026, 12, 14, 15)


def test_working_hours_between_counts_only_open_hours() -> None:
    cal = POLICY.calendar
    assert cal.working_hours_between(vn(2026, 11, 20, 16), vn(2026, 11, 23, 16, 30)) == 8
    assert cal.working_hours_between(vn(2026, 11, 21, 8), vn(2026, 11, 22, 20)) == 0


def test_a_province_overrides_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "deadlines.toml"
    path.write_text(
        '[province.38]\nanswer_working_days_normal = 2\nwork_days = ["2027-02-13"]\n',
        encoding="utf-8",
    )
    policies = Policies.load(path)
    thanh_hoa = policies.for_province("38")
    assert thanh_hoa.answer_working_days_normal == 2
    assert policies.for_province("79") == policies.default
    assert policies.default.answer_working_days_normal == 3
    # Saturday 13/2/2027 is worked in Thanh Hóa only.
    friday = vn(2027, 2, 12, 16)
    assert thanh_hoa.calendar.add_working_hours(friday, 2) == vn(2027, 2, 13, 8, 30)
    assert policies.default.calendar.add_working_hours(friday, 2) == vn(2027, 2, 15, 8, 30)


def test_an_unknown_setting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deadlines.toml"
    path.write_text("[default]\nanswer_days = 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="answer_days"):
        Policies.load(path)


def test_default_policy_matches_the_domain_notes() -> None:
    assert (
        DeadlinePolicy(
            work_days=POLICY.work_days,
            days_off=POLICY.days_off,
        )
        == POLICY
    )


def test_urgency_is_suggested_from_category_and_nature() -> None:
    from backend.services.intake import suggest_urgency

    assert suggest_urgency("dumping", "one_off") == "urgent"
    assert suggest_urgency("dumping", "recurring") == "normal"
    assert suggest_urgency("hazardous", "recurring") == "urgent"
