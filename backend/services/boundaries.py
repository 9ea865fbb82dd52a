"""Ward polygons: GeoJSON import and point-in-polygon routing through a shapely STRtree."""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Ward, WardBoundary, utcnow
from backend.services.upsert import upsert
from backend.services.versions import WARDS as WARDS_DATA
from backend.services.versions import bump


class BoundaryFileError(ValueError):
    """The file is not a GeoJSON FeatureCollection of ward polygons."""


@dataclass(slots=True)
class BoundaryImport:
    imported: int = 0
    unknown_codes: list[str] = field(default_factory=list)
    not_polygons: list[str] = field(default_factory=list)
    repaired: int = 0


def read_features(path: Path, code_property: str) -> list[tuple[str, BaseGeometry | None]]:
    """(ward code, polygon) per feature; None for a geometry that is not an area."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoundaryFileError(f"{path}: not readable as JSON ({exc})") from exc
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list) or doc.get("type") != "FeatureCollection":
        raise BoundaryFileError(f"{path}: not a GeoJSON FeatureCollection")
    rows: list[tuple[str, BaseGeometry | None]] = []
    for n, feature in enumerate(features, 1):
        props = feature.get("properties") or {}
        if code_property not in props:
            names = ", ".join(sorted(props)) or "none"
            raise BoundaryFileError(
                f"feature {n} has no property {code_property!r} (it has: {names}); "
                "name the ward code property with --code-property"
            )
        code = str(props[code_property]).strip().zfill(5)
        try:
            geom: BaseGeometry | None = shape(feature["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError):
            geom = None
        rows.append((code, geom))
    return rows


async def import_boundaries(
    session: AsyncSession, features: Sequence[tuple[str, BaseGeometry | None]]
) -> BoundaryImport:
    """Store each known ward's polygon, replacing what was there. Idempotent."""
    result = BoundaryImport()
    known = set(await session.scalars(select(Ward.code)))
    rows: list[dict[str, object]] = []
    for code, geom in features:
        if code not in known:
            result.unknown_codes.append(code)
            continue
        if geom is not None and not geom.is_valid:
            geom = shapely.make_valid(geom)
            result.repaired += 1
        if geom is not None:
            geom = shapely.union_all(
                [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
            )
        if geom is None or geom.is_empty or geom.area == 0:
            result.not_polygons.append(code)
            continue
        rows.append({"ward_code": code, "geometry": shapely.to_wkb(geom), "imported_at": utcnow()})
    await upsert(session, WardBoundary, rows, ["ward_code"])
    await bump(session, WARDS_DATA)
    result.imported = len(rows)
    return result


async def clear_boundaries(session: AsyncSession) -> None:
    await session.execute(delete(WardBoundary))
    await bump(session, WARDS_DATA)


class BoundaryIndex:
    """Ward polygons in a shapely STRtree.

    Most points fall well inside a ward, so every grid cell (CELL degrees square) near a
    polygon is classified once at load: when the polygons that wholly hold the cell
    decide the answer for any point in it, the cell remembers that answer, and such a
    point costs one dictionary look-up. Points in other cells go to the tree.
    """

    CELL = 0.01
    _NONE = -1
    _SPAN = 1 << 20  # cell keys: x * _SPAN + y, with y shifted to be non-negative

    def __init__(self, codes: Sequence[str], polygons: Sequence[BaseGeometry]) -> None:
        self.codes = list(codes)
        self._geoms = np.asarray(polygons, dtype=object)
        shapely.prepare(self._geoms)
        self.tree = STRtree(self._geoms)
        self._codes = np.asarray([*self.codes, None], dtype=object)  # [-1] → None
        # The cells answered at load: sorted keys and their owners (bisected one at a
        # time through a memoryview, which yields plain ints, or searched in bulk).
        self._cell_keys, self._cell_owner = self._classify_cells()
        self._key_view = memoryview(self._cell_keys)
        self._owner_view = memoryview(self._cell_owner)

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def cached_cells(self) -> int:
        return len(self._cell_keys)

    @classmethod
    async def load(cls, session: AsyncSession) -> BoundaryIndex | None:
        rows = (await session.execute(select(WardBoundary.ward_code, WardBoundary.geometry))).all()
        if not rows:
            return None
        return cls([r[0] for r in rows], list(shapely.from_wkb([r[1] for r in rows])))

    def _key(self, lat: float, lon: float) -> int:
        key: int = self._keys(math.floor(lon / self.CELL), math.floor(lat / self.CELL))
        return key

    def _keys(self, x: Any, y: Any) -> Any:
        """Cell keys from cell columns and rows (ints or integer arrays)."""
        return x * self._SPAN + y + (self._SPAN >> 1)

    def _classify_cells(self) -> tuple[Any, Any]:
        if not self.codes:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        c = self.CELL
        blocks = []
        for x0, y0, x1, y1 in shapely.bounds(self._geoms):
            xs = np.arange(math.floor(x0 / c), math.floor(x1 / c) + 1)
            ys = np.arange(math.floor(y0 / c), math.floor(y1 / c) + 1)
            blocks.append(np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2))
        cells = np.unique(np.concatenate(blocks), axis=0)
        # A hair wider than the cell: floor(x / c) and cell * c round differently, so a
        # point placed in a cell by division may lie a rounding error outside it.
        e = c * 1e-6
        x0, y0 = cells[:, 0] * c - e, cells[:, 1] * c - e
        boxes = shapely.box(x0, y0, x0 + c + 2 * e, y0 + c + 2 * e)
        box_idx, geom_idx = self.tree.query(boxes, predicate="intersects")
        whole = shapely.contains_properly(self._geoms[geom_idx], boxes[box_idx])
        # The answer for a point is the lowest polygon index holding it. A cell's answer
        # is fixed when the lowest index holding the whole cell is below every polygon
        # that holds only part of it.
        big = len(self.codes)
        lowest_whole = np.full(len(boxes), big)
        lowest_part = np.full(len(boxes), big)
        np.minimum.at(lowest_whole, box_idx[whole], geom_idx[whole])
        np.minimum.at(lowest_part, box_idx[~whole], geom_idx[~whole])
        fixed = lowest_whole < lowest_part
        empty = (lowest_whole == big) & (lowest_part == big)
        keys = self._keys(cells[:, 0], cells[:, 1])  # sorted, as the cells are
        answer = np.where(fixed, lowest_whole, self._NONE)
        keep = fixed | empty
        return np.ascontiguousarray(keys[keep]), np.ascontiguousarray(answer[keep])

    def locate(self, lat: float, lon: float) -> str | None:
        """The code of the ward whose polygon holds the point (the first, if several)."""
        key = self._key(lat, lon)
        at = bisect_left(self._key_view, key)
        if at < len(self._key_view) and self._key_view[at] == key:
            owner: int = self._owner_view[at]
            return self.codes[owner] if owner != self._NONE else None
        hits = self.tree.query(shapely.Point(lon, lat), predicate="intersects")
        return self.codes[int(hits.min())] if len(hits) else None

    def locate_many(self, points: Iterable[tuple[float, float]]) -> list[str | None]:
        """locate() for many (lat, lon) points: the cells answered at load, vectorised,
        then one tree query for the rest."""
        pts = np.asarray(list(points), dtype=float).reshape(-1, 2)
        cells = np.floor(pts / self.CELL).astype(np.int64)
        keys = self._keys(cells[:, 1], cells[:, 0])
        owner = np.full(len(pts), self._NONE, dtype=np.int64)
        if len(self._cell_keys):
            at = np.minimum(np.searchsorted(self._cell_keys, keys), len(self._cell_keys) - 1)
            known = self._cell_keys[at] == keys
            owner[known] = self._cell_owner[at[known]]
        else:
            known = np.zeros(len(pts), dtype=bool)
        rest = np.flatnonzero(~known)
        if len(rest):
            big = len(self.codes)
            lowest = np.full(len(rest), big)
            pt_idx, geom_idx = self.tree.query(
                shapely.points(pts[rest, 1], pts[rest, 0]), predicate="intersects"
            )
            np.minimum.at(lowest, pt_idx, geom_idx)
            owner[rest] = np.where(lowest == big, self._NONE, lowest)
        found: list[str | None] = self._codes[owner].tolist()
        return found
