"""Point-in-polygon routing: the STRtree index against a naive scan, in one run.

3,321 polygons of equal area (the mean ward area) around the real ward centroids, as
32-gons. Points are drawn around random centroids. The index is timed per call
(`locate`, what a report does) and in bulk (`locate_many`); the naive scan tests every
polygon in turn until one holds the point, using the same prepared geometries.

Goal: ≥ 200,000 lookups/s and ≥ 100× the naive scan.
"""

from __future__ import annotations

import math
import random
import statistics
import time

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from backend.services.boundaries import BoundaryIndex

SIDES = 32
POINTS = 200_000
NAIVE_POINTS = 1_000
ROUNDS = 5


def polygons() -> tuple[list[str], list[BaseGeometry], list[tuple[float, float]], float]:
    from vietnamadminunits.database import get_data

    rows = get_data(["wardCode", "wardLat", "wardLon", "wardAreaKm2"])
    area = statistics.fmean(float(r["wardAreaKm2"] or 0) for r in rows)
    radius_km = math.sqrt(area / math.pi)
    angles = np.linspace(0, 2 * math.pi, SIDES, endpoint=False)
    codes: list[str] = []
    polys: list[BaseGeometry] = []
    centres: list[tuple[float, float]] = []
    for r in rows:
        lat, lon = float(r["wardLat"]), float(r["wardLon"])
        dlat = radius_km / 111.32
        dlon = dlat / math.cos(math.radians(lat))
        ring = np.c_[lon + dlon * np.cos(angles), lat + dlat * np.sin(angles)]
        codes.append(str(r["wardCode"]).zfill(5))
        polys.append(shapely.Polygon(ring))
        centres.append((lat, lon))
    return codes, polys, centres, radius_km


def tessellation(centres: list[tuple[float, float]]) -> list[BaseGeometry]:
    """Voronoi cells of the centroids, clipped to their hull: wards that do not overlap."""
    sites = shapely.MultiPoint([(lon, lat) for lat, lon in centres])
    hull = sites.convex_hull.buffer(0.05)
    cells = shapely.get_parts(shapely.voronoi_polygons(sites, ordered=True))
    return list(shapely.intersection(cells, hull))


def sample(
    centres: list[tuple[float, float]], radius_km: float, n: int
) -> list[tuple[float, float]]:
    rnd = random.Random(174)
    reach = radius_km / 111.32
    out = []
    for _ in range(n):
        lat, lon = centres[rnd.randrange(len(centres))]
        out.append((lat + rnd.uniform(-reach, reach), lon + rnd.uniform(-reach, reach)))
    return out


def naive(index: BoundaryIndex, polys: list[BaseGeometry], lat: float, lon: float) -> str | None:
    point = shapely.Point(lon, lat)
    for code, poly in zip(index.codes, polys, strict=True):
        if poly.intersects(point):
            return code
    return None


def measure(
    label: str, codes: list[str], polys: list[BaseGeometry], points: list[tuple[float, float]]
) -> None:
    t0 = time.perf_counter()
    index = BoundaryIndex(codes, polys)
    build = time.perf_counter() - t0
    probe = points[:NAIVE_POINTS]
    # The index and the naive scan agree, point by point.
    assert [index.locate(*p) for p in probe] == [naive(index, polys, *p) for p in probe]
    assert index.locate_many(points) == [index.locate(*p) for p in points]

    per_call, bulk, scan = [], [], []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for lat, lon in points:
            index.locate(lat, lon)
        per_call.append(len(points) / (time.perf_counter() - t))
        t = time.perf_counter()
        index.locate_many(points)
        bulk.append(len(points) / (time.perf_counter() - t))
        t = time.perf_counter()
        for lat, lon in probe:
            naive(index, polys, lat, lon)
        scan.append(len(probe) / (time.perf_counter() - t))
    one, many, base = (statistics.median(x) for x in (per_call, bulk, scan))
    print(f"{label}: index built in {build:.2f} s, {index.cached_cells:,} cells answered at load")
    print(f"  naive scan      {base:>12,.0f} lookups/s")
    print(
        f"  STRtree locate  {one:>12,.0f} lookups/s  ratio {one / base:5.0f}×  (one call per point)"
    )
    print(f"  STRtree bulk    {many:>12,.0f} lookups/s  ratio {many / base:5.0f}×  (locate_many)")


def main() -> None:
    codes, polys, centres, radius_km = polygons()
    points = sample(centres, radius_km, POINTS)
    measure(
        f"{len(codes)} equal-area 32-gons of {math.pi * radius_km**2:.0f} km²", codes, polys, points
    )
    measure(
        f"{len(codes)} Voronoi cells of the same centroids", codes, tessellation(centres), points
    )
    print("goal: ≥ 200,000 lookups/s and ≥ 100× the naive scan")


if __name__ == "__main__":
    main()
