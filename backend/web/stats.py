"""Monthly statistics on the web: the /stats page with its charts and filters, the XLSX
and CSV downloads, the reports kept on the 25th, and the JSON API /api/v1/stats. Every
route narrows the request to what the signed-in person may see."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from sqlalchemy import ColumnElement, false, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Category, MonthlyRun, Province, Ward, utcnow
from backend.services.report_files import file_name, tables, title_lines, to_csv, to_xlsx
from backend.services.stats import (
    PERIOD_KINDS,
    Period,
    PeriodKind,
    Report,
    Scope,
    StatsError,
    monthly_report,
    period_containing,
    period_of,
    scope_for,
    trend,
)
from backend.services.workflow import Actor
from backend.timeutil import local
from backend.web.api import identify, json_error
from backend.web.app import SESSIONS, SETTINGS
from backend.web.charts import bar_chart, trend_chart
from backend.web.dashboard import render, require_user

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_STATUS = {
    "forbidden": 403,
    "unknown_ward": 404,
    "unknown_province": 404,
    "unknown_category": 404,
}
_PROVINCE_ROLES = ("operator", "supervisor")
_PROVINCE = re.compile(r"[0-9]{2}")
_WARD = re.compile(r"[0-9]{5}")
_CATEGORY = re.compile(r"[a-z_]{1,32}")


def _asked(request: web.Request) -> tuple[Period, Scope]:
    """The period and scope in the query string (month, period, province, ward,
    category); the current period when no month is given."""
    query = request.query
    kind_text = query.get("period") or request.app[SETTINGS].stats_period
    if kind_text not in PERIOD_KINDS:
        raise StatsError("bad_period", kind_text)
    kind: PeriodKind = "cut25" if kind_text == "cut25" else "month"
    month = query.get("month", "")
    period = period_of(month, kind) if month else period_containing(local(utcnow()).date(), kind)
    scope = Scope(
        query.get("province") or None,
        query.get("ward") or None,
        None,
        query.get("category") or None,
    )
    for value, form in (
        (scope.province_code, _PROVINCE),
        (scope.ward_code, _WARD),
        (scope.category_code, _CATEGORY),
    ):
        if value is not None and form.fullmatch(value) is None:
            raise StatsError("bad_scope", "province: 2 digits, ward: 5 digits, category: a-z")
    return period, scope


async def _report(
    request: web.Request, session: AsyncSession, actor: Actor
) -> tuple[Report, Scope]:
    period, asked = _asked(request)
    scope = await scope_for(session, actor, asked)
    return await monthly_report(session, period, scope), scope


async def _page_report(request: web.Request, session: AsyncSession) -> tuple[Actor, Report, Scope]:
    """The signed-in person's report for the query string, or the HTTP error saying why
    it cannot be shown (for the page and its downloads)."""
    _, actor = await require_user(request, session)
    try:
        report, scope = await _report(request, session, actor)
    except StatsError as exc:
        status = _STATUS.get(exc.code, 400)
        error = {403: web.HTTPForbidden, 404: web.HTTPNotFound}.get(status, web.HTTPBadRequest)
        raise error(text=str(exc)) from exc
    return actor, report, scope


# --- the page -------------------------------------------------------------------------------


async def stats_page(request: web.Request) -> web.Response:
    language = "en" if request.query.get("lang") == "en" else "vi"
    async with request.app[SESSIONS]() as session:
        actor, report, scope = await _page_report(request, session)
        months = await trend(session, report.period, scope)
        categories = list(await session.scalars(select(Category).order_by(Category.sort_order)))
        provinces = (
            list(await session.scalars(select(Province).order_by(Province.name)))
            if actor.role == "admin"
            else []
        )
        wards = (
            list(
                await session.scalars(
                    select(Ward)
                    .where(Ward.province_code == scope.province_code)
                    .order_by(Ward.name)
                )
            )
            if scope.province_code and actor.role in (*_PROVINCE_ROLES, "admin")
            else []
        )
        saved = list(
            await session.scalars(
                select(MonthlyRun)
                .where(
                    MonthlyRun.duty == "report",
                    MonthlyRun.province_code == (scope.province_code or ""),
                    _visible_provinces(actor),
                )
                .order_by(MonthlyRun.period.desc())
                .limit(12)
            )
        )
    query = {k: v for k, v in request.query.items() if k != "lang" and v}
    query.setdefault("month", report.period.month)
    query.setdefault("period", report.period.kind)
    total = report.total
    return render(
        request,
        "stats.html",
        report=report,
        total=total,
        title=title_lines(report, language),
        tables=tables(report, language),
        by_category=bar_chart(
            [
                (r.name, r.figures.received, r.figures.answered)
                for r in report.by_category
                if r.figures.received
            ]
        ),
        by_ward=bar_chart(
            [(r.name, r.figures.received, r.figures.answered) for r in report.by_ward], limit=15
        ),
        ward_count=len(report.by_ward),
        trend=trend_chart(
            [
                (f"{p.month[5:]}/{p.month[2:4]}", p.received, p.answered, p.on_time_rate)
                for p in months
            ]
        ),
        query=query,
        download=urlencode(sorted(query.items())),
        percent=_percent,
        decimal=_decimal,
        cell=_cell,
        categories=categories,
        provinces=provinces,
        wards=wards,
        saved=saved,
        kinds=PERIOD_KINDS,
    )


def _decimal(value: float, digits: int) -> str:
    """A number written the Vietnamese way: a decimal comma (thousands take a point)."""
    return f"{value:,.{digits}f}".translate(_VI_SEPARATORS)


_VI_SEPARATORS = str.maketrans({",": ".", ".": ","})


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{_decimal(share * 100, 1)} %"


def _cell(value: Any, kind: str) -> str:
    """A table cell as the page shows it (the XLSX formats the same kinds)."""
    if value is None:
        return ""
    if kind == "pct":
        return _percent(value)
    if kind in ("hours", "rating"):
        return _decimal(value, 2)
    if kind == "int" and isinstance(value, int):
        return _decimal(value, 0)
    return str(value)


def _visible_provinces(actor: Actor) -> ColumnElement[bool]:
    """The kept reports an actor may open, as a condition: whole-province reports are
    for the province's operators and supervisors (and admins)."""
    if actor.role == "admin":
        return true()
    if actor.role in _PROVINCE_ROLES and actor.province_code:
        return MonthlyRun.province_code == actor.province_code
    return false()


async def stats_download(request: web.Request) -> web.Response:
    """/stats.xlsx and /stats.csv: the report on the page, as a file."""
    extension = request.match_info["ext"]
    async with request.app[SESSIONS]() as session:
        _, report, _ = await _page_report(request, session)
    if extension == "xlsx":
        return _attachment(to_xlsx(report), XLSX_TYPE, file_name(report, extension))
    language = "en" if request.query.get("lang") == "en" else "vi"
    body = to_csv(report, language).encode()
    return _attachment(body, "text/csv; charset=utf-8", file_name(report, extension))


def content_disposition(name: str) -> str:
    """An attachment header for a file name (RFC 6266): a plain ASCII fallback, and the
    name itself as UTF-8 in filename*. Nothing in the name can end the header."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _attachment(body: bytes, content_type: str, name: str) -> web.Response:
    return web.Response(
        body=body,
        headers={"Content-Type": content_type, "Content-Disposition": content_disposition(name)},
    )


async def saved_report(request: web.Request) -> web.Response:
    """A report kept by the monthly duty, for those who may see its province."""
    async with request.app[SESSIONS]() as session:
        _, actor = await require_user(request, session)
        # Another province's report answers exactly as a missing one (one query).
        run = await session.scalar(
            select(MonthlyRun).where(
                MonthlyRun.id == int(request.match_info["id"]),
                MonthlyRun.xlsx.is_not(None),
                _visible_provinces(actor),
            )
        )
    if run is None or run.xlsx is None:
        raise web.HTTPNotFound()
    kind = "ky25-" if run.period_kind == "cut25" else ""
    name = f"bao-cao-{run.period}-{kind}{run.province_code or 'toan-quoc'}.xlsx"
    return _attachment(run.xlsx, XLSX_TYPE, name)


# --- the API --------------------------------------------------------------------------------


async def stats_api(request: web.Request) -> web.Response:
    """GET /api/v1/stats?month=yyyy-mm&period=month|cut25&province=&ward=&category="""
    async with request.app[SESSIONS]() as session:
        _, actor = await identify(request, session)
        try:
            report, _ = await _report(request, session, actor)
        except StatsError as exc:
            raise json_error(
                _STATUS.get(exc.code, 400), {"error": exc.code, "detail": str(exc)}
            ) from exc
    return web.Response(
        text=json.dumps(report.as_json(), ensure_ascii=False), content_type="application/json"
    )


def mount_stats(app: web.Application) -> None:
    app.router.add_get("/stats", stats_page)
    app.router.add_get("/stats.{ext:xlsx|csv}", stats_download)
    app.router.add_get("/stats/saved/{id:[0-9]{1,9}}.xlsx", saved_report)
    app.router.add_get("/api/v1/stats", stats_api)
