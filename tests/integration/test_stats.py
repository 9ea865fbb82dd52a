"""The monthly statistics: every cell of the report, the XLSX read back cell by cell and
the CSV, for a month of tickets run through the real workflow (tests/stats_month.py)."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import date
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Category
from backend.services.report_files import to_csv, to_xlsx
from backend.services.stats import Report, Scope, monthly_report, period_of
from tests.stats_month import (
    NOW,
    OCT_FIRST,
    OCT_LAST,
    STORIES,
    W1,
    WARD_NAMES,
    Story,
    build_month,
    chosen,
    expected,
    expected_steps,
)


async def _month(
    sessions: async_sessionmaker[AsyncSession], scope: Scope, kind: Any = "month"
) -> tuple[Report, list[tuple[str, str]]]:
    async with sessions() as s, s.begin():
        await build_month(s)
    async with sessions() as s:
        report = await monthly_report(s, period_of("2026-10", kind), scope, now=NOW)
        categories = [
            (c.code, c.name_vi)
            for c in await s.scalars(select(Category).order_by(Category.sort_order))
        ]
    return report, categories


def _compare(report: Report, stories: list[Story], categories: list[tuple[str, str]]) -> None:
    assert report.problems == []
    assert report.total.as_dict() == expected(stories)
    assert [(r.code, r.name) for r in report.by_category] == categories
    for row in report.by_category:
        mine = [s for s in stories if s.category == row.code]
        assert row.figures.as_dict() == expected(mine), row.code
    wards = sorted({s.ward for s in stories})
    assert [r.code for r in report.by_ward] == wards
    for row in report.by_ward:
        assert row.figures.as_dict() == expected([s for s in stories if s.ward == row.code])
    assert [asdict(step) for step in report.steps] == expected_steps(stories)


@pytest.mark.parametrize(
    ("scope", "filters"),
    [
        (Scope(), {}),
        (Scope(province_code="38"), {"province": "38"}),
        (Scope(province_code="38", ward_code=W1), {"ward": W1}),
        (
            Scope(province_code="38", category_code="dumping"),
            {"province": "38", "category": "dumping"},
        ),
    ],
    ids=["country", "province", "ward", "category"],
)
async def test_every_cell_of_the_month(
    sessions: async_sessionmaker[AsyncSession], scope: Scope, filters: dict[str, str]
) -> None:
    report, categories = await _month(sessions, scope)
    stories = chosen(OCT_FIRST, OCT_LAST, **filters)
    if scope.category_code:
        categories = [c for c in categories if c[0] == scope.category_code]
    _compare(report, stories, categories)
    # The month has what the issue asks for, so the figures above mean something.
    assert {"dup", "rej:spam", "transferred", "reopened", "overdue"} <= set().union(
        *(s.facts for s in chosen(OCT_FIRST, OCT_LAST))
    )


async def test_a_month_without_reports(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        await build_month(s)
    async with sessions() as s:
        report = await monthly_report(s, period_of("2026-07"), Scope(province_code="38"), now=NOW)
    assert report.problems == []
    assert report.total.as_dict() == expected([])
    assert report.total.received == 0 and report.by_ward == []
    assert len(report.by_category) == 13
    assert all(row.figures.received == 0 for row in report.by_category)
    steps = [asdict(step) for step in report.steps]
    assert steps == expected_steps([])
    assert [s["step"] for s in steps] == ["receive", "claim", "verify", "answer", "total"]
    assert all(s["count"] == 0 and s["median"] is None for s in steps)


async def test_month_boundaries_are_local_days(sessions: async_sessionmaker[AsyncSession]) -> None:
    report, _ = await _month(sessions, Scope())
    keys = {s.key for s in chosen(OCT_FIRST, OCT_LAST)}
    # 00:05 on 1 October (Hà Nội) is in; 23:59 on 30 September and 00:30 on 1 November
    # (both 30/31 October or earlier in UTC) are out; 23:30 on 31 October is in.
    assert {"P", "M", "T"} <= keys and not {"O", "N", "R"} & keys
    assert report.total.received == len(keys) == len(STORIES) - 3


async def test_the_25th_cut(sessions: async_sessionmaker[AsyncSession]) -> None:
    report, categories = await _month(sessions, Scope(province_code="38"), "cut25")
    assert (report.period.first_day, report.period.last_day) == (
        date(2026, 9, 25),
        date(2026, 10, 24),
    )
    stories = chosen(date(2026, 9, 25), date(2026, 10, 24), province="38")
    assert {"O", "R", "S"} <= {s.key for s in stories}
    _compare(report, stories, categories)


# --- the files ----------------------------------------------------------------------------

SUMMARY = [
    ("1", "Số thông tin tiếp nhận", "received", None),
    ("2", "Thông tin trùng (gộp vào vụ việc)", "duplicates", None),
    ("3", "Thông tin từ chối", "rejected", None),
    ("3.1", "Từ chối: không phải ô nhiễm môi trường", "rejected_not_pollution", None),
    ("3.2", "Từ chối: không rõ địa điểm, nội dung", "rejected_no_place", None),
    ("3.3", "Từ chối: lời lẽ xúc phạm", "rejected_abusive", None),
    ("3.4", "Từ chối: tin rác", "rejected_spam", None),
    ("4", "Số vụ việc", "cases", None),
    ("4.1", "Chuyển cơ quan khác", "transferred", "cases"),
    ("4.2", "Đã xác minh", "verified", "cases"),
    ("4.3", "Đã xử lý", "handled", "cases"),
    ("4.4", "Đã phản hồi", "answered", "cases"),
    ("4.5", "Đang xử lý", "in_progress", "cases"),
    ("4.6", "Quá hạn", "overdue", "cases"),
    ("4.7", "Phản hồi đúng hạn", "on_time", "answered"),
    ("4.8", "Khẩn", "urgent", "cases"),
    ("4.9", "Thông thường", "normal", "cases"),
    ("4.10", "Mở lại", "reopened", "cases"),
    ("5", "Lượt đánh giá", "rated", None),
    ("6", "Mức hài lòng trung bình (1–5)", "mean_rating", None),
]
BREAKDOWN = [
    ("Số thông tin tiếp nhận", "received"),
    ("Thông tin trùng (gộp vào vụ việc)", "duplicates"),
    ("Thông tin từ chối", "rejected"),
    ("Số vụ việc", "cases"),
    ("Chuyển cơ quan khác", "transferred"),
    ("Đã xác minh", "verified"),
    ("Đã xử lý", "handled"),
    ("Đã phản hồi", "answered"),
    ("Tỷ lệ đã phản hồi (%)", "answered_pct"),
    ("Đang xử lý", "in_progress"),
    ("Quá hạn", "overdue"),
    ("Phản hồi đúng hạn", "on_time"),
    ("Tỷ lệ đúng hạn (%)", "on_time_rate"),
    ("Khẩn", "urgent"),
    ("Thông thường", "normal"),
    ("Mở lại", "reopened"),
    ("Lượt đánh giá", "rated"),
    ("Mức hài lòng trung bình (1–5)", "mean_rating"),
]
PERCENTS = {"answered_pct", "on_time_rate"}
STEPS = [
    ("receive", "Tiếp nhận → phân loại"),
    ("claim", "Chuyển → nhận xử lý"),
    ("verify", "Xác minh"),
    ("answer", "Xử lý → phản hồi"),
    ("total", "Tổng thời gian (tiếp nhận → phản hồi)"),
]
STEP_COLUMNS = [
    ("Số vụ việc", "count"),
    ("Trung vị (giờ)", "median"),
    ("Phân vị 90 (giờ)", "p90"),
    ("Khẩn: số vụ việc", "urgent_count"),
    ("Khẩn: trung vị (giờ)", "urgent_median"),
    ("Khẩn: phân vị 90 (giờ)", "urgent_p90"),
    ("Thông thường: số vụ việc", "normal_count"),
    ("Thông thường: trung vị (giờ)", "normal_median"),
    ("Thông thường: phân vị 90 (giờ)", "normal_p90"),
]
TITLE = [
    "BÁO CÁO KẾT QUẢ TIẾP NHẬN, XỬ LÝ THÔNG TIN PHẢN ÁNH VỀ Ô NHIỄM MÔI TRƯỜNG QUA ĐƯỜNG DÂY NÓNG",
    "Đơn vị: Tỉnh Thanh Hóa",
    "Kỳ báo cáo: tháng 10/2026 (01/10/2026 – 31/10/2026)",
    "Số liệu tính đến 10:00 10/11/2026",
    "Kiểm tra số liệu: các bảng khớp với tổng",
]


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def expected_sheets(
    stories: list[Story], categories: list[tuple[str, str]]
) -> dict[str, list[list[Any]]]:
    """Each sheet's header row and body (total included), as the test expects them."""
    total = expected(stories)
    summary = [["STT", "Chỉ tiêu", "Số lượng", "Tỷ lệ (%)"]] + [
        [no, label, total[key], _share(total[key], total[of]) if of else None]
        for no, label, key, of in SUMMARY
    ]

    def breakdown(first: list[str], groups: list[tuple[list[Any], list[Story]]]) -> list[list[Any]]:
        rows: list[list[Any]] = [["STT", *first, *(label for label, _ in BREAKDOWN)]]
        for i, (labels, mine) in enumerate(groups, 1):
            figures = expected(mine)
            rows.append([i, *labels, *(figures[key] for _, key in BREAKDOWN)])
        blanks = [None] * (len(first) - 1)
        rows.append([None, "Tổng cộng", *blanks, *(total[key] for _, key in BREAKDOWN)])
        return rows

    wards = sorted({s.ward for s in stories})
    steps = [["STT", "Bước", *(label for label, _ in STEP_COLUMNS)]] + [
        [i, label, *(row[key] for _, key in STEP_COLUMNS)]
        for i, ((_, label), row) in enumerate(zip(STEPS, expected_steps(stories), strict=True), 1)
    ]
    return {
        "Tổng hợp": summary,
        "Theo lĩnh vực": breakdown(
            ["Lĩnh vực"],
            [([name], [s for s in stories if s.category == code]) for code, name in categories],
        ),
        "Theo xã, phường": breakdown(
            ["Mã xã", "Xã, phường"],
            [([w, WARD_NAMES[w]], [s for s in stories if s.ward == w]) for w in wards],
        ),
        "Thời gian xử lý": steps,
    }


async def test_xlsx_read_back_cell_by_cell(sessions: async_sessionmaker[AsyncSession]) -> None:
    report, categories = await _month(sessions, Scope(province_code="38"))
    stories = chosen(OCT_FIRST, OCT_LAST, province="38")
    book = load_workbook(io.BytesIO(to_xlsx(report)))
    sheets = expected_sheets(stories, categories)
    assert book.sheetnames == list(sheets)
    for name, rows in sheets.items():
        sheet = book[name]
        assert [sheet.cell(row=i, column=1).value for i in range(1, 6)] == TITLE
        head = 7
        assert sheet.max_row == head + len(rows) - 1, name
        assert sheet.max_column == len(rows[0]), name
        for r, row in enumerate(rows):
            for c, value in enumerate(row, 1):
                cell = sheet.cell(row=head + r, column=c)
                assert cell.value == value, (name, cell.coordinate)
                if isinstance(value, float) and r > 0:
                    percent = (name == "Tổng hợp" and c == 4) or rows[0][c - 1].endswith("(%)")
                    hours = name == "Thời gian xử lý"
                    wanted = "0.0%" if percent else "#,##0.00" if hours else "0.00"
                    assert cell.number_format == wanted, (name, cell.coordinate)
                elif isinstance(value, int) and c > 1 and r > 0:
                    assert cell.number_format == "#,##0", (name, cell.coordinate)
    # The totals row of each breakdown adds up its rows, checked again on the sheet.
    for name in ("Theo lĩnh vực", "Theo xã, phường"):
        rows = sheets[name]
        col = rows[0].index("Số thông tin tiếp nhận")
        assert sum(r[col] for r in rows[1:-1]) == rows[-1][col] == len(stories)


def _csv_text(value: Any, header: str) -> str:
    if value is None:
        return ""
    if header.endswith("(%)") and isinstance(value, float):
        return f"{value * 100:.1f}"
    return str(value)


async def test_csv_has_the_same_tables(sessions: async_sessionmaker[AsyncSession]) -> None:
    report, categories = await _month(sessions, Scope(province_code="38"))
    stories = chosen(OCT_FIRST, OCT_LAST, province="38")
    text = to_csv(report)
    assert text.startswith("\ufeff")
    lines = list(csv.reader(io.StringIO(text[1:])))
    assert [line[0] for line in lines[:5]] == TITLE
    wanted: list[list[str]] = []
    for name, rows in expected_sheets(stories, categories).items():
        header = rows[0]
        percent_column = [h.endswith("(%)") for h in header]
        wanted += [[], [name], header]
        for row in rows[1:]:
            wanted.append(
                [
                    _csv_text(v, header[i] if percent_column[i] or name != "Tổng hợp" else "")
                    for i, v in enumerate(row)
                ]
            )
    assert lines[5:] == wanted
