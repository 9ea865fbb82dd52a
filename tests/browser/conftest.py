"""Real headless Chromium (Debian's `chromium`) driven by Playwright, against the whole
service built by the production factory, with the Bot API stand-in for the chats."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from backend.config import Settings
from tests.e2e.conftest import chat_settings, free_port, running  # noqa: F401
from tests.fakes.telegram_api import FakeTelegram

ARTIFACTS = Path(os.environ.get("HOTLINE_TEST_ARTIFACTS", "test-artifacts"))


@pytest.fixture
def mode() -> str:
    return "polling"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise RuntimeError("Debian's chromium is missing: `make test` installs it")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
async def served(chat_settings: Settings, api: FakeTelegram) -> AsyncIterator[str]:  # noqa: F811
    """The service on its public URL; yields that URL."""
    async with running(chat_settings):
        yield chat_settings.public_url or ""


async def log_in(
    browser: Browser, base: str, username: str, password: str, width: int = 1024
) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": 800}, base_url=base)
    page = await context.new_page()
    await page.goto("/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    return page
