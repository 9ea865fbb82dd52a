"""Chart geometry for the statistics page, drawn as SVG by the templates (no script, no
CDN): horizontal bars for categories and wards, columns for the monthly trend, and a
line for the on-time rate. Only numbers are computed here; the template escapes labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 400.0
BAR_ROW = 34.0  # a label line above each bar, then the bar
BAR_HEIGHT = 14.0
LABEL_WIDTH = 48.0  # room for the value at the end of a bar


@dataclass(frozen=True)
class Bar:
    """One row: the label, the main value (received) and the part of it (answered)."""

    label: str
    value: int
    part: int
    y: float
    width: float
    part_width: float


@dataclass(frozen=True)
class BarChart:
    width: float
    height: float
    bars: list[Bar]


def bar_chart(rows: Sequence[tuple[str, int, int]], limit: int | None = None) -> BarChart:
    """Horizontal bars, largest first, scaled to the largest value; rows with nothing are
    left out, and `limit` keeps the top."""
    ordered = sorted((r for r in rows if r[1]), key=lambda r: (-r[1], r[0]))[:limit]
    top = max((value for _, value, _ in ordered), default=0) or 1
    span = WIDTH - LABEL_WIDTH
    bars = [
        Bar(
            label,
            value,
            part,
            i * BAR_ROW,
            span * value / top,
            span * part / top,
        )
        for i, (label, value, part) in enumerate(ordered)
    ]
    return BarChart(WIDTH, max(len(bars), 1) * BAR_ROW, bars)


@dataclass(frozen=True)
class Column:
    """One period of the trend: its columns (received, answered) and on-time point."""

    label: str
    x: float
    received: int
    answered: int
    received_height: float
    answered_height: float
    rate: float | None
    rate_y: float | None


@dataclass(frozen=True)
class TrendChart:
    width: float
    height: float
    plot_height: float
    step: float
    columns: list[Column]
    # "x,y x,y …" for the on-time line, through the periods that answered something.
    rate_points: str
    gridlines: list[tuple[float, str]]
    # The y-axis of the columns: (y, how many reports).
    count_lines: list[tuple[float, str]]


TREND_HEIGHT = 200.0
AXIS = 22.0  # room under the columns for the month labels


def trend_chart(points: Sequence[tuple[str, int, int, float | None]]) -> TrendChart:
    """Columns of received and answered per period, and the on-time rate (0–100 %) as a
    line over them on its own scale."""
    top = max((received for _, received, _, _ in points), default=0) or 1
    step = WIDTH / max(len(points), 1)
    plot = TREND_HEIGHT - AXIS
    columns = []
    for i, (label, received, answered, rate) in enumerate(points):
        columns.append(
            Column(
                label,
                i * step,
                received,
                answered,
                plot * received / top,
                plot * answered / top,
                rate,
                None if rate is None else plot * (1 - rate),
            )
        )
    line = " ".join(f"{c.x + step / 2:.1f},{c.rate_y:.1f}" for c in columns if c.rate_y is not None)
    grid = [(plot * (1 - share), f"{share * 100:.0f} %") for share in (0.0, 0.5, 1.0)]
    counts = sorted({0, top // 2, top}, reverse=True) if any(p[1] for p in points) else []
    count_lines = [(plot * (1 - n / top), f"{n:,}".replace(",", ".")) for n in counts]
    return TrendChart(WIDTH, TREND_HEIGHT, plot, step, columns, line, grid, count_lines)
