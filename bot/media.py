"""Photos from chats: store what a platform sent (or fetch it from its URL first).

A media store that does not answer raises MediaUnavailable: the update is then left to
be tried again, not taken as a photo that failed. A photo the dialogue would refuse (a
muted reporter, a chat over its allowance) is neither downloaded nor stored: its event
carries the error "not_taken" instead."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp

from backend.config import Settings
from backend.services.media_store import MediaStore
from backend.services.photos import NotAnImage, TooLarge, image_fields, store_photo
from handlers.events import Incoming, MediaError, MediaRef

log = logging.getLogger(__name__)

Fetched = tuple[MediaRef | None, MediaError | None]
# Whether a chat's photo is to be taken, given its channel and chat id (Inbox.takes_photo).
PhotoGate = Callable[[str, str], Awaitable[bool]]
NOT_TAKEN: Fetched = (None, "not_taken")


async def store_media(media: MediaStore, settings: Settings, data: bytes) -> Fetched:
    """Sanitise an image (in the process pool) and store it: its reference, or why not."""
    try:
        stored = await store_photo(media, data, settings.max_photo_bytes)
    except TooLarge:
        return None, "too_large"
    except NotAnImage:
        return None, "not_image"
    return (
        MediaRef(**image_fields(stored), gps=stored.gps, taken_at=stored.taken_at),
        None,
    )


async def fetch_media(
    http: aiohttp.ClientSession, url: str, settings: Settings, media: MediaStore
) -> Fetched:
    """Download an image a platform links to (Zalo's CDN), within the size limit, and store it."""
    limit = settings.max_photo_bytes
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
            if response.status != 200:
                log.warning("photo download answered HTTP %d", response.status)
                return None, "download_failed"
            if (response.content_length or 0) > limit:
                return None, "too_large"
            data = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > limit:
                    return None, "too_large"
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("photo download failed: %s", type(exc).__name__)
        return None, "download_failed"
    return await store_media(media, settings, bytes(data))


async def photo_event(
    http: aiohttp.ClientSession,
    url: str,
    settings: Settings,
    media: MediaStore,
    *,
    channel: str,
    chat_id: str,
    update_id: str,
    gate: PhotoGate,
) -> Incoming:
    """The dialogue's photo event for an image a platform links to, fetched and stored
    when the gate lets it be taken."""
    if await gate(channel, chat_id):
        ref, error = await fetch_media(http, url, settings, media)
    else:
        ref, error = NOT_TAKEN
    return Incoming(
        channel=channel,
        chat_id=chat_id,
        update_id=update_id,
        kind="photo",
        media=ref,
        media_error=error,
    )
