"""The public map's data: the open and recently answered cases in a bounding box,
clustered in SQL on a grid sized by the zoom, their points close up, a paged list, and a
ward's public figures. Only what may be public leaves here: a case's code, category,
ward, status and when it was received; never the reporter, the description or the
polluter named in it (Law 91 treats allegations as sensitive)."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Numeric,
    String,
    TextClause,
    and_,
    case,
    cast,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from backend.geo import PUBLIC_DECIMALS, haversine_km, public_km
from backend.models import MAP_INDEX, Ticket, UTCDateTime
from backend.services.stats import ANSWERED, IS_CASE, ON_TIME
from backend.services.workflow import OPEN_STATES

Status = Literal["open", "answered"]
STATUSES: tuple[Status, ...] = ("open", "answered")
# Answered (or answered and then closed) cases stay on the map this long after the answer.
RECENT_DAYS = 90
ANSWERED_STATES = ("answered", "closed")
# The ward's figures count the cases received in this many days.
FIGURES_DAYS = 365

# The largest zoom asked for; from POINTS_ZOOM on, the cases come one by one.
MAX_ZOOM = 19
POINTS_ZOOM = 15
# At most this many points in one answer (a box at POINTS_ZOOM is a few km across).
POINTS_CAP = 500
# A cluster cell is this many screen pixels square at its zoom (tiles are 256 px).
CELL_PX = 64
# A box wider or taller than this many cells is clustered at a lower zoom: the answer's
# size stays bounded whatever box and zoom are asked for.
MAX_CELLS_ACROSS = 64
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
# Deep pages cost an OFFSET; nobody reads 10,000 cases down a list.
MAX_OFFSET = 10_000


@dataclass(frozen=True)
class Box:
    """A bounding box in degrees: west, south, east, north."""

    west: float
    south: float
    east: float
    north: float

    def clipped(self, to: Box) -> Box | None:
        """The part of the box inside `to`, or None when they do not meet."""
        west, east = max(self.west, to.west), min(self.east, to.east)
        south, north = max(self.south, to.south), min(self.north, to.north)
        if west >= east or south >= north:
            return None
        return Box(west, south, east, north)

    def as_list(self) -> list[float]:
        return [self.west, self.south, self.east, self.north]


# Vietnam with its islands (Hoàng Sa, Trường Sa) and a margin: no case lies outside.
VIETNAM = Box(west=102.0, south=6.0, east=118.0, north=24.0)


class MapQueryError(ValueError):
    """A map request that cannot be answered; `code` names the parameter at fault."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class MapQuery:
    """What the map asks for: a box (already clipped to Vietnam), a zoom and filters."""

    box: Box
    zoom: int
    category: str | None = None
    status: Status | None = None
    ward: str | None = None
    near: tuple[float, float] | None = None  # lat, lon: the list by distance from here
    page: int = 1
    page_size: int = PAGE_SIZE_DEFAULT


@dataclass(frozen=True)
class Cluster:
    """The cases in one grid cell: how many (and how many open), at their mean point."""

    lat: float
    lon: float
    count: int
    open: int


@dataclass(frozen=True)
class Point:
    """One case on the map, close up."""

    code: str
    category: str
    status: Status
    state: str
    lat: float
    lon: float


@dataclass(frozen=True)
class ListItem:
    """One case in the list beside the map."""

    code: str
    category: str
    ward_code: str
    status: Status
    state: str
    received_at: datetime
    distance_km: float | None


@dataclass(frozen=True)
class MapView:
    """The answer: the zoom used, clusters or points, and one page of the list."""

    box: Box
    zoom: int
    since: datetime
    total: int
    clusters: list[Cluster]
    points: list[Point] | None
    truncated: bool
    items: list[ListItem]
    page: int
    page_size: int


def cell_degrees(zoom: int) -> float:
    """A cluster cell's side in degrees at a zoom: CELL_PX of a 256 px tile's 360/2^z."""
    return 360.0 / float(2**zoom) * CELL_PX / 256


def fitted_zoom(box: Box, zoom: int) -> int:
    """The zoom asked for, lowered until the box is at most MAX_CELLS_ACROSS cells each
    way (a phone's screen at its zoom is a few cells across)."""
    widest = max(box.east - box.west, box.north - box.south)
    while zoom > 0 and widest / cell_degrees(zoom) > MAX_CELLS_ACROSS:
        zoom -= 1
    return zoom


def status_of(state: str) -> Status:
    return "answered" if state in ANSWERED_STATES else "open"


def _cell(dialect: str, column: Any, origin: float, size: float) -> ColumnElement[Any]:
    """The grid index of a coordinate. The box lies inside VIETNAM, so the offset from its
    west or south edge is never negative: SQLite's CAST, which truncates, floors it;
    PostgreSQL's CAST would round, so floor() there."""
    offset = (column - literal(origin, Float)) / literal(size, Float)
    if dialect == "postgresql":
        return func.floor(offset)
    return cast(offset, Integer)


def public_degrees(dialect: str, column: Any) -> ColumnElement[Any]:
    """A coordinate as it may be shown (backend.geo.public_point), in SQL: clusters,
    points and the order by distance are all computed from it, so no answer tells more
    of the exact point than the case page does."""
    if dialect == "postgresql":
        # round(double precision, int) does not exist there: through numeric.
        return cast(func.round(cast(column, Numeric), PUBLIC_DECIMALS), Float)
    return cast(func.round(column, PUBLIC_DECIMALS), Float)


# Half the public rounding step, and a little: a point whose rounded value lies in the
# box lies within this of it.
_HALF_STEP = 0.5 * 10.0**-PUBLIC_DECIMALS + 1e-9


# The columns the map reads, by name: the query names its index (below), so it reads
# `tickets` as text rather than through the ORM's table.
class _T:
    """tickets' columns as the map reads them."""

    lat, lon = column("lat", Float), column("lon", Float)
    state, code = column("state", String), column("code", String)
    category, ward = column("category_code", String), column("ward_code", String)
    created, answered = column("created_at", UTCDateTime()), column("answered_at", UTCDateTime())
    hidden, case = column("hidden_at", UTCDateTime()), column("case_id", Integer)


def _tickets(dialect: str) -> TextClause:
    """The tickets table, on SQLite with the map's index named: without statistics per
    value, SQLite's planner takes `case_id IS NULL` or a box of latitudes for selective
    and reads another index, ten times slower. PostgreSQL's planner finds it itself."""
    return text(f"tickets INDEXED BY {MAP_INDEX}" if dialect == "sqlite" else "tickets")


def _visible(query: MapQuery, now: datetime, columns: list[Any], dialect: str) -> Any:
    """The public cases in the box that pass the filters, as a subquery of `columns`:
    open, or answered (or closed) since the cut; merged reports show as their case
    (case_id set: left out); hidden cases are left out.

    On PostgreSQL one WHERE, the planner choosing how (the map's index, or the newest
    first by time for the list). On SQLite two parts, each a range of the map's index
    (models.MAP_INDEX), named: the open cases by state, the recently answered ones by
    state and the answer's time."""
    box = query.box
    lat, lon = public_degrees(dialect, _T.lat), public_degrees(dialect, _T.lon)
    common: list[ColumnElement[bool]] = [
        _T.hidden.is_(None),
        _T.case.is_(None),
        # The exact point's range reads the index; the public point decides: moving the
        # box's edge must not tell more of a point than its rounded value.
        _T.lat >= box.south - _HALF_STEP,
        _T.lat <= box.north + _HALF_STEP,
        _T.lon >= box.west - _HALF_STEP,
        _T.lon <= box.east + _HALF_STEP,
        lat >= box.south,
        lat <= box.north,
        lon >= box.west,
        lon <= box.east,
    ]
    if query.category is not None:
        common.append(_T.category == query.category)
    if query.ward is not None:
        common.append(_T.ward == query.ward)
    since = now - timedelta(days=RECENT_DAYS)
    wanted: list[ColumnElement[bool]] = []
    if query.status in (None, "open"):
        wanted.append(_T.state.in_(OPEN_STATES))
    if query.status in (None, "answered"):
        wanted.append(and_(_T.state.in_(ANSWERED_STATES), _T.answered >= since))
    tickets = _tickets(dialect)
    if dialect != "sqlite" or len(wanted) == 1:
        return (
            select(*columns).select_from(tickets).where(*common, or_(*wanted)).subquery("visible")
        )
    parts = [select(*columns).select_from(tickets).where(*common, w) for w in wanted]
    return union_all(*parts).subquery("visible")


def _public_lat_lon(dialect: str) -> list[ColumnElement[Any]]:
    """The public point's columns, named lat and lon."""
    return [
        public_degrees(dialect, _T.lat).label("lat"),
        public_degrees(dialect, _T.lon).label("lon"),
    ]


async def clusters(
    session: AsyncSession, query: MapQuery, now: datetime, zoom: int
) -> list[Cluster]:
    """The visible cases grouped by grid cell: one GROUP BY in the database."""
    dialect = session.get_bind().dialect.name
    visible = _visible(query, now, [*_public_lat_lon(dialect), _T.state], dialect)
    size = cell_degrees(zoom)
    cx = _cell(dialect, visible.c.lon, VIETNAM.west, size).label("cx")
    cy = _cell(dialect, visible.c.lat, VIETNAM.south, size).label("cy")
    is_open = case((visible.c.state.in_(OPEN_STATES), 1), else_=0)
    connection = await session.connection()  # Core rows, not the ORM's result handling
    found = await connection.execute(
        select(
            func.count(),
            func.sum(is_open),
            func.avg(visible.c.lat),
            func.avg(visible.c.lon),
        )
        .group_by(cx, cy)
        .order_by(cx, cy)
    )
    return [Cluster(float(lat), float(lon), int(n), int(o)) for n, o, lat, lon in found]


async def points(session: AsyncSession, query: MapQuery, now: datetime) -> list[Point]:
    """The visible cases one by one (at most POINTS_CAP + 1, to tell a cut)."""
    dialect = session.get_bind().dialect.name
    visible = _visible(
        query, now, [_T.code, _T.category, _T.state, *_public_lat_lon(dialect)], dialect
    )
    found = await session.execute(select(visible).order_by(visible.c.code).limit(POINTS_CAP + 1))
    return [
        Point(code, category, status_of(state), state, lat, lon)
        for code, category, state, lat, lon in found
    ]


async def listed(session: AsyncSession, query: MapQuery, now: datetime) -> list[ListItem]:
    """One page of the visible cases: the newest first, or the nearest first."""
    dialect = session.get_bind().dialect.name
    columns = [_T.code, _T.category, _T.ward, _T.state, _T.created, *_public_lat_lon(dialect)]
    visible = _visible(query, now, columns, dialect)
    statement = select(visible)
    if query.near is not None:
        lat0, lon0 = query.near
        # Equirectangular distance: the same order as the great circle at these ranges.
        stretch = math.cos(math.radians(lat0))
        dy = visible.c.lat - lat0
        dx = (visible.c.lon - lon0) * stretch
        statement = statement.order_by(dy * dy + dx * dx, visible.c.code)
    else:
        statement = statement.order_by(visible.c.created_at.desc(), visible.c.code)
    offset = (query.page - 1) * query.page_size
    connection = await session.connection()
    # The page as numbers in the text (checked whole numbers): with a bound LIMIT,
    # PostgreSQL's generic plan guesses a tenth of the rows and sorts them all rather
    # than reading the newest first.
    found = await connection.execute(
        statement.offset(literal_column(str(int(offset)))).limit(
            literal_column(str(int(query.page_size)))
        )
    )
    return [
        ListItem(
            code=code,
            category=category,
            ward_code=ward,
            status=status_of(state),
            state=state,
            received_at=created,
            distance_km=(
                None if query.near is None else public_km(haversine_km(*query.near, lat, lon))
            ),
        )
        for code, category, ward, state, created, lat, lon in found
    ]


async def map_view(session: AsyncSession, query: MapQuery, now: datetime) -> MapView:
    """The map's answer for one request: clusters (or points close up) and the list."""
    zoom = fitted_zoom(query.box, query.zoom)
    if session.get_bind().dialect.name == "postgresql":
        # The same statements come with boxes of any size: after five runs PostgreSQL
        # would keep one generic plan, made for no box in particular (ten times slower
        # on a province than a plan made for its box).
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    cells = await clusters(session, query, now, zoom)
    total = sum(c.count for c in cells)
    found: list[Point] | None = None
    truncated = False
    if zoom >= POINTS_ZOOM:
        found = await points(session, query, now)
        truncated = len(found) > POINTS_CAP
        found = found[:POINTS_CAP]
    items = await listed(session, query, now) if total else []
    return MapView(
        box=query.box,
        zoom=zoom,
        since=now - timedelta(days=RECENT_DAYS),
        total=total,
        clusters=cells,
        points=found,
        truncated=truncated,
        items=items,
        page=query.page,
        page_size=query.page_size,
    )


# --- reading the request --------------------------------------------------------------------


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise MapQueryError(name, "not a number") from None
    if not math.isfinite(number):
        raise MapQueryError(name, "not a finite number")
    return number


_WHOLE = re.compile(r"-?[0-9]{1,12}")


def _whole(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if not _WHOLE.fullmatch(value):
        raise MapQueryError(name, "not a whole number")
    number = int(value)
    if not low <= number <= high:
        raise MapQueryError(name, f"from {low} to {high}")
    return number


def parse_box(value: str | None) -> Box | None:
    """`west,south,east,north` in degrees, clipped to Vietnam; None when the box lies
    wholly outside it. Raises MapQueryError when it is not a box."""
    if not value:
        raise MapQueryError("bbox", "required: west,south,east,north")
    parts = value.split(",")
    if len(parts) != 4 or len(value) > 200:
        raise MapQueryError("bbox", "four numbers: west,south,east,north")
    west, south, east, north = (_number("bbox", p) for p in parts)
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise MapQueryError("bbox", "west < east within ±180, south < north within ±90")
    return Box(west, south, east, north).clipped(VIETNAM)


def parse_near(value: str | None) -> tuple[float, float] | None:
    """`lat,lon`, or None when not given."""
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 2 or len(value) > 100:
        raise MapQueryError("near", "two numbers: lat,lon")
    lat, lon = (_number("near", p) for p in parts)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise MapQueryError("near", "lat within ±90, lon within ±180")
    return lat, lon


def parse_query(params: Any, categories: set[str]) -> MapQuery | None:
    """A MapQuery from request parameters (a mapping of strings). None when the box is
    outside Vietnam (nothing to show). A ward is checked for its shape only: the caller
    looks it up."""
    box = parse_box(params.get("bbox"))
    zoom = _whole("zoom", params.get("zoom"), 6, 0, MAX_ZOOM)
    category = params.get("category") or None
    if category is not None and category not in categories:
        raise MapQueryError("category", "unknown category")
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise MapQueryError("status", "open or answered")
    ward = params.get("ward") or None
    if ward is not None and not (len(ward) == 5 and ward.isascii() and ward.isdigit()):
        raise MapQueryError("ward", "a five-digit ward code")
    near = parse_near(params.get("near"))
    page_size = _whole("page_size", params.get("page_size"), PAGE_SIZE_DEFAULT, 1, PAGE_SIZE_MAX)
    page = _whole("page", params.get("page"), 1, 1, MAX_OFFSET // page_size + 1)
    if box is None:
        return None
    return MapQuery(box, zoom, category, status, ward, near, page, page_size)


# --- a ward's figures -------------------------------------------------------------------------


@dataclass(frozen=True)
class WardFigures:
    """A ward's public figures over the cases received in the last FIGURES_DAYS days:
    answered on time as the monthly statistics count it (no step finished after its due
    time), and the median wall-clock days from receiving a case to answering it."""

    cases: int
    answered: int
    on_time: int
    median_days: float | None
    since: datetime

    @property
    def on_time_pct(self) -> float | None:
        return round(100 * self.on_time / self.answered, 1) if self.answered else None


async def ward_figures(session: AsyncSession, ward_code: str, now: datetime) -> WardFigures:
    """The figures for one ward, by the same definitions as backend.services.stats."""
    since = now - timedelta(days=FIGURES_DAYS)
    scoped = and_(Ticket.ward_code == ward_code, Ticket.created_at >= since)
    cases, answered, on_time = (
        await session.execute(
            select(
                func.count(Ticket.id).filter(IS_CASE),
                func.count(Ticket.id).filter(ANSWERED),
                func.count(Ticket.id).filter(ON_TIME),
            ).where(scoped)
        )
    ).one()
    spans = await session.execute(
        select(Ticket.created_at, Ticket.answered_at).where(
            scoped, ANSWERED, Ticket.answered_at.is_not(None)
        )
    )
    days = [(answer - created).total_seconds() / 86400 for created, answer in spans if answer]
    median = round(statistics.median(days), 1) if days else None
    return WardFigures(int(cases), int(answered), int(on_time), median, since)
