"""A local Nominatim stand-in: aiohttp on 127.0.0.1 answering /search and /reverse in
Nominatim's JSON shape (format=json): strings for lat/lon, display_name, boundingbox,
an address object, and {"error": "Unable to geocode"} for a point with nothing there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from backend.geo import haversine_km
from backend.text import search_key
from tests.fakes.server import StandIn

LICENCE = "Data © OpenStreetMap contributors, ODbL 1.0. http://osm.org/copyright"


@dataclass(frozen=True)
class Place:
    """One thing the stand-in knows: found by any of its names, or by a point nearby."""

    names: tuple[str, ...]
    lat: float
    lon: float
    display_name: str
    address: dict[str, str]
    osm_id: int = 1


@dataclass
class Request:
    path: str
    query: dict[str, str]
    user_agent: str
    at: float


BIM_SON_MARKET = Place(
    names=("cho bim son", "tran phu bim son"),
    lat=20.0762,
    lon=105.9051,
    display_name="Chợ Bỉm Sơn, Đường Trần Phú, Phường Bỉm Sơn, Tỉnh Thanh Hóa, Việt Nam",
    address={
        "amenity": "Chợ Bỉm Sơn",
        "road": "Đường Trần Phú",
        "suburb": "Phường Bỉm Sơn",
        "state": "Tỉnh Thanh Hóa",
        "country": "Việt Nam",
        "country_code": "vn",
    },
    osm_id=123456,
)


@dataclass
class FakeNominatim(StandIn):
    places: list[Place] = field(default_factory=lambda: [BIM_SON_MARKET])
    host: str = "127.0.0.1"
    # Seconds to wait before answering: past the client's timeout, a geocoder that hangs.
    delay: float = 0.0
    requests: list[Request] = field(default_factory=list)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/search", self._search)
        app.router.add_get("/reverse", self._reverse)
        return await self._serve(app, self.host)

    def _record(self, request: web.Request) -> None:
        self.requests.append(
            Request(
                request.path,
                dict(request.query),
                request.headers.get("User-Agent", ""),
                time.monotonic(),
            )
        )

    @staticmethod
    def _json(place: Place) -> dict[str, Any]:
        d = 0.0005
        return {
            "place_id": place.osm_id * 10,
            "licence": LICENCE,
            "osm_type": "node",
            "osm_id": place.osm_id,
            "lat": f"{place.lat:.7f}",
            "lon": f"{place.lon:.7f}",
            "class": "amenity",
            "type": "marketplace",
            "place_rank": 30,
            "importance": 0.2,
            "addresstype": "amenity",
            "name": place.names[0],
            "display_name": place.display_name,
            "address": place.address,
            "boundingbox": [
                f"{place.lat - d:.7f}",
                f"{place.lat + d:.7f}",
                f"{place.lon - d:.7f}",
                f"{place.lon + d:.7f}",
            ],
        }

    async def _search(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.query.get("format") != "json":
            return web.json_response({"error": "format=json expected"}, status=400)
        query = search_key(request.query.get("q", ""))
        limit = int(request.query.get("limit", "10"))
        countries = request.query.get("countrycodes", "")
        found = [
            self._json(p)
            for p in self.places
            if any(search_key(name) in query for name in p.names)
            and (not countries or p.address.get("country_code") in countries.split(","))
        ]
        return web.json_response(found[:limit])

    async def _reverse(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        lat, lon = float(request.query["lat"]), float(request.query["lon"])
        near = [p for p in self.places if haversine_km(lat, lon, p.lat, p.lon) < 0.5]
        if not near:
            return web.json_response({"error": "Unable to geocode"})
        return web.json_response(self._json(near[0]))
