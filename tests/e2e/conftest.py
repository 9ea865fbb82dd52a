"""The whole service against the Bot API stand-in, in polling or webhook mode."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from backend.cli import build_app
from backend.config import Settings
from backend.web.api import TEST_USER_HEADER
from tests.fakes.telegram_api import FakeTelegram, FakeUser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(params=["polling", "webhook"])
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def chat_settings(database_url: str, tmp_path: Path, api: FakeTelegram, mode: str) -> Settings:
    port = free_port()
    return Settings(
        environment="test",
        database_url=database_url,
        # No geocoder unless a test starts the Nominatim stand-in.
        nominatim_url="",
        media_dir=tmp_path / "media",
        telegram_token=SecretStr(api.token),
        telegram_api_url=api.url,
        telegram_mode=mode,  # type: ignore[arg-type]
        public_url=f"http://127.0.0.1:{port}",
        telegram_poll_timeout=1,
        # Per-chat pacing has its own test; here it would only slow the dialogue down.
        telegram_rate_per_chat=100.0,
        outbox_poll_interval=0.2,
        map_tile_url="",  # no tiles: the tests have no internet
    )


async def report_in_bim_son(
    user: FakeUser, category: str, description: str, nature: str, phone: str | None = None
) -> dict[str, Any]:
    """A whole report without photos at 20.0740, 105.9120, as a resident makes it on
    Telegram, anonymous unless the phone is shared; returns the update that sent it."""
    await user.text("/start")
    await user.reply()
    await user.press("✅ Tôi đồng ý")
    await user.reply()
    await user.text("/skip")
    await user.reply()
    await user.text("20.0740, 105.9120")
    await user.replies(2)  # the place (the keyboard removed), then the ward question
    await user.press("Phường Bỉm Sơn, Thanh Hóa")
    await user.reply()
    await user.press(category)
    await user.reply()
    await user.text(description)
    await user.reply()
    await user.tap("➕ Đối tượng, tính chất (không bắt buộc)")
    await user.reply()
    await user.press(nature)
    await user.reply()
    if phone is None:
        sent = await user.tap("✅ Gửi ẩn danh")
    else:
        sent = await user.contact(phone)
    await user.reply()
    return sent


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[web.Application]:
    """Serve the app built by the production factory on the settings' public port."""
    assert settings.public_url is not None
    port = int(settings.public_url.rsplit(":", 1)[1])
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield app
    finally:
        await runner.cleanup()


class Staff:
    """A staff member using the JSON API."""

    def __init__(self, http: aiohttp.ClientSession, base: str, username: str) -> None:
        self.http, self.base, self.headers = http, base, {TEST_USER_HEADER: username}

    async def act(self, code: str, action: str, **fields: Any) -> dict[str, Any]:
        async with self.http.post(
            f"{self.base}/api/v1/tickets/{code}/actions",
            json={"action": action, **fields},
            headers=self.headers,
        ) as r:
            body: dict[str, Any] = await r.json()
            assert r.status == 200, body
            return body

    async def upload(self, data: bytes) -> str:
        async with self.http.post(
            f"{self.base}/api/v1/media", data=data, headers=self.headers
        ) as r:
            assert r.status == 200
            sha: str = (await r.json())["sha256"]
            return sha
