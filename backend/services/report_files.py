"""The monthly report as tables, and those tables as an XLSX workbook and as CSV.

The tables are laid out like the official monthly report: a summary of indicators, then
the same figures by category and by ward, then the time each step took. The XLSX, the
CSV and the dashboard all show these same tables; only the rendering differs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from backend.i18n import Catalogues
from backend.services.stats import Figures, Report, Row, rounded
from backend.timeutil import format_local

TEXT = Catalogues(Path(__file__).resolve().parent.parent / "locales", "report")
Kind = Literal["text", "int", "pct", "hours", "rating"]
NUMBER_FORMATS: dict[Kind, str] = {
    "text": "@",
    "int": "#,##0",
    "pct": "0.0%",
    "hours": "#,##0.00",
    "rating": "0.00",
}
# The figures each breakdown row shows, in order.
BREAKDOWN: tuple[tuple[str, Kind], ...] = (
    ("received", "int"),
    ("duplicates", "int"),
    ("rejected", "int"),
    ("cases", "int"),
    ("transferred", "int"),
    ("verified", "int"),
    ("handled", "int"),
    ("answered", "int"),
    ("answered_pct", "pct"),
    ("in_progress", "int"),
    ("overdue", "int"),
    ("on_time", "int"),
    ("on_time_rate", "pct"),
    ("urgent", "int"),
    ("normal", "int"),
    ("reopened", "int"),
    ("rated", "int"),
    ("mean_rating", "rating"),
)
# The summary's indicators: (numbering, figure, the share shown beside it).
SUMMARY: tuple[tuple[str, str, str | None], ...] = (
    ("1", "received", None),
    ("2", "duplicates", None),
    ("3", "rejected", None),
    ("3.1", "rejected_not_pollution", None),
    ("3.2", "rejected_no_place", None),
    ("3.3", "rejected_abusive", None),
    ("3.4", "rejected_spam", None),
    ("4", "cases", None),
    ("4.1", "transferred", "cases"),
    ("4.2", "verified", "cases"),
    ("4.3", "handled", "cases"),
    ("4.4", "answered", "cases"),
    ("4.5", "in_progress", "cases"),
    ("4.6", "overdue", "cases"),
    ("4.7", "on_time", "answered"),
    ("4.8", "urgent", "cases"),
    ("4.9", "normal", "cases"),
    ("4.10", "reopened", "cases"),
    ("5", "rated", None),
    ("6", "mean_rating", None),
)
STEP_COLUMNS: tuple[tuple[str, Kind], ...] = (
    ("step_count", "int"),
    ("median", "hours"),
    ("p90", "hours"),
    ("urgent_count", "int"),
    ("urgent_median", "hours"),
    ("urgent_p90", "hours"),
    ("normal_count", "int"),
    ("normal_median", "hours"),
    ("normal_p90", "hours"),
)


_SAFE = re.compile(r"[^a-z0-9_-]")


@dataclass(frozen=True)
class Table:
    """One sheet: a name, column headers with their kinds, rows, and a total row."""

    name: str
    headers: list[str]
    kinds: list[Kind]
    rows: list[list[Any]]
    total: list[Any] | None = None


def title_lines(report: Report, language: str = "vi") -> list[str]:
    """The lines above every table: what, which unit, which period, as of when, checked."""

    def t(key: str, **params: Any) -> str:
        return TEXT.translate(language, key, **params)

    period = report.period
    lines = [
        t("report.title"),
        t("report.unit", name=report.scope_name or t("report.whole_country")),
    ]
    if report.category_name:
        lines.append(t("report.category", name=report.category_name))
    lines += [
        t(
            f"report.period.{period.kind}",
            month=f"{period.month[5:]}/{period.month[:4]}",
            first=f"{period.first_day:%d/%m/%Y}",
            last=f"{period.last_day:%d/%m/%Y}",
        ),
        t("report.as_of", time=format_local(report.made_at)),
        t("report.check.bad", problems="; ".join(report.problems))
        if report.problems
        else t("report.check.ok"),
    ]
    return lines


def tables(report: Report, language: str = "vi") -> list[Table]:
    """The report's four tables, headed in the language given."""

    def t(key: str) -> str:
        return TEXT.translate(language, key)

    total = report.total.as_dict()
    summary = Table(
        t("sheet.summary"),
        [t("col.no"), t("col.indicator"), t("col.count"), t("col.share")],
        ["text", "text", "int", "pct"],
        [
            [
                number,
                t(f"fig.{name}"),
                total[name],
                rounded(report.total.share(total[name], total[of]), 4) if of else None,
            ]
            for number, name, of in SUMMARY
        ],
    )
    figure_headers = [t(f"fig.{name}") for name, _ in BREAKDOWN]
    figure_kinds = [kind for _, kind in BREAKDOWN]

    def breakdown(
        name: str, rows: list[Row], first: list[str], label: Callable[[Row], list[Any]]
    ) -> Table:
        label_kinds: list[Kind] = ["text"] * len(first)
        return Table(
            t(name),
            [t("col.no"), *first, *figure_headers],
            ["int", *label_kinds, *figure_kinds],
            [[i, *label(r), *_values(r.figures)] for i, r in enumerate(rows, 1)],
            [None, t("row.total"), *([None] * (len(first) - 1)), *_values(report.total)],
        )

    by_category = breakdown(
        "sheet.category", report.by_category, [t("col.category")], lambda r: [r.name]
    )
    by_ward = breakdown(
        "sheet.ward",
        report.by_ward,
        [t("col.ward_code"), t("col.ward")],
        lambda r: [r.code, r.name],
    )
    steps = Table(
        t("sheet.steps"),
        [t("col.no"), t("col.step"), *(t(f"col.{c}") for c, _ in STEP_COLUMNS)],
        ["int", "text", *(k for _, k in STEP_COLUMNS)],
        [
            [
                i,
                t(f"step.{s.step}"),
                s.count,
                s.median,
                s.p90,
                s.urgent_count,
                s.urgent_median,
                s.urgent_p90,
                s.normal_count,
                s.normal_median,
                s.normal_p90,
            ]
            for i, s in enumerate(report.steps, 1)
        ],
    )
    return [summary, by_category, by_ward, steps]


def _values(figures: Figures) -> list[Any]:
    data = figures.as_dict()
    return [data[name] for name, _ in BREAKDOWN]


# --- XLSX ---------------------------------------------------------------------------------

_BOLD = Font(bold=True)
_TITLE = Font(bold=True, size=13)
_HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
_WRAP = Alignment(wrap_text=True, vertical="center", horizontal="center")


def to_xlsx(report: Report) -> bytes:
    """The workbook officials file: Vietnamese headers, one sheet per table, the title
    (unit, period, as of, totals check) above each, numbers formatted."""
    book = Workbook()
    book.remove(book.active)  # type: ignore[arg-type]
    lines = title_lines(report, "vi")
    for table in tables(report, "vi"):
        sheet = book.create_sheet(table.name[:31])
        for i, line in enumerate(lines, 1):
            sheet.cell(row=i, column=1, value=line).font = _TITLE if i == 1 else _BOLD
        head = len(lines) + 2
        for col, header in enumerate(table.headers, 1):
            cell = sheet.cell(row=head, column=col, value=header)
            cell.font, cell.fill, cell.alignment = _BOLD, _HEADER_FILL, _WRAP
        body = [*table.rows, *([table.total] if table.total else [])]
        for r, values in enumerate(body, head + 1):
            for col, (value, kind) in enumerate(zip(values, table.kinds, strict=True), 1):
                cell = sheet.cell(row=r, column=col, value=value)
                if isinstance(value, float) and kind == "int":
                    kind = "rating"  # the summary's mean rating, in its count column
                if value is not None and kind != "text":
                    cell.number_format = NUMBER_FORMATS[kind]
                if table.total is not None and values is table.total:
                    cell.font = _BOLD
        sheet.freeze_panes = sheet.cell(row=head + 1, column=1)
        for col, header in enumerate(table.headers, 1):
            width = 6 if col == 1 else (40 if table.kinds[col - 1] == "text" else 14)
            sheet.column_dimensions[get_column_letter(col)].width = max(width, min(len(header), 8))
        sheet.row_dimensions[head].height = 45
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# --- CSV ----------------------------------------------------------------------------------


def to_csv(report: Report, language: str = "vi") -> str:
    """The same tables one after another, each under its name, with the title lines first.
    Shares are percentages (75.0 for 75 %). Starts with a BOM so spreadsheets read UTF-8."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    for line in title_lines(report, language):
        writer.writerow([line])
    for table in tables(report, language):
        writer.writerow([])
        writer.writerow([table.name])
        writer.writerow(table.headers)
        for values in [*table.rows, *([table.total] if table.total else [])]:
            writer.writerow(_csv_value(v, k) for v, k in zip(values, table.kinds, strict=True))
    return out.getvalue()


def _csv_value(value: Any, kind: Kind) -> Any:
    if value is None:
        return ""
    if kind == "pct":
        return f"{value * 100:.1f}"
    return value


def file_name(report: Report, extension: str) -> str:
    """bao-cao-2026-10-38.xlsx: the period and the scope's codes, ASCII only."""
    scope = report.scope
    parts = ["bao-cao", report.period.month]
    if report.period.kind == "cut25":
        parts.append("ky25")
    parts += [
        p for p in (scope.province_code, scope.ward_code, scope.category_code) if p is not None
    ]
    if scope.unit_id is not None:
        parts.append(f"u{scope.unit_id}")
    # The scope's codes were checked against the database; the name keeps only what a
    # file name may safely hold all the same.
    return "-".join(_SAFE.sub("", p) for p in parts) + f".{extension}"
