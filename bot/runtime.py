"""Mounts the chat runtime on the web app: dispatcher, outbox worker, channels."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from backend.db import checkpoint_forever, create_writer_engine
from backend.services.duplicates import DuplicateRule
from backend.web.app import ENGINE, GEOCODER, POLICIES, SESSIONS, SETTINGS, WARDS
from bot.dispatcher import Dispatcher
from bot.outbox import OutboxWorker
from bot.telegram import WEBHOOK_PATH, TelegramChannel
from handlers.events import Capabilities
from handlers.turn import Services

log = logging.getLogger(__name__)

DISPATCHER = web.AppKey("dispatcher", Dispatcher)
OUTBOX = web.AppKey("outbox", OutboxWorker)
TELEGRAM = web.AppKey("telegram", TelegramChannel)


async def _telegram_webhook(request: web.Request) -> web.Response:
    return await request.app[TELEGRAM].webhook(request)


async def _chat_runtime(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    wards = app[WARDS]
    if not len(wards):
        log.warning("no wards in the database: run `hotline import-units`")
    capabilities: dict[str, Capabilities] = {}
    outbox = OutboxWorker(
        sessions,
        max_attempts=settings.outbox_max_attempts,
        poll_interval=settings.outbox_poll_interval,
    )
    writer = create_writer_engine(settings.database_url)
    dispatcher = Dispatcher(
        writer if writer is not None else app[ENGINE],
        Services(
            wards=wards,
            policies=app[POLICIES],
            geocoder=app[GEOCODER],
            duplicates=DuplicateRule(
                radius_m=settings.duplicate_radius_m,
                days=settings.duplicate_days,
                per_category=settings.duplicate_radii,
            ),
            out_of_area_hotlines=settings.out_of_area_hotlines,
        ),
        capabilities,
        on_commit=outbox.wake,
    )
    app[DISPATCHER] = dispatcher
    app[OUTBOX] = outbox
    telegram: TelegramChannel | None = None
    if settings.telegram_token is None:
        log.warning("no HOTLINE_TELEGRAM_TOKEN: Telegram is off")
    else:
        telegram = TelegramChannel(settings, dispatcher)
        capabilities[telegram.name] = telegram.capabilities
        outbox.add_sender(telegram)
        app[TELEGRAM] = telegram
    dispatcher.start()
    checkpoints = (
        asyncio.create_task(checkpoint_forever(app[ENGINE]), name="wal-checkpoint")
        if writer is not None
        else None
    )
    if settings.outbox_enabled:
        outbox.start()
    if telegram is not None:
        await telegram.start()
    try:
        yield
    finally:
        if telegram is not None:
            await telegram.stop()
        await outbox.stop()
        await dispatcher.stop()
        if checkpoints is not None:
            checkpoints.cancel()
            await asyncio.gather(checkpoints, return_exceptions=True)
        if writer is not None:
            await writer.dispose()


def mount_chat(app: web.Application) -> None:
    """Add the chat runtime (and the Telegram webhook route when configured) to app."""
    settings = app[SETTINGS]
    if settings.telegram_token is not None and settings.telegram_mode == "webhook":
        app.router.add_post(WEBHOOK_PATH, _telegram_webhook)
    app.cleanup_ctx.append(_chat_runtime)
