"""Identities sealed at rest: after residents report on Telegram, the Zalo OA and the Zalo
Bot, and an operator files a caller's report, neither the database's bytes (the SQLite
file and its WAL; PostgreSQL's files of the database and its WAL, and every row of every
table) nor the logs name any of them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.crypto import keys
from backend.models import ReporterIdentity, Ticket
from backend.services.reporters import PHONE_CONSENT_VERSION
from tests.e2e.conftest import report_in_bim_son, running
from tests.e2e.staff_http import sign_in
from tests.e2e.test_zalo import report_by_text, until
from tests.e2e.webhooks import channel_settings
from tests.factories import make_user
from tests.fakes.telegram_api import FakeTelegram, FakeUser
from tests.fakes.zalo_bot import FakeZaloBot, ZaloBotUser
from tests.fakes.zalo_oa import FakeZaloOA, ZaloFollower
from tests.rawbytes import named, raw_database

TELEGRAM_CHAT = 7239104586113
RESIDENT_PHONE = "+84398765431"
OA_USER = "7261934085512743"
BOT_CHAT = "zb4f9a8c7e1d"
BOT_NAME = "Phạm Thị Hoa Sen"
CALLER_NAME = "Trần Văn Khiêm"
CALLER_PHONE = "+84387654329"
CALLER_ADDRESS = "Số 17 ngõ Hoa Lư"
PASSWORD = "Mat-khau-dai-1"


async def test_a_copy_of_the_database_names_no_reporter(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
    api: FakeTelegram,
    oa: FakeZaloOA,
    zbot: FakeZaloBot,
    caplog: pytest.LogCaptureFixture,
) -> None:
    began = time.time() - 1
    caplog.set_level(logging.INFO)
    for ours in ("backend", "bot", "handlers", "hotline", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=ours)
    settings = channel_settings(database_url, tmp_path, telegram=api, oa=oa, bot=zbot)
    async with sessions() as s, s.begin():
        operator = (await make_user(s, "operator", "P38", password=PASSWORD)).username
    secrets = [
        str(TELEGRAM_CHAT),
        RESIDENT_PHONE,
        OA_USER,
        BOT_CHAT,
        BOT_NAME,
        CALLER_NAME,
        CALLER_PHONE,
        CALLER_ADDRESS,
    ]
    async with running(settings):
        resident = FakeUser(api, chat_id=TELEGRAM_CHAT)
        await report_in_bim_son(
            resident,
            "Đổ rác, xả rác trái phép",
            "Rác cạnh chợ.",
            "Đột xuất, một lần",
            phone=RESIDENT_PHONE,
        )
        follower = ZaloFollower(oa, OA_USER)
        await follower.follow()
        # Each report far enough from the others not to be offered as the same case.
        await report_by_text(
            follower, follower.text, follower.image, lambda: follower.location(20.0795, 105.912)
        )
        chatter = ZaloBotUser(zbot, BOT_CHAT, name=BOT_NAME)
        await chatter.text("/start")
        await report_by_text(
            chatter, chatter.text, chatter.photo, lambda: chatter.text("20.0685, 105.9120")
        )
        await chatter.text("/mydata")
        await until(chatter, "Dữ liệu chúng tôi giữ về bạn")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            base = settings.public_url or ""
            csrf = await sign_in(http, base, operator, PASSWORD)
            form = {
                "csrf": csrf,
                "ward": "14812",
                "category": "dumping",
                "description": "Khói đốt rác mỗi tối.",
                "name": CALLER_NAME,
                "phone": CALLER_PHONE,
                "address": CALLER_ADDRESS,
                "consent": PHONE_CONSENT_VERSION,
            }
            async with http.post(f"{base}/intake/phone", data=form) as r:
                assert r.status == 200, await r.text()
        while_running = await raw_database(database_url, engine, began)
    after = await raw_database(database_url, engine, began)

    async with sessions() as s:
        assert len(list(await s.scalars(select(Ticket)))) == 4
        # The service itself still knows them, through the key.
        identities = {
            (i.channel, i.chat_id, i.phone, i.display_name)
            for i in await s.scalars(select(ReporterIdentity))
        }
    assert ("telegram", str(TELEGRAM_CHAT), RESIDENT_PHONE, None) in identities
    assert ("zalo_oa", OA_USER, None, None) in identities
    assert ("zalo_bot", BOT_CHAT, None, None) in identities
    assert ("phone", None, CALLER_PHONE, f"{CALLER_NAME} — {CALLER_ADDRESS}") in identities

    # The search finds what is there: the pseudonym-free ward name, say.
    assert b"14812" in after
    assert named(while_running, secrets) == []
    assert named(after, secrets) == []
    assert caplog.records, "nothing was logged at all"
    assert named(caplog.text.encode(), secrets) == []
    # Look-ups go by keyed hash: the same chat always has the same one.
    assert keys().chat_key("telegram", str(TELEGRAM_CHAT)).encode() in after
