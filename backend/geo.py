"""Great-circle distances."""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance in km between two WGS84 points on a spherical Earth."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


# The one rule for a point shown publicly (case page, map, Open311): three decimals,
# about 100 m. The exact point is often the resident's own position (the browser's,
# a chat pin, a photo's GPS): where, not whose door. The map computes the same in SQL
# (backend.services.public_map.public_degrees).
PUBLIC_DECIMALS = 3


def public_point(lat: float, lon: float) -> tuple[float, float]:
    """A point as it may be shown publicly: rounded to PUBLIC_DECIMALS."""
    return round(lat, PUBLIC_DECIMALS), round(lon, PUBLIC_DECIMALS)


def public_km(km: float) -> float:
    """A distance as it may be shown publicly: to 0.1 km (finer would tell the point)."""
    return round(km, 1)
