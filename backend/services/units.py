"""Administrative units (34 provinces, 3,321 wards) and the handling units over them."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.geo import haversine_km
from backend.models import Province, Unit, Ward
from backend.services.boundaries import BoundaryIndex
from backend.services.upsert import upsert
from backend.services.versions import WARDS as WARDS_DATA
from backend.services.versions import bump
from backend.text import search_key

MINISTRY_CODE = "MOAE"
MINISTRY_NAME = "Bộ Nông nghiệp và Môi trường"


def ward_unit_code(ward_code: str) -> str:
    return f"W{ward_code}"


def province_unit_code(province_code: str) -> str:
    """The provincial department of agriculture and environment (Sở NN&MT)."""
    return f"P{province_code}"


def police_unit_code(province_code: str) -> str:
    return f"C{province_code}"


@dataclass(frozen=True, slots=True)
class ImportCounts:
    provinces: int
    wards: int
    units: int


def _dataset() -> list[dict[str, object]]:
    # Only the packaged SQLite dataset is read: the converter can go online.
    from vietnamadminunits.database import get_data

    fields = [
        "provinceCode",
        "province",
        "provinceShort",
        "provinceLat",
        "provinceLon",
        "wardCode",
        "ward",
        "wardShort",
        "wardType",
        "wardLat",
        "wardLon",
        "wardAreaKm2",
    ]
    rows: list[dict[str, object]] = get_data(fields)
    return rows


def _province_kind(name: str) -> str:
    return "thành phố" if name.startswith("Thành phố") else "tỉnh"


async def import_units(session: AsyncSession) -> ImportCounts:
    """Load or refresh provinces, wards and their handling units. Idempotent."""
    rows = _dataset()
    provinces: dict[str, dict[str, object]] = {}
    wards: list[dict[str, object]] = []
    for r in rows:
        pcode = str(r["provinceCode"]).zfill(2)
        provinces[pcode] = {
            "code": pcode,
            "name": r["province"],
            "short_name": r["provinceShort"],
            "lat": r["provinceLat"],
            "lon": r["provinceLon"],
        }
        wards.append(
            {
                "code": str(r["wardCode"]).zfill(5),
                "province_code": pcode,
                "name": r["ward"],
                "short_name": r["wardShort"],
                "kind": r["wardType"],
                "lat": r["wardLat"],
                "lon": r["wardLon"],
                "area_km2": r["wardAreaKm2"],
                "search_key": search_key(str(r["ward"])),
            }
        )
    units: list[dict[str, object]] = [
        {
            "code": MINISTRY_CODE,
            "kind": "ministry",
            "name": MINISTRY_NAME,
            "province_code": None,
            "ward_code": None,
        }
    ]
    for p in provinces.values():
        short, name = str(p["short_name"]), str(p["name"])
        units.append(
            {
                "code": province_unit_code(str(p["code"])),
                "kind": "province_department",
                "name": f"Sở Nông nghiệp và Môi trường {short}",
                "province_code": p["code"],
                "ward_code": None,
            }
        )
        units.append(
            {
                "code": police_unit_code(str(p["code"])),
                "kind": "police",
                "name": f"Công an {_province_kind(name)} {short}",
                "province_code": p["code"],
                "ward_code": None,
            }
        )
    for w in wards:
        units.append(
            {
                "code": ward_unit_code(str(w["code"])),
                "kind": "ward_committee",
                "name": f"UBND {w['name']}",
                "province_code": w["province_code"],
                "ward_code": w["code"],
            }
        )
    await upsert(session, Province, list(provinces.values()), ["code"])
    await upsert(session, Ward, wards, ["code"])
    await upsert(session, Unit, units, ["code"])
    await bump(session, WARDS_DATA)
    return ImportCounts(len(provinces), len(wards), len(units))


async def count_wards(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Ward)) or 0)


@dataclass(frozen=True, slots=True)
class WardInfo:
    code: str
    name: str
    province_code: str
    province_name: str
    lat: float
    lon: float
    # Radius of a disc with the ward's area, km.
    radius_km: float
    key: str

    @property
    def label(self) -> str:
        return f"{self.name}, {self.province_name}"


@dataclass(frozen=True, slots=True)
class NearbyWard:
    ward: WardInfo
    distance_km: float


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a point falls: the ward whose boundary holds it, else the nearest wards for
    the reporter to confirm; whether it is in Vietnam and in the area served."""

    ward: WardInfo | None
    nearby: list[NearbyWard]
    in_vietnam: bool
    served: bool

    @property
    def nearest(self) -> WardInfo | None:
        """The ward that holds the point, or else the nearest one."""
        return self.ward or (self.nearby[0].ward if self.nearby else None)


# How a ward's name begins, as search_key() folds it.
WARD_TITLES = ("phuong", "xa", "dackhu", "thitran")


class WardIndex:
    """The wards in memory: boundaries (when imported), centroids for the nearest wards,
    and name look-ups, all without a query."""

    # A point farther than this from every centroid (and than twice the ward's radius)
    # is taken to be outside Vietnam.
    MIN_REACH_KM = 15.0

    def __init__(
        self,
        wards: Iterable[WardInfo],
        boundaries: BoundaryIndex | None = None,
        served_provinces: Iterable[str] = (),
    ) -> None:
        self._wards = list(wards)
        self._by_code = {w.code: w for w in self._wards}
        self.boundaries = boundaries
        # Empty: every province.
        self.served_provinces = frozenset(served_provinces)

    @classmethod
    async def load(cls, session: AsyncSession, served_provinces: Iterable[str] = ()) -> WardIndex:
        rows = await session.execute(
            select(Ward, Province.short_name).join(Province, Ward.province_code == Province.code)
        )
        wards = [
            WardInfo(
                code=w.code,
                name=w.name,
                province_code=w.province_code,
                province_name=pname,
                lat=w.lat,
                lon=w.lon,
                radius_km=math.sqrt((w.area_km2 or 0.0) / math.pi),
                key=w.search_key,
            )
            for w, pname in rows
        ]
        return cls(wards, await BoundaryIndex.load(session), served_provinces)

    def replace_with(self, other: WardIndex) -> None:
        """Take another index's data in place (every holder of this object sees it)."""
        self.__dict__.update(other.__dict__)

    def __len__(self) -> int:
        return len(self._wards)

    def get(self, code: str) -> WardInfo | None:
        return self._by_code.get(code)

    def nearest(self, lat: float, lon: float, k: int = 3) -> list[NearbyWard]:
        """The k wards whose centroids are closest to the point."""
        kx = math.cos(math.radians(lat))
        # Rank by a flat-earth distance (monotonic at this scale), then measure properly.
        best = heapq.nsmallest(
            k,
            self._wards,
            key=lambda w: (w.lat - lat) ** 2 + ((w.lon - lon) * kx) ** 2,
        )
        return [NearbyWard(w, haversine_km(lat, lon, w.lat, w.lon)) for w in best]

    def _offered(self, lat: float, lon: float, k: int = 3) -> list[NearbyWard]:
        """The k nearest wards to offer without a boundary: those of the nearest ward's
        province first (a centre across a provincial border is rarely the answer)."""
        near = self.nearest(lat, lon, k=2 * k)
        if not near:
            return []
        province = near[0].ward.province_code
        ranked = sorted(near, key=lambda n: n.ward.province_code != province)
        return ranked[:k]

    def named_in(self, address: str, provinces: Iterable[str]) -> WardInfo | None:
        """The ward an address names ("…, Phường Bỉm Sơn, Tỉnh Thanh Hóa, Việt Nam"),
        matched by name among the wards of these provinces; None unless one fits."""
        within = set(provinces)
        parts = [p for p in address.split(",") if search_key(p)]
        # "Phường X" before a bare "X": a street is often named after another ward.
        titled = [p for p in parts if search_key(p).startswith(WARD_TITLES)]
        for part in [*titled, *(p for p in parts if p not in titled)]:
            exact, _ = self._named(part)
            found = [w for w in exact if w.province_code in within]
            if len(found) == 1:
                return found[0]
        return None

    def covers(self, lat: float, lon: float) -> bool:
        """Whether the point is plausibly inside Vietnam (near some ward's centroid)."""
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return False
        nearest = self.nearest(lat, lon, k=1)
        if not nearest:
            return False
        near = nearest[0]
        return near.distance_km <= max(self.MIN_REACH_KM, 2 * near.ward.radius_km)

    def serves(self, province_code: str) -> bool:
        return not self.served_provinces or province_code in self.served_provinces

    def place(self, lat: float, lon: float) -> Placement:
        """The ward for a point: by boundary when one holds it, else the nearest three."""
        code = self.boundaries.locate(lat, lon) if self.boundaries is not None else None
        ward = self._by_code.get(code) if code is not None else None
        nearby = self._offered(lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else []
        in_vietnam = ward is not None or self.covers(lat, lon)
        found = ward or (nearby[0].ward if nearby else None)
        served = in_vietnam and found is not None and self.serves(found.province_code)
        return Placement(ward, nearby, in_vietnam, served)

    def search(
        self, text: str, near: tuple[float, float] | None = None, limit: int = 5
    ) -> list[WardInfo]:
        """Wards whose name matches typed text, tone marks and spacing ignored.

        Exact names first, then names containing the text; ties go to the ward nearest
        to `near` when given.
        """
        exact, partial = self._named(text)

        def rank(w: WardInfo) -> float:
            return 0.0 if near is None else haversine_km(near[0], near[1], w.lat, w.lon)

        return (sorted(exact, key=rank) + sorted(partial, key=rank))[:limit]

    def _named(self, text: str) -> tuple[list[WardInfo], list[WardInfo]]:
        """(wards named text, wards whose name contains it), tone marks, spacing and the
        "Phường"/"Xã" prefix ignored."""
        key = search_key(text)
        exact: list[WardInfo] = []
        partial: list[WardInfo] = []
        if len(key) < 2:
            return exact, partial
        for w in self._wards:
            short_key = w.key.removeprefix("phuong").removeprefix("xa").removeprefix("dackhu")
            if key in (w.key, short_key):
                exact.append(w)
            elif key in w.key:
                partial.append(w)
        return exact, partial

    def meant(self, text: str, province_code: str | None, limit: int = 8) -> list[WardInfo]:
        """The wards a typed name may mean to someone working in province_code (None:
        anywhere): the wards of that name there, else those whose name contains it
        there; else the first of that name elsewhere. One ward is an answer; several, a
        choice to offer."""
        exact, partial = self._named(text)
        if province_code is None:
            return (exact or partial)[:limit]
        for group in (exact, partial):
            own = [w for w in group if w.province_code == province_code]
            if own:
                return own[:limit]
        # Only elsewhere: the one it names, which the form then says is not theirs.
        return exact[:1]
