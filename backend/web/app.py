"""The aiohttp application factory: settings, database resources, health check."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.db import engine_for, open_keys, session_factory
from backend.migrate import head_revision
from backend.services.deadlines import Policies
from backend.services.escalation import DeadlineWorker
from backend.services.geocoding import Geocoder
from backend.services.logins import Logins
from backend.services.media_store import MediaStore, media_store
from backend.services.monthly import MonthlyDuty
from backend.services.photos import shutdown_pool
from backend.services.presence import Presence
from backend.services.reference import Reference
from backend.services.retention import RetentionWorker
from backend.services.units import WardIndex
from backend.services.webhook_delivery import WebhookWorker
from backend.services.webhooks import configure as configure_webhooks
from backend.web import security
from backend.web.bodies import upload_limit
from backend.web.metrics import mount_metrics

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
POLICIES = web.AppKey("policies", Policies)
WARDS = web.AppKey("wards", WardIndex)
GEOCODER = web.AppKey("geocoder", Geocoder)
LOGINS = web.AppKey("logins", Logins)
PRESENCE = web.AppKey("presence", Presence)
# Where photos are kept (a folder or a bucket), opened once per process.
MEDIA = web.AppKey("media", MediaStore)
# Channels that are not up (yet), with why: filled by the chat runtime.
CHANNELS_DOWN = web.AppKey("channels_down", dict[str, str])
# Deliveries of the partners' webhooks (woken when an admin sends a test event).
WEBHOOKS = web.AppKey("webhooks", WebhookWorker)


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = engine_for(app[SETTINGS])
    await open_keys(engine, app[SETTINGS])
    app[ENGINE] = engine
    app[SESSIONS] = session_factory(engine)
    settings = app[SETTINGS]
    app[LOGINS] = Logins(app[SESSIONS], demo=settings.demo)
    # The wards are loaded, and the deadline policy shared, by Reference, which then
    # keeps both in step with what other processes change.
    app[WARDS] = WardIndex([], served_provinces=settings.served_provinces)
    reference = Reference(
        app[SESSIONS],
        app[WARDS],
        app[POLICIES],
        served_provinces=settings.served_provinces,
        deadlines_file=settings.deadlines_file,
        interval=settings.reference_check_interval,
    )
    await reference.start()
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
    await reference.stop()
    await app[GEOCODER].close()
    await engine.dispose()
    shutdown_pool()


async def _media(app: web.Application) -> AsyncIterator[None]:
    await app[MEDIA].start()
    yield
    await app[MEDIA].close()


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


async def _retention(app: web.Application) -> AsyncIterator[None]:
    worker = RetentionWorker(app[SESSIONS], app[PRESENCE], app[SETTINGS])
    worker.start()
    yield
    await worker.stop()


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    configure_webhooks(settings.public_url)
    worker = app[WEBHOOKS] = WebhookWorker(app[SESSIONS], app[PRESENCE], settings)
    if settings.webhooks_enabled:
        worker.start()
    yield
    await worker.stop()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and its schema is this code's; and which chat
    channels are down. 503 when the database is not ready; a channel that is down is
    reported (200): the rest of the service works without it."""
    database = "ok"
    try:
        async with request.app[SESSIONS]() as session:
            version = await session.scalar(text("SELECT version_num FROM alembic_version"))
        if version != head_revision():
            database = f"schema {version}, expected {head_revision()}: run hotline migrate"
    except Exception as exc:
        database = f"unreachable ({type(exc).__name__})"
    ready = database == "ok"
    down: dict[str, str] = request.app[CHANNELS_DOWN]
    return web.json_response(
        {
            "status": "ok" if ready else "not ready",
            "database": database,
            "channels_down": dict(down),
        },
        status=200 if ready else 503,
    )


def create_app(settings: Settings) -> web.Application:
    """The web app without chat channels; the composition root mounts those."""
    # Room for a photo upload at the largest size accepted.
    app = web.Application(client_max_size=upload_limit(settings))
    app[SETTINGS] = settings
    app[POLICIES] = Policies.load(settings.deadlines_file)
    app[MEDIA] = media_store(settings)
    app.cleanup_ctx.append(_media)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_deadlines)
    app.cleanup_ctx.append(_retention)
    app.cleanup_ctx.append(_monthly)
    app.cleanup_ctx.append(_webhooks)
    security.install(app, settings)
    app[CHANNELS_DOWN] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    mount_metrics(app, SESSIONS, settings.trusted_proxies)
    return app
