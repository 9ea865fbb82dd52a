"""Photos in an S3 bucket (moto's server on 127.0.0.1), end to end: a resident's photo lands
in the bucket, staff fetch it through the app within their scope, an answer's photo goes
back to the chat from the bucket, the Zalo Bot's signed links serve from it, and an
outage of the store holds a chat's photo until the store is back, losing nothing."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Photo, Ticket
from backend.services.media_store import S3Store, media_store
from backend.services.photos import StoredImage, photo_key, shutdown_pool, store_photo
from backend.web.api import TEST_USER_HEADER
from bot.runtime import ZALO_BOT
from tests.e2e.conftest import Staff, running
from tests.e2e.staff_http import sign_in
from tests.e2e.webhooks import channel_settings
from tests.factories import make_ticket, make_user
from tests.fakes.images import image_bytes
from tests.fakes.s3 import MotoS3
from tests.fakes.telegram_api import FakeTelegram, FakeUser
from tests.fakes.zalo_bot import FakeZaloBot

PASSWORD = "a long and private passphrase"
PREFIX = "photos"


def in_bucket(settings: Settings) -> S3Store:
    store = media_store(settings)
    assert isinstance(store, S3Store)
    return store


async def store_in_bucket(settings: Settings, data: bytes) -> StoredImage:
    """A photo put in the settings' bucket, as another server process would."""
    store = in_bucket(settings)
    await store.start()
    try:
        return await store_photo(store, data, settings.max_photo_bytes)
    finally:
        await store.close()
        shutdown_pool()


async def to_photo_step(user: FakeUser) -> None:
    await user.text("/start")
    await user.reply()
    await user.press("✅ Tôi đồng ý")
    await user.reply()


async def report_with_photo(user: FakeUser, photo: bytes) -> str:
    """A whole anonymous report with one photo at Phường Bỉm Sơn; the confirmation."""
    await to_photo_step(user)
    await user.photo(photo)
    assert "Đã nhận ảnh" in ((await user.reply()).text or "")
    await user.location(20.0740, 105.9120)
    await user.replies(2)
    await user.press("Phường Bỉm Sơn, Thanh Hóa")
    await user.reply()
    await user.press("Đổ rác, xả rác trái phép")
    await user.reply()
    await user.text("Bãi rác tự phát cạnh kênh.")
    await user.reply()
    await user.tap("✅ Gửi ẩn danh")
    return (await user.reply()).text or ""


@pytest.mark.parametrize("mode", ["polling"])
async def test_chat_photos_live_in_the_bucket_and_staff_fetch_them_within_scope(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    s3_server: MotoS3,
    s3_bucket: str,
    mode: str,
) -> None:
    settings = chat_settings.model_copy(update=s3_server.settings(s3_bucket, PREFIX))
    async with sessions() as s, s.begin():
        staff = (await make_user(s, "ward_staff", "W14812", password=PASSWORD)).username
        outsider = (await make_user(s, "ward_staff", "W00004", password=PASSWORD)).username
        operator = (await make_user(s, "operator", "P38")).username
    user = FakeUser(api, chat_id=7301)
    base = settings.public_url or ""
    async with running(settings):
        done = await report_with_photo(user, image_bytes("JPEG", (800, 600), "green"))
        assert "Mã theo dõi: 38-" in done
        async with sessions() as s:
            ticket = (await s.scalars(select(Ticket))).one()
            sha = (await s.scalars(select(Photo.sha256).where(Photo.ticket_id == ticket.id))).one()
        # In the bucket, under the prefix, with its thumbnail; nothing on local disk.
        full = await s3_server.get_object(s3_bucket, f"{PREFIX}/{photo_key(sha)}")
        thumb = await s3_server.get_object(s3_bucket, f"{PREFIX}/{photo_key(sha, thumbnail=True)}")
        assert full is not None and thumb is not None and len(thumb) < len(full)
        assert not settings.media_dir.exists()

        answers = {}
        for who in (staff, outsider):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                await sign_in(http, base, who, PASSWORD)
                for path in (f"/media/{sha}", f"/media/{'0' * 64}"):
                    async with http.get(f"{base}{path}") as r:
                        answers[who, path] = (r.status, r.content_type, await r.read(), r.headers)
        status, kind, body, headers = answers[staff, f"/media/{sha}"]
        assert (status, kind, body) == (200, "image/jpeg", full)
        assert headers["Cache-Control"] == "no-store"  # photos are personal data
        assert answers[staff, f"/media/{'0' * 64}"][0] == 404
        hidden, missing = (
            answers[outsider, f"/media/{sha}"],
            answers[outsider, f"/media/{'0' * 64}"],
        )
        assert hidden[0] == 404 and hidden[:3] == missing[:3]

        # An answer's photo: uploaded through the API into the bucket, and sent to the
        # resident from there.
        result_photo = image_bytes("JPEG", (640, 480), "blue")
        async with aiohttp.ClientSession() as http:
            triage, worker = Staff(http, base, operator), Staff(http, base, staff)
            await triage.act(ticket.code, "classify", urgency="normal", competence="ward")
            await worker.act(ticket.code, "claim")
            await worker.act(ticket.code, "verify")
            await worker.act(ticket.code, "confirm")
            result = await worker.upload(result_photo)
            await worker.act(ticket.code, "answer", result="Đã thu dọn.", photos=[result])
        uploaded = await s3_server.get_object(s3_bucket, f"{PREFIX}/{photo_key(result)}")
        assert uploaded is not None
        for _ in range(5):
            answer = await user.reply(timeout=30)
            if "Đã thu dọn" in (answer.text or ""):
                break
    assert answer.photo is not None and answer.photo == uploaded


async def test_the_zalo_bot_links_serve_photos_from_the_bucket(
    zbot: FakeZaloBot, database_url: str, tmp_path: Path, s3_server: MotoS3, s3_bucket: str
) -> None:
    settings = channel_settings(database_url, tmp_path, bot=zbot, mode="webhook")
    settings = settings.model_copy(update=s3_server.settings(s3_bucket, PREFIX))
    stored = await store_in_bucket(settings, image_bytes("JPEG", (640, 480), "red"))
    sha = stored.sha256
    full = await s3_server.get_object(s3_bucket, f"{PREFIX}/{photo_key(sha)}")
    thumb = await s3_server.get_object(s3_bucket, f"{PREFIX}/{photo_key(sha, thumbnail=True)}")
    async with running(settings) as app, aiohttp.ClientSession() as http:
        link = app[ZALO_BOT].media_url(sha)
        small = app[ZALO_BOT].media_url(sha, thumbnail=True)
        assert link is not None and small is not None
        for url, expected in ((link, full), (small, thumb)):
            async with http.get(url) as r:
                assert (r.status, r.content_type) == (200, "image/jpeg")
                assert await r.read() == expected
        for forged in (link.replace("/full/", "/thumb/"), link.replace(sha, "a" * 64)):
            async with http.get(forged) as r:
                assert r.status == 404, forged


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_store_outage_holds_a_chat_photo_until_the_store_is_back(
    api: FakeTelegram,
    chat_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    mode: str,
) -> None:
    server = MotoS3()
    server.start()
    try:
        server.create_bucket("outage")
        settings = chat_settings.model_copy(update=server.settings("outage", PREFIX))
        evidence = await store_in_bucket(settings, image_bytes("PNG", (300, 200), "red"))
        async with sessions() as s, s.begin():
            await make_ticket(s, photo=evidence.as_dict())
            staff = (await make_user(s, "ward_staff", "W14812", password=PASSWORD)).username
        user = FakeUser(api, chat_id=7302)
        base = settings.public_url or ""
        async with (
            running(settings),
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        ):
            await sign_in(http, base, staff, PASSWORD)
            async with http.get(f"{base}/media/{evidence.sha256}") as r:
                assert r.status == 200
            await to_photo_step(user)

            server.stop()
            await user.photo(image_bytes("JPEG", (400, 300), "green"))
            with pytest.raises(TimeoutError):
                await user.reply(timeout=3)  # no answer yet: the photo waits
            async with http.get(f"{base}/media/{evidence.sha256}") as r:
                assert r.status == 503 and r.headers["Retry-After"] == "5"
            async with (
                aiohttp.ClientSession() as api_client,
                api_client.post(
                    f"{base}/api/v1/media",
                    data=image_bytes("JPEG"),
                    headers={TEST_USER_HEADER: staff, "Content-Type": "image/jpeg"},
                ) as r,
            ):
                assert r.status == 503
                assert (await r.json())["error"] == "storage_unavailable"

            server.start()  # on the same port, empty: the bucket is made again
            server.create_bucket("outage")
            assert "Đã nhận ảnh" in ((await user.reply(timeout=90)).text or "")
            keys = [k for k in await in_bucket_keys(settings) if k.endswith(".thumb.jpg")]
            assert len(keys) == 1
    finally:
        server.stop()


async def in_bucket_keys(settings: Settings) -> list[str]:
    store = in_bucket(settings)
    await store.start()
    try:
        return sorted(await store.sizes())
    finally:
        await store.close()
