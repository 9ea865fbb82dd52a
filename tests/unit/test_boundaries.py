"""The STRtree index with its cells answered at load gives the same ward as testing
every polygon, for overlapping polygons, holes, multipolygons and points outside."""

from __future__ import annotations

import random

import shapely
from shapely.geometry.base import BaseGeometry

from backend.services.boundaries import BoundaryIndex


def brute_force(codes: list[str], polys: list[BaseGeometry], lat: float, lon: float) -> str | None:
    point = shapely.Point(lon, lat)
    return next((c for c, p in zip(codes, polys, strict=True) if p.intersects(point)), None)


def test_the_index_agrees_with_a_scan_of_every_polygon() -> None:
    rnd = random.Random(7)
    codes: list[str] = []
    polys: list[BaseGeometry] = []
    for n in range(60):
        x, y = rnd.uniform(105.0, 106.0), rnd.uniform(19.5, 20.5)
        shape: BaseGeometry = shapely.Point(x, y).buffer(rnd.uniform(0.02, 0.12), quad_segs=6)
        if n % 7 == 0:  # a ward with a hole in it
            shape = shape.difference(shapely.Point(x, y).buffer(0.01))
        if n % 11 == 0:  # a ward in two pieces (an island)
            shape = shapely.union(shape, shapely.box(x + 0.2, y, x + 0.23, y + 0.03))
        codes.append(f"{14000 + n:05d}")
        polys.append(shape)
    index = BoundaryIndex(codes, polys)
    assert index.cached_cells > 0
    points = [(rnd.uniform(19.4, 20.6), rnd.uniform(104.9, 106.3)) for _ in range(3000)]
    expected = [brute_force(codes, polys, lat, lon) for lat, lon in points]
    assert [index.locate(lat, lon) for lat, lon in points] == expected
    assert index.locate_many(points) == expected
    # Both paths were exercised: answers from the cells and from the tree, and misses.
    assert None in expected and len({e for e in expected if e}) > 30


def test_a_point_on_a_shared_edge_goes_to_one_ward() -> None:
    left, right = shapely.box(105.0, 20.0, 105.1, 20.1), shapely.box(105.1, 20.0, 105.2, 20.1)
    index = BoundaryIndex(["00001", "00002"], [left, right])
    assert index.locate(20.05, 105.1) == "00001"
    assert index.locate(20.05, 105.15) == "00002"
    assert index.locate(20.2, 105.15) is None
