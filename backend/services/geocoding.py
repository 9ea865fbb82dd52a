"""Addresses to points and back, through Nominatim (geopy), cached in the database.

Requests are spaced at least `interval` seconds apart across all processes (public
Nominatim allows one a second), carry an identifying user agent and a real timeout.
After a failure no process asks for a while (SharedPace, in the database).
Without a geocoder URL, or when it is down, typed "Phường X, Tỉnh Y" is still understood
from the imported ward and province names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from geopy.adapters import AioHTTPAdapter
from geopy.exc import GeopyError
from geopy.geocoders import Nominatim
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.db import write_retrying
from backend.metrics import GEOCODER_CALLS
from backend.models import GeocodeCache, SharedLimit, utcnow
from backend.services.units import WARD_TITLES, WardIndex, WardInfo
from backend.services.upsert import dialect_insert, upsert
from backend.text import search_key

log = logging.getLogger(__name__)
# geopy logs every URL at debug level, and a URL holds what the resident typed.
logging.getLogger("geopy").setLevel(logging.INFO)

Kind = Literal["search", "reverse"]


class GeocoderDown(Exception):
    """The geocoder timed out or failed; the caller should ask for a pin instead."""


@dataclass(frozen=True, slots=True)
class Found:
    lat: float
    lon: float
    address: str
    # nominatim · ward_name (the ward's centroid, from its name alone)
    source: Literal["nominatim", "ward_name"] = "nominatim"


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).lower().split())[:300]


def point_key(lat: float, lon: float) -> str:
    return f"{lat:.5f},{lon:.5f}"


class Paused(Exception):
    """The service failed a moment ago: no process asks it until the pause ends."""


class SharedPace:
    """One request at a time to an outside service, `interval` after the previous one
    ended, across every process (a row of shared_limits), and a pause after a failure.

    A process takes its turn by moving next_at past `now + hold` (so that a process
    that dies holding it stalls the others for `hold` at most), makes its request, and
    sets next_at to `interval` after the request ended. Counting from the end, not the
    start, keeps two requests `interval` apart at the service whatever the network's
    delays. Others look again every POLL seconds at most. Times are epoch seconds: the
    machines' clocks are assumed to agree (NTP) to well under a second.
    """

    POLL = 0.25

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        name: str,
        interval: float,
        hold: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._name = name
        self._interval = interval
        self._hold = hold
        self._clock = clock
        self._created = False
        # This process's callers take turns here first, so that only one of them asks
        # the database at a time.
        self._local = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the turn for one request. Raises Paused during a pause."""
        async with self._local:
            while True:
                wait = await write_retrying(self._take)
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, self.POLL))
            try:
                yield
            finally:
                await write_retrying(self._release)

    async def _take(self) -> float:
        """0 when the turn was taken; else how long until it may be free."""
        now = self._clock()
        t = SharedLimit
        async with self._sessions() as session, session.begin():
            if not self._created:
                dialect = session.get_bind().dialect.name
                await session.execute(
                    dialect_insert(dialect, SharedLimit)
                    .values(name=self._name, next_at=0.0, down_until=0.0)
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                self._created = True
            taken = await session.scalar(
                update(SharedLimit)
                .where(t.name == self._name, t.next_at <= now, t.down_until <= now)
                .values(next_at=now + self._hold)
                .returning(t.name)
                .execution_options(synchronize_session=False)
            )
            if taken is not None:
                return 0.0
            row = (
                await session.execute(select(t.next_at, t.down_until).where(t.name == self._name))
            ).one()
        if row.down_until > now:
            raise Paused(self._name)
        return max(float(row.next_at) - now, 0.01)

    async def _release(self) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(SharedLimit)
                .where(SharedLimit.name == self._name)
                .values(next_at=self._clock() + self._interval)
            )

    async def pause(self, seconds: float) -> None:
        """No process asks for `seconds` from now."""

        async def attempt() -> None:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    update(SharedLimit)
                    .where(SharedLimit.name == self._name)
                    .values(down_until=self._clock() + seconds)
                )

        await write_retrying(attempt)


class Geocoder:
    """Nominatim behind a rate limit shared by all processes and a database cache."""

    PAUSE_AFTER_FAILURE = 30.0

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        url: str,
        *,
        user_agent: str,
        timeout: float,
        interval: float = 1.0,
        country: str = "vn",
    ) -> None:
        self._sessions = sessions
        self._country = country
        # After a failure the geocoder is not asked again for a while: residents get
        # "send a pin" at once rather than after another timeout.
        # A process that dies mid-request holds the others up for this long at most.
        self._pace = SharedPace(sessions, "geocoder", interval, hold=timeout + interval + 1)
        self._background: set[asyncio.Task[str | None]] = set()
        self._client: Nominatim | None = None
        if url:
            parts = urlsplit(url)
            self._client = Nominatim(
                domain=parts.netloc + parts.path.rstrip("/"),
                scheme=parts.scheme or "https",
                user_agent=user_agent,
                timeout=timeout,
                adapter_factory=AioHTTPAdapter,
            )

    @property
    def online(self) -> bool:
        return self._client is not None

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _cached(self, kind: Kind, key: str) -> GeocodeCache | None:
        async with self._sessions() as session:
            return await session.get(GeocodeCache, (kind, key))

    async def _remember(self, kind: Kind, key: str, found: Found | None) -> None:
        row = {
            "kind": kind,
            "query_key": key,
            "lat": found.lat if found else None,
            "lon": found.lon if found else None,
            "address": found.address if found else None,
            "created_at": utcnow(),
        }
        async with self._sessions() as session, session.begin():
            await upsert(session, GeocodeCache, [row], ["kind", "query_key"])

    async def _call(self, method: str, query: Any, **options: Any) -> Any:
        if self._client is None:
            raise GeocoderDown("no geocoder configured")
        kind = "search" if method == "geocode" else "reverse"
        try:
            async with self._pace.turn():
                try:
                    location = await getattr(self._client, method)(query, **options)
                except (GeopyError, TimeoutError, OSError) as exc:
                    GEOCODER_CALLS.labels(kind=kind, outcome="failed").inc()
                    log.warning("geocoder %s failed: %s", method, type(exc).__name__)
                    await self._pace.pause(self.PAUSE_AFTER_FAILURE)
                    raise GeocoderDown(type(exc).__name__) from exc
        except Paused as exc:
            raise GeocoderDown("failed a moment ago") from exc
        GEOCODER_CALLS.labels(kind=kind, outcome="ok" if location else "not_found").inc()
        return location

    async def search(self, text: str) -> Found | None:
        """The point for a typed address in Vietnam, or None when nothing matches.

        Raises GeocoderDown when the geocoder cannot answer (and there is no cached one).
        """
        key = _normalise(text)
        hit = await self._cached("search", key)
        if hit is not None:
            if hit.lat is None or hit.lon is None:
                return None
            return Found(hit.lat, hit.lon, hit.address or text)
        location = await self._call(
            "geocode", text, exactly_one=True, country_codes=self._country, language="vi"
        )
        found = Found(location.latitude, location.longitude, location.address) if location else None
        await self._remember("search", key, found)
        return found

    async def reverse(self, lat: float, lon: float) -> str | None:
        """The address of a point, or None. Raises GeocoderDown."""
        key = point_key(lat, lon)
        hit = await self._cached("reverse", key)
        if hit is not None:
            return hit.address
        location = await self._call("reverse", (lat, lon), exactly_one=True, language="vi")
        found = Found(lat, lon, location.address) if location else None
        await self._remember("reverse", key, found)
        return found.address if found else None

    async def reverse_within(self, lat: float, lon: float, seconds: float) -> str | None:
        """reverse(), waiting at most `seconds` (a page must not hang on the geocoder); a
        slower answer still lands in the cache for next time."""
        task = asyncio.ensure_future(self.reverse(lat, lon))
        self._background.add(task)
        task.add_done_callback(self._settle)
        try:
            return await asyncio.wait_for(asyncio.shield(task), seconds)
        except (TimeoutError, GeocoderDown):
            return None

    def _settle(self, task: asyncio.Task[str | None]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failure was logged where it happened


_PROVINCE_WORDS = ("thanhpho", "tinh", "tp")


def match_ward_name(wards: WardIndex, text: str) -> WardInfo | None:
    """The ward named in "Phường X, Tỉnh Y" style text: tone marks, case, spacing and
    apostrophes ignored. None unless exactly one ward fits."""
    parts = [search_key(p) for p in text.replace(";", ",").split(",")]
    parts = [p for p in parts if p]
    if not parts:
        return None
    ward_key = parts[0]
    province_key = parts[-1] if len(parts) > 1 else ""
    for word in _PROVINCE_WORDS:
        province_key = province_key.removeprefix(word)
    candidates = [
        w
        for w in wards.search(ward_key, limit=50)
        if w.key == ward_key or any(w.key == word + ward_key for word in WARD_TITLES)
    ]
    if province_key:
        candidates = [w for w in candidates if search_key(w.province_name) == province_key]
    return candidates[0] if len(candidates) == 1 else None


async def find_place(geocoder: Geocoder | None, wards: WardIndex, text: str) -> Found | None:
    """A typed address as a point: Nominatim first, then the ward names offline.

    Raises GeocoderDown only when the geocoder failed and the names did not help.
    """
    down: GeocoderDown | None = None
    if geocoder is not None and geocoder.online:
        try:
            found = await geocoder.search(text)
        except GeocoderDown as exc:
            found, down = None, exc
        if found is not None:
            return found
    ward = match_ward_name(wards, text)
    if ward is not None:
        return Found(ward.lat, ward.lon, ward.label, source="ward_name")
    if down is not None:
        raise down
    return None
