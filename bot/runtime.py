"""Mounts the chat runtime on the web app: dispatcher, outbox worker, channels."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from backend.db import checkpoint_forever, create_writer_engine
from backend.services.abuse import ReporterLimits
from backend.services.duplicates import DuplicateRule
from backend.services.quiet import Quiet
from backend.web.app import (
    CHANNELS_DOWN,
    ENGINE,
    GEOCODER,
    MEDIA,
    POLICIES,
    PRESENCE,
    SESSIONS,
    SETTINGS,
    WARDS,
)
from backend.web.metrics import webhook_route
from bot import zalo_bot, zalo_oa
from bot.dispatcher import Dispatcher
from bot.inbox import Inbox
from bot.outbox import OutboxWorker
from bot.spool import Spool
from bot.tasks import cancel
from bot.telegram import WEBHOOK_PATH, TelegramChannel
from bot.zalo_bot import ZaloBotChannel
from bot.zalo_oa import ZaloOAChannel
from handlers.events import Capabilities
from handlers.turn import Services

log = logging.getLogger(__name__)


class ChannelStatus:
    """Which channels are up. Each starts on its own, and is tried again until it does,
    so that a platform that is down stops neither the others nor the web service."""

    def __init__(self, down: dict[str, str]) -> None:
        self.down = down

    async def start(self, channel: TelegramChannel | ZaloOAChannel | ZaloBotChannel) -> None:
        delay = 1.0
        quiet = Quiet(f"{channel.name} start")
        self.down[channel.name] = "starting"
        while True:
            try:
                await channel.start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                quiet.failed(exc)
                self.down[channel.name] = type(exc).__name__
                await channel.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            self.down.pop(channel.name, None)
            log.info("%s started", channel.name)
            return


DISPATCHER = web.AppKey("dispatcher", Dispatcher)
# How long the service waits for its channels to start before it serves without them.
FIRST_START = 10.0
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
        case_base=settings.public_url or "",
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
            identity_months=settings.retention_identity_months,
            case_base=settings.public_url or "",
            limits=ReporterLimits.from_settings(settings),
        ),
        capabilities,
        on_commit=outbox.wake,
    )
    app[DISPATCHER] = dispatcher
    app[OUTBOX] = outbox
    presence = app[PRESENCE]
    inbox = Inbox(
        writer if writer is not None else app[ENGINE],
        presence,
        dispatcher,
        spool=Spool(settings.spool_dir, presence.id),
        poll_interval=settings.outbox_poll_interval,
    )
    app[INBOX] = inbox
    dispatcher.on_waiting = inbox.wake
    channels: list[TelegramChannel | ZaloOAChannel | ZaloBotChannel] = []
    if settings.telegram_token is None:
        log.warning("no HOTLINE_TELEGRAM_TOKEN: Telegram is off")
    else:
        app[TELEGRAM] = TelegramChannel(settings, inbox, presence, media=app[MEDIA])
        channels.append(app[TELEGRAM])
    if settings.zalo_oa_on:
        app[ZALO_OA] = ZaloOAChannel(settings, sessions, inbox, media=app[MEDIA])
        channels.append(app[ZALO_OA])
    else:
        log.info("no HOTLINE_ZALO_OA_* credentials: Zalo OA is off")
    if settings.zalo_bot_token is not None:
        app[ZALO_BOT] = ZaloBotChannel(settings, inbox, media=app[MEDIA])
        channels.append(app[ZALO_BOT])
    else:
        log.info("no HOTLINE_ZALO_BOT_TOKEN: Zalo Bot is off")
    for channel in channels:
        capabilities[channel.name] = channel.capabilities
        outbox.add_sender(channel)
    # Take the duties asked for now, rather than at the next beat.
    await presence.beat()
    dispatcher.start()
    inbox.start()
    checkpoints = (
        asyncio.create_task(checkpoint_forever(app[ENGINE]), name="wal-checkpoint")
        if writer is not None
        else None
    )
    if settings.outbox_enabled:
        outbox.start()
    status = ChannelStatus(app[CHANNELS_DOWN])
    starting = [
        asyncio.create_task(status.start(channel), name=f"start-{channel.name}")
        for channel in channels
    ]
    if starting:
        # Serve with the channels up, unless one takes longer than this to start.
        await asyncio.wait(starting, timeout=FIRST_START)
    try:
        yield
    finally:
        for task in starting:
            await cancel(task)
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
        app.router.add_post(WEBHOOK_PATH, _telegram_webhook, name=webhook_route("telegram"))
    if settings.zalo_oa_on:
        app.router.add_post(zalo_oa.WEBHOOK_PATH, _zalo_oa_webhook, name=webhook_route("zalo_oa"))
    if settings.zalo_bot_token is not None:
        app.router.add_get(zalo_bot.MEDIA_ROUTE, _zalo_bot_media)
        if settings.zalo_bot_mode == "webhook":
            app.router.add_post(
                zalo_bot.WEBHOOK_PATH, _zalo_bot_webhook, name=webhook_route("zalo_bot")
            )
    app.cleanup_ctx.append(_chat_runtime)
