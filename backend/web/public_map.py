"""The public map and list at /map, and the JSON they read: /map/data (clusters or
points in a box, and a page of the list), /map/wards (a province's wards) and
/map/wards/{code} (a ward's public figures). No login; nothing about a reporter,
no description, no polluter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiMapping
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.geo import public_km
from backend.models import Category, Province, Ward, utcnow
from backend.services.public_map import (
    FIGURES_DAYS,
    POINTS_ZOOM,
    RECENT_DAYS,
    VIETNAM,
    ListItem,
    MapQuery,
    MapQueryError,
    MapView,
    WardFigures,
    map_view,
    parse_query,
    ward_figures,
)
from backend.timeutil import local
from backend.web.api import json_error
from backend.web.app import SESSIONS, SETTINGS
from backend.web.public import language, linker, public_translator, render_public


class QueryGate:
    """At most `slots` of the map's queries at once in this process; a request that waits
    longer than `wait` seconds for one is answered 503 with Retry-After."""

    def __init__(self, slots: int, wait: float) -> None:
        self._free = asyncio.Semaphore(slots)
        self.wait = wait

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.wait):
                await self._free.acquire()
        except TimeoutError:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "busy", "detail": BUSY}),
                content_type="application/json",
                headers={"Retry-After": str(RETRY_AFTER)},
            ) from None
        try:
            yield
        finally:
            self._free.release()


MAP_GATE = web.AppKey("map_gate", QueryGate)
RETRY_AFTER = 5
BUSY = f"the map is busy: try again in {RETRY_AFTER} seconds"

# The page's own list, before the script takes over: the whole country, newest first.
COUNTRY_ZOOM = 6
# Vietnamese as UTF-8, not \u escapes: a third of the size.
_dumps = partial(json.dumps, ensure_ascii=False)


@dataclass(frozen=True)
class Names:
    """What codes are called in one language: categories and the wards of a page."""

    categories: dict[str, str]
    wards: dict[str, str]


async def category_names(session: AsyncSession, lang: str) -> dict[str, str]:
    found = await session.execute(
        select(Category.code, Category.name_en if lang == "en" else Category.name_vi).order_by(
            Category.sort_order
        )
    )
    return {code: name for code, name in found}


async def ward_names(session: AsyncSession, codes: set[str]) -> dict[str, str]:
    """'Phường Bỉm Sơn, Thanh Hóa' for each ward code."""
    if not codes:
        return {}
    found = await session.execute(
        select(Ward.code, Ward.name, Province.short_name)
        .join(Province, Province.code == Ward.province_code)
        .where(Ward.code.in_(sorted(codes)))
    )
    return {code: f"{name}, {province}" for code, name, province in found}


def _item_json(item: ListItem, names: Names, lang: str) -> dict[str, Any]:
    t, link = public_translator(lang), linker(lang)
    out: dict[str, Any] = {
        "code": item.code,
        "url": link(f"/r/{quote(item.code, safe='')}"),
        "category": names.categories.get(item.category, item.category),
        "ward": names.wards.get(item.ward_code, item.ward_code),
        "status": item.status,
        "status_text": t(f"public.map.state.{item.state}"),
        "received": f"{local(item.received_at):%d/%m/%Y}",
    }
    if item.distance_km is not None:
        out["distance_km"] = public_km(item.distance_km)
    return out


def view_json(view: MapView, names: Names, lang: str) -> dict[str, Any]:
    """The JSON of a map answer: public fields only."""
    t, link = public_translator(lang), linker(lang)
    body: dict[str, Any] = {
        "bbox": view.box.as_list(),
        "zoom": view.zoom,
        "since": view.since.isoformat(),
        "total": view.total,
        "clusters": [
            {"lat": c.lat, "lon": c.lon, "count": c.count, "open": c.open} for c in view.clusters
        ],
        "list": {
            "page": view.page,
            "page_size": view.page_size,
            "total": view.total,
            "items": [_item_json(i, names, lang) for i in view.items],
        },
    }
    if view.points is not None:
        # Close up: the cases one by one in place of the clusters, unless there are more
        # than POINTS_CAP (then the clusters, and `truncated` says why).
        body["truncated"] = view.truncated
        if not view.truncated:
            body["clusters"] = []
            body["points"] = [
                {
                    "code": p.code,
                    "url": link(f"/r/{quote(p.code, safe='')}"),
                    "category": names.categories.get(p.category, p.category),
                    "status": p.status,
                    "status_text": t(f"public.map.state.{p.state}"),
                    "lat": p.lat,
                    "lon": p.lon,
                }
                for p in view.points
            ]
    return body


def _empty() -> dict[str, Any]:
    """The answer for a box wholly outside Vietnam: nothing there."""
    return {
        "bbox": None,
        "zoom": None,
        "total": 0,
        "clusters": [],
        "list": {"page": 1, "page_size": 0, "total": 0, "items": []},
    }


async def _read(
    session: AsyncSession, params: MultiMapping[str], lang: str
) -> tuple[MapQuery | None, dict[str, str]]:
    categories = await category_names(session, lang)
    query = parse_query(params, set(categories))
    if query is not None and query.ward and await session.get(Ward, query.ward) is None:
        raise MapQueryError("ward", "unknown ward")
    return query, categories


async def map_api(request: web.Request) -> web.Response:
    """GET /map/data?bbox=west,south,east,north&zoom=&category=&status=&ward=
    &near=lat,lon&page=&page_size=&lang="""
    lang = language(request)
    now = utcnow()
    async with request.app[MAP_GATE].turn(), request.app[SESSIONS]() as session:
        try:
            query, categories = await _read(session, request.query, lang)
        except MapQueryError as e:
            raise json_error(400, {"error": f"bad_{e.code}", "detail": e.detail}) from None
        if query is None:
            body = _empty()
        else:
            view = await map_view(session, query, now)
            wards = await ward_names(session, {i.ward_code for i in view.items})
            body = view_json(view, Names(categories, wards), lang)
    return web.json_response(body, dumps=_dumps)


async def wards_api(request: web.Request) -> web.Response:
    """GET /map/wards?province=CODE: the province's wards, for the ward filter."""
    province = request.query.get("province", "")
    if not (len(province) == 2 and province.isascii() and province.isdigit()):
        raise json_error(400, {"error": "bad_province", "detail": "a two-digit province code"})
    async with request.app[SESSIONS]() as session:
        found = await session.execute(
            select(Ward.code, Ward.name).where(Ward.province_code == province).order_by(Ward.name)
        )
        wards = [{"code": code, "name": name} for code, name in found]
    return web.json_response({"wards": wards})


def decimal(value: float, lang: str) -> str:
    """A number as the page's language writes it: a decimal comma in Vietnamese."""
    text = f"{value:.1f}"
    return text if lang == "en" else text.replace(".", ",")


def figures_json(ward: Ward, name: str, figures: WardFigures, lang: str) -> dict[str, Any]:
    return {
        "code": ward.code,
        "name": name,
        "province": ward.province_code,
        "lat": ward.lat,
        "lon": ward.lon,
        "since": figures.since.isoformat(),
        "days": FIGURES_DAYS,
        "cases": figures.cases,
        "answered": figures.answered,
        "on_time": figures.on_time,
        "on_time_pct": figures.on_time_pct,
        "median_days": figures.median_days,
    }


async def _ward_with_figures(
    session: AsyncSession, code: str, now: datetime
) -> tuple[Ward, str, WardFigures] | None:
    if not (len(code) == 5 and code.isascii() and code.isdigit()):
        return None
    ward = await session.get(Ward, code)
    if ward is None:
        return None
    names = await ward_names(session, {code})
    return ward, names.get(code, ward.name), await ward_figures(session, code, now)


async def ward_api(request: web.Request) -> web.Response:
    """GET /map/wards/{code}: the ward's public figures."""
    async with request.app[MAP_GATE].turn(), request.app[SESSIONS]() as session:
        found = await _ward_with_figures(session, request.match_info["code"], utcnow())
    if found is None:
        raise json_error(404, {"error": "unknown_ward", "detail": "no ward with this code"})
    return web.json_response(figures_json(*found, language(request)))


async def _country_query(
    session: AsyncSession, given: MultiMapping[str], categories: set[str]
) -> MapQuery:
    """The whole country with the page's filters; a hand-made link with a bad filter
    shows everything."""
    params = {k: v for k, v in given.items() if k in ("category", "status", "ward")}
    box = VIETNAM
    try:
        query = parse_query({**params, "bbox": ",".join(map(str, box.as_list()))}, categories)
    except MapQueryError:
        query = None
    if query is None:
        return MapQuery(box, COUNTRY_ZOOM)
    if query.ward and await session.get(Ward, query.ward) is None:
        return MapQuery(box, COUNTRY_ZOOM)
    return replace(query, box=box, zoom=COUNTRY_ZOOM)


async def map_page(request: web.Request) -> web.Response:
    """GET /map: the map, the filters and the list; the list is filled here for the whole
    country (and for a phone without scripts), then by the script for the map's view."""
    lang = language(request)
    now = utcnow()
    async with request.app[MAP_GATE].turn(), request.app[SESSIONS]() as session:
        categories = await category_names(session, lang)
        query = await _country_query(session, request.query, set(categories))
        view = await map_view(session, query, now)
        wards = await ward_names(session, {i.ward_code for i in view.items})
        items = [_item_json(i, Names(categories, wards), lang) for i in view.items]
        provinces = (
            await session.execute(select(Province.code, Province.name).order_by(Province.name))
        ).all()
        ward = await _ward_with_figures(session, query.ward, now) if query.ward else None
        province = ward[0].province_code if ward else request.query.get("province", "")
        province_wards: list[Any] = []
        if any(code == province for code, _ in provinces):
            province_wards = list(
                await session.execute(
                    select(Ward.code, Ward.name)
                    .where(Ward.province_code == province)
                    .order_by(Ward.name)
                )
            )
    return render_public(
        request,
        "public_map.html",
        tiles=request.app[SETTINGS].map_tile_url,
        categories=categories,
        provinces=provinces,
        province=province,
        province_wards=province_wards,
        query=query,
        total=view.total,
        items=items,
        ward=figures_json(*ward, lang) if ward else None,
        recent_days=RECENT_DAYS,
        figures_days=FIGURES_DAYS,
        points_zoom=POINTS_ZOOM,
        vietnam=VIETNAM.as_list(),
        decimal=lambda value: decimal(value, lang),
    )


def mount_map(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[MAP_GATE] = QueryGate(settings.map_queries_at_once, settings.map_query_wait)
    app.router.add_get("/map", map_page)
    app.router.add_get("/map/data", map_api)
    app.router.add_get("/map/wards", wards_api)
    app.router.add_get("/map/wards/{code}", ward_api)
