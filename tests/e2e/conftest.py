"""The whole service against the Bot API stand-in, in polling or webhook mode."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from backend.cli import build_app
from backend.config import Settings
from tests.fakes.telegram_api import FakeTelegram


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
