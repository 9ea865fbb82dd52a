"""Mounts the chat runtime on the web app: dispatcher, outbox worker, channels."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from backend.db import checkpoint_forever, create_writer_engine
from backend.services.duplicates import DuplicateRule
from backend.web.app import ENGINE, GEOCODER, POLICIES, PRESENCE, SESSIONS, SETTINGS, WARDS
from bot import zalo_bot, zalo_oa
from bot.dispatcher import Dispatcher
from bot.inbox import Inbox
from bot.outbox import OutboxWorker
from bot.tasks import cancel
from bot.telegram import WEBHOOK_PATH, TelegramChannel
from bot.zalo_bot import ZaloBotChannel
from bot.zalo_oa import ZaloOAChannel
from handlers.events import Capabilities
from handlers.turn import Services

log = logging.getLogger(__name__)

DISPATCHER = web.AppKey("dispatcher", Dispatcher)
OUTBOX = web.AppKey("outbox", OutboxWorker)
TELEGRAM = web.AppKey("telegram", TelegramChannel)
INBOX = web.AppKey("inbox", Inbox)
ZALO_OA = web.AppKey("zalo_oa", ZaloOAChannel)
ZALO_BOT = web.AppKey("zalo_bot", ZaloBotChannel)


async def _telegram_webhook(request: web.Request) -> web.Response:
    return await request.app[TELEGRAM].webhook(request)


async def _zalo_oa_webhook(request: web.Request) -> web.Response:
    return await request.app[ZALO_OA].webhook(request)


async def _zalo_bot_webhook(request: web.Request) -> web.Response:
    return await request.app[ZALO_BOT].webhook(request)


async def _zalo_bot_media(request: web.Request) -> web.StreamResponse:
    return await request.app[ZALO_BOT].media(request)


async def _chat_runtime(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    wards = app[WARDS]
    if not len(wards):
        log.warning("no wards in the database: run `hotline import-units`")
    capabilities: dict[str, Capabilities] = {}
    outbox = OutboxWorker(
        sessions,
        app[PRESENCE],
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
    inbox = Inbox(sessions, dispatcher, poll_interval=settings.outbox_poll_interval)
    app[INBOX] = inbox
    channels: list[TelegramChannel | ZaloOAChannel | ZaloBotChannel] = []
    if settings.telegram_token is None:
        log.warning("no HOTLINE_TELEGRAM_TOKEN: Telegram is off")
    else:
        app[TELEGRAM] = TelegramChannel(settings, dispatcher)
        channels.append(app[TELEGRAM])
    if settings.zalo_oa_on:
        app[ZALO_OA] = ZaloOAChannel(settings, sessions, inbox)
        channels.append(app[ZALO_OA])
    else:
        log.info("no HOTLINE_ZALO_OA_* credentials: Zalo OA is off")
    if settings.zalo_bot_token is not None:
        app[ZALO_BOT] = ZaloBotChannel(settings, inbox)
        channels.append(app[ZALO_BOT])
    else:
        log.info("no HOTLINE_ZALO_BOT_TOKEN: Zalo Bot is off")
    for channel in channels:
        capabilities[channel.name] = channel.capabilities
        outbox.add_sender(channel)
    # Take the duties asked for now, rather than at the next beat.
    await app[PRESENCE].beat()
    dispatcher.start()
    inbox.start()
    checkpoints = (
        asyncio.create_task(checkpoint_forever(app[ENGINE]), name="wal-checkpoint")
        if writer is not None
        else None
    )
    if settings.outbox_enabled:
        outbox.start()
    try:
        for channel in channels:
            await channel.start()
        yield
    finally:
        # Each stop is safe on a channel that did not start (or only half did).
        for channel in reversed(channels):
            await channel.stop()
        await inbox.stop()
        await outbox.stop()
        await dispatcher.stop()
        await cancel(checkpoints)
        if writer is not None:
            await writer.dispose()


def mount_chat(app: web.Application) -> None:
    """Add the chat runtime (and the channels' webhook routes when configured) to app."""
    settings = app[SETTINGS]
    if settings.telegram_token is not None and settings.telegram_mode == "webhook":
        app.router.add_post(WEBHOOK_PATH, _telegram_webhook)
    if settings.zalo_oa_on:
        app.router.add_post(zalo_oa.WEBHOOK_PATH, _zalo_oa_webhook)
    if settings.zalo_bot_token is not None:
        app.router.add_get(zalo_bot.MEDIA_ROUTE, _zalo_bot_media)
        if settings.zalo_bot_mode == "webhook":
            app.router.add_post(zalo_bot.WEBHOOK_PATH, _zalo_bot_webhook)
    app.cleanup_ctx.append(_chat_runtime)
