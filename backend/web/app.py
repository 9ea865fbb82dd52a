"""The aiohttp application factory: settings, database resources, health check."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.db import create_engine, session_factory
from backend.services.deadlines import Policies
from backend.services.escalation import DeadlineWorker
from backend.services.geocoding import Geocoder
from backend.services.logins import Logins
from backend.services.monthly import MonthlyDuty
from backend.services.photos import shutdown_pool
from backend.services.presence import Presence
from backend.services.units import WardIndex
from backend.web import security
from backend.web.bodies import upload_limit

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
POLICIES = web.AppKey("policies", Policies)
WARDS = web.AppKey("wards", WardIndex)
GEOCODER = web.AppKey("geocoder", Geocoder)
LOGINS = web.AppKey("logins", Logins)
PRESENCE = web.AppKey("presence", Presence)


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[SETTINGS].database_url)
    app[ENGINE] = engine
    app[SESSIONS] = session_factory(engine)
    settings = app[SETTINGS]
    app[LOGINS] = Logins(app[SESSIONS], demo=settings.demo)
    async with app[SESSIONS]() as session:
        app[WARDS] = await WardIndex.load(session, settings.served_provinces)
    app[GEOCODER] = Geocoder(
        app[SESSIONS],
        settings.nominatim_url,
        user_agent=settings.geocoder_user_agent,
        timeout=settings.geocoder_timeout,
        interval=settings.geocoder_interval,
    )
    presence = app[PRESENCE] = Presence(app[SESSIONS])
    await presence.beat()
    presence.start()
    yield
    await presence.stop()
    await app[GEOCODER].close()
    await engine.dispose()
    shutdown_pool()


async def _deadlines(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    worker = DeadlineWorker(app[SESSIONS], app[POLICIES], settings.deadline_interval)
    if settings.deadline_worker_enabled:
        worker.start()
    yield
    await worker.stop()


async def _monthly(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    duty = MonthlyDuty(app[SESSIONS], settings)
    if settings.stats_duty_enabled:
        duty.start()
    yield
    await duty.stop()


async def healthz(request: web.Request) -> web.Response:
    """Liveness and database reachability."""
    async with request.app[SESSIONS]() as session:
        await session.execute(text("SELECT 1"))
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    """The web app without chat channels; the composition root mounts those."""
    # Room for a photo upload at the largest size accepted.
    app = web.Application(client_max_size=upload_limit(settings))
    app[SETTINGS] = settings
    app[POLICIES] = Policies.load(settings.deadlines_file)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_deadlines)
    app.cleanup_ctx.append(_monthly)
    security.install(app, settings)
    app.router.add_get("/healthz", healthz)
    return app
