"""Zalo OA tokens: seeded from the settings, renewed once however many ask at once, in
one process or two, and a refused refresh token held for an admin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import OAuthToken
from bot.zalo_tokens import PROVIDER, TokenRevoked, TokenStore
from tests.fakes.zalo_oa import FakeZaloOA


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def oa_settings(settings: Settings, oa: FakeZaloOA, refresh: str = "refresh-1") -> Settings:
    return settings.model_copy(
        update={
            "zalo_oa_app_id": oa.app_id,
            "zalo_oa_secret_key": SecretStr(oa.oa_secret_key),
            "zalo_app_secret": SecretStr(oa.app_secret),
            "zalo_oa_access_token": SecretStr("access-1"),
            "zalo_oa_refresh_token": SecretStr(refresh),
            "zalo_oauth_url": oa.url,
        }
    )


async def test_concurrent_renewals_in_two_processes_call_oauth_once(
    oa: FakeZaloOA,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
) -> None:
    revoked: list[int] = []

    async def on_revoked(code: int, words: str) -> None:
        revoked.append(code)

    config = oa_settings(settings, oa)
    # Two stores stand for two server processes sharing the database.
    a = TokenStore(sessions, config, lambda: http, on_revoked)
    b = TokenStore(sessions, config, lambda: http, on_revoked)
    assert await a.access_token() == "access-1"
    assert await b.access_token() == "access-1"
    got = await asyncio.gather(*(s.refresh("access-1") for s in (a, b, a, b, a, b)))
    assert len(oa.refreshes) == 1
    assert set(got) == {oa.access_token}
    async with sessions() as session:
        row = await session.get(OAuthToken, PROVIDER)
    assert row is not None and row.refresh_token == oa.refresh_token
    assert row.refreshing_until is None
    # A caller that still holds the old token gets the new one without another renewal.
    assert await a.refresh("access-1") == oa.access_token
    assert len(oa.refreshes) == 1 and revoked == []


async def test_refused_refresh_is_held_until_new_tokens_are_configured(
    oa: FakeZaloOA,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
) -> None:
    revoked: list[tuple[int, str]] = []

    async def on_revoked(code: int, words: str) -> None:
        revoked.append((code, words))

    oa.reuse_refresh_token()
    store = TokenStore(sessions, oa_settings(settings, oa), lambda: http, on_revoked)
    with pytest.raises(TokenRevoked, match="-14020"):
        await store.refresh(await store.access_token())
    assert revoked == [(-14020, "The refresh token has been used before")]
    # Every later call fails at once, without asking the OAuth server again.
    with pytest.raises(TokenRevoked):
        await store.refresh("access-1")
    with pytest.raises(TokenRevoked):
        await TokenStore(
            sessions, oa_settings(settings, oa), lambda: http, on_revoked
        ).access_token()
    assert len(oa.refreshes) == 1
    # An admin configures a fresh pair and restarts: it replaces the refused one.
    restarted = TokenStore(
        sessions, oa_settings(settings, oa, refresh="refresh-new"), lambda: http, on_revoked
    )
    assert await restarted.access_token() == "access-1"
    async with sessions() as session:
        row = await session.get(OAuthToken, PROVIDER)
    assert row is not None and row.revoked_at is None and row.refresh_token == "refresh-new"
