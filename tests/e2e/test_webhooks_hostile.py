"""Hostile bodies with the right secret or signature: each webhook answers 200 (Telegram,
which would otherwise send it again for hours) or 400, never 5xx; nothing of them is
stored or handled, nothing of them is logged, and the service goes on answering."""

from __future__ import annotations

import asyncio
import copy
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import InboundEvent, OutboxMessage, ProcessedUpdate
from tests.e2e.conftest import running
from tests.e2e.webhooks import (
    CHANNELS,
    PATHS,
    SAMPLES,
    TELEGRAM,
    ZALO_BOT,
    ZALO_OA,
    Raw,
    all_webhooks,
    encode,
    headers,
    nested,
    telegram_update,
)
from tests.factories import chat_key
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.zalo_bot import FakeZaloBot, ZaloBotUser
from tests.fakes.zalo_oa import FakeZaloOA

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """Put value at a dotted path of the update ("result.message.chat")."""

    def edit(update: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = update
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


# For each defect, where each platform's update gets it.
DEFECTS: dict[str, dict[str, Edit]] = {
    "infinity": {
        TELEGRAM: _set("update_id", Raw(b"Infinity")),
        ZALO_OA: _set("message.msg_id", Raw(b"Infinity")),
        ZALO_BOT: _set("result.message.message_id", Raw(b"-Infinity")),
    },
    "1e400": {
        TELEGRAM: _set("update_id", Raw(b"1e400")),
        ZALO_OA: _set("sender.id", Raw(b"1e400")),
        ZALO_BOT: _set("result.message.date", Raw(b"1e400")),
    },
    "nesting 5000 deep": {
        TELEGRAM: _set("message.entities", nested(5000)),
        ZALO_OA: _set("message.extra", nested(5000)),
        ZALO_BOT: _set("result.message.extra", nested(5000)),
    },
    "a list for a string": {
        TELEGRAM: _set("message.from.language_code", ["vi", "en"]),
        ZALO_OA: _set("message.text", ["xin chào"]),
        ZALO_BOT: _set("result.message.text", ["xin chào"]),
    },
    "a string for an object": {
        TELEGRAM: _set("message.chat", "6001"),
        ZALO_OA: _set("sender", "85111164719000001"),
        ZALO_BOT: _set("result.message.chat", "a8f1c2d3000001"),
    },
    "a number for a list": {
        TELEGRAM: _set("message.photo", 5),
        ZALO_OA: _set("message.attachments", 5),
        ZALO_BOT: _set("result", 5),
    },
}


@pytest.fixture
def settings_all(
    database_url: str,
    tmp_path: Path,
    api: FakeTelegram,
    oa: FakeZaloOA,
    zbot: FakeZaloBot,
) -> Settings:
    return all_webhooks(database_url, tmp_path, api, oa, zbot)


async def _post(
    http: aiohttp.ClientSession,
    settings: Settings,
    oa: FakeZaloOA,
    channel: str,
    body: bytes,
    **how: Any,
) -> int:
    sent = headers(settings, oa, channel, body, **how)
    url = f"{settings.public_url}{PATHS[channel]}"
    # A stream: aiohttp warns about large bodies given as bytes.
    async with http.post(url, data=io.BytesIO(body), headers=sent) as response:
        return response.status


async def _stored(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    """(events in the inbox, updates handled)."""
    async with sessions() as s:
        inbound = await s.scalar(select(func.count()).select_from(InboundEvent))
        handled = await s.scalar(select(func.count()).select_from(ProcessedUpdate))
    return inbound or 0, handled or 0


async def _healthy(http: aiohttp.ClientSession, settings: Settings) -> None:
    async with http.get(f"{settings.public_url}/healthz") as response:
        assert response.status == 200


@pytest.mark.parametrize("defect", list(DEFECTS))
async def test_a_hostile_update_is_refused_without_a_server_error(
    settings_all: Settings,
    oa: FakeZaloOA,
    sessions: async_sessionmaker[AsyncSession],
    defect: str,
) -> None:
    statuses = {}
    async with running(settings_all), aiohttp.ClientSession() as http:
        for n, channel in enumerate(CHANNELS, start=1):
            update = copy.deepcopy(SAMPLES[channel](n))
            DEFECTS[defect][channel](update)
            statuses[channel] = await _post(http, settings_all, oa, channel, encode(update))
        # A store that failed would be tried again in the background: give it the time.
        await asyncio.sleep(0.3)
        await _healthy(http, settings_all)
        stored = await _stored(sessions)
    # Telegram sends again whatever is not answered 2xx: a bad update must not loop.
    assert statuses[TELEGRAM] == 200
    assert statuses[ZALO_OA] in (200, 400) and statuses[ZALO_BOT] in (200, 400)
    assert stored == (0, 0)


async def test_the_same_updates_without_the_defects_are_taken(
    settings_all: Settings,
    oa: FakeZaloOA,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The counterpart of the test above: its samples are updates the service takes."""
    async with running(settings_all), aiohttp.ClientSession() as http:
        for n, channel in enumerate(CHANNELS, start=1):
            body = encode(SAMPLES[channel](n))
            assert await _post(http, settings_all, oa, channel, body) == 200
        stored = await _stored(sessions)
    # Every channel's update is stored before it is answered.
    assert stored[0] == 3


async def test_bodies_over_a_megabyte_get_413(
    settings_all: Settings,
    oa: FakeZaloOA,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    statuses = {}
    async with running(settings_all), aiohttp.ClientSession() as http:
        for n, channel in enumerate(CHANNELS, start=1):
            update = SAMPLES[channel](n)
            update["padding"] = "x" * (1024 * 1024)
            statuses[channel] = await _post(http, settings_all, oa, channel, encode(update))
        await _healthy(http, settings_all)
        stored = await _stored(sessions)
    assert statuses == {TELEGRAM: 413, ZALO_OA: 413, ZALO_BOT: 413}
    assert stored == (0, 0)


async def test_the_oa_signature_is_checked_before_the_body_is_parsed(
    settings_all: Settings, oa: FakeZaloOA
) -> None:
    not_json = b'{"timestamp": "1763801234567", "event_name": [[[[' + b"\xff" * 64
    async with running(settings_all), aiohttp.ClientSession() as http:
        wrong = await _post(http, settings_all, oa, ZALO_OA, not_json, valid=False)
        unsigned = await _post(http, settings_all, oa, ZALO_OA, b"[" * 5000, valid=False)
        signed = await _post(http, settings_all, oa, ZALO_OA, not_json)
    assert (wrong, unsigned) == (401, 401)
    assert signed == 400  # signed by Zalo, yet not JSON


async def test_an_oa_event_signed_with_another_timestamp_than_its_own_is_refused(
    settings_all: Settings,
    oa: FakeZaloOA,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event = SAMPLES[ZALO_OA](1)
    # A second "timestamp" key, inside the message: the signature is made with it.
    event["message"]["timestamp"] = "1111111111111"
    body = encode(event)
    async with running(settings_all), aiohttp.ClientSession() as http:
        other = await _post(http, settings_all, oa, ZALO_OA, body, timestamp="1111111111111")
        own = await _post(http, settings_all, oa, ZALO_OA, body)
        stored = await _stored(sessions)
    assert other == 401
    assert own == 200 and stored[0] == 1


async def test_a_secret_header_that_is_not_utf8_gets_401(settings_all: Settings) -> None:
    assert settings_all.public_url is not None
    port = int(settings_all.public_url.rsplit(":", 1)[1])
    statuses = []
    async with running(settings_all):
        for path, header in (
            (PATHS[TELEGRAM], b"X-Telegram-Bot-Api-Secret-Token"),
            (PATHS[ZALO_BOT], b"X-Bot-Api-Secret-Token"),
            (PATHS[ZALO_OA], b"X-ZEvent-Signature"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n"
                + header
                + b": mac=\xff\xfe\r\nConnection: close\r\n\r\n{}"
            )
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
            await writer.wait_closed()
            statuses.append(int(status_line.split()[1]))
    assert statuses == [401, 401, 401]


async def test_refusals_are_logged_without_personal_data(
    settings_all: Settings,
    oa: FakeZaloOA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Nhà tôi ở số 12 ngõ 34, gọi 0912345678"
    caplog.set_level(logging.DEBUG, logger="bot")
    async with running(settings_all), aiohttp.ClientSession() as http:
        for n, channel in enumerate(CHANNELS, start=1):
            update = SAMPLES[channel](n, text=secret)
            # One field of the wrong type, besides the text.
            if channel == TELEGRAM:
                update["message"]["from"]["language_code"] = [secret]
            if channel == ZALO_OA:
                update["sender"]["id"] = [secret]
            if channel == ZALO_BOT:
                update["result"]["message"]["chat"]["id"] = {"name": secret}
            assert await _post(http, settings_all, oa, channel, encode(update)) == 200
    refusals = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(refusals) == 3, refusals
    for message in refusals:
        assert "0912345678" not in message and "ngõ" not in message
        assert "6001" not in message and "85111164719" not in message
        assert "a8f1c2d3" not in message
    assert any("language_code" in m for m in refusals)


async def test_stored_events_that_do_not_fit_are_skipped_and_the_next_handled(
    settings_all: Settings,
    zbot: FakeZaloBot,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Stored before the schema was there (or by hand): the inbox reads through it too.
    long_chat = "c" * 100
    oa_bad = SAMPLES[ZALO_OA](1, text="Nhà tôi ở ngõ 12")
    oa_bad["message"]["attachments"] = 5
    bot_bad = SAMPLES[ZALO_BOT](2, text="Nhà tôi ở ngõ 12")
    bot_bad["result"]["message"]["chat"]["id"] = long_chat
    async with sessions() as s, s.begin():
        for channel, key, chat, body in (
            (ZALO_OA, "old-1", oa_bad["sender"]["id"], oa_bad),
            (ZALO_BOT, "old-2", long_chat[:64], bot_bad),
        ):
            s.add(
                InboundEvent(
                    channel=channel,
                    event_key=key,
                    chat_key=chat_key(channel, chat),
                    address=chat,
                    body=body,
                )
            )
    resident = ZaloBotUser(zbot, "b9e2d3c4f5a7")
    caplog.set_level(logging.WARNING, logger="bot")
    async with running(settings_all):
        await resident.text("/help")
        answer = await resident.reply()
    async with sessions() as s:
        pending = await s.scalar(
            select(func.count()).select_from(InboundEvent).where(InboundEvent.handled_at.is_(None))
        )
        chats = set(await s.scalars(select(OutboxMessage.address)))
    assert "/status" in (answer.text or "")
    assert pending == 0
    assert chats == {resident.chat_id}
    skipped = [r.getMessage() for r in caplog.records if "does not fit" in r.getMessage()]
    assert len(skipped) == 2, skipped
    assert not any("ngõ" in m or "cccc" in m or "85111164719" in m for m in skipped)


@pytest.mark.parametrize("defect", ["a string for an object", "a list for a string"])
async def test_polling_skips_an_update_it_cannot_read_and_goes_on(
    database_url: str, tmp_path: Path, api: FakeTelegram, defect: str
) -> None:
    """getUpdates hands out a malformed update (as the raw JSON it is): it is skipped,
    the offset moves past it, and the next update is answered."""
    settings = all_webhooks(database_url, tmp_path, api, FakeZaloOA(), FakeZaloBot())
    settings = settings.model_copy(
        update={
            "telegram_mode": "polling",
            "telegram_poll_timeout": 1,
            "zalo_oa_app_id": None,
            "zalo_bot_token": None,
        }
    )
    broken = telegram_update(1, "/start")
    DEFECTS[defect][TELEGRAM](broken)
    async with running(settings):
        await api.push(broken)
        await api.push(telegram_update(2, "/start"))
        sent = await api.wait_sent(6002, 1)
        # Nothing answered the broken one, and it is not handed out again.
        await asyncio.sleep(1.5)
        offsets = [int(p.get("offset") or 0) for m, p in api.calls if m == "getUpdates"]
    assert sent[0].chat_id == "6002"
    assert api.sent_to(6001) == []
    assert max(offsets) == 900_003
