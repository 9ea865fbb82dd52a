"""Zalo OA's access/refresh token pair, kept in the database and renewed single-flight.

An access token lives about 25 hours; renewing it at the OAuth server also replaces the
refresh token, and an old refresh token works once. So all processes read the pair from
one row, and only one of them renews it at a time: within a process behind a lock, across
processes behind a lease on the row. A refusal (-14020: the refresh token was already
used) cannot be fixed here: admins are told, and messages wait for new tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import OAuthToken, utcnow
from backend.services.upsert import insert_for
from backend.web.bodies import BadJSON, parse_json
from bot.parsing import error_code

log = logging.getLogger(__name__)

PROVIDER = "zalo_oa"
REFRESH_PATH = "/v4/oa/access_token"
REFRESH_TOKEN_REUSED = -14020
LEASE = timedelta(seconds=30)
# How long a process waits for another one's renewal before it gives up for now.
WAIT_FOR_OTHER = 30.0


class TokenError(Exception):
    """No usable access token this time (the OAuth server is out of reach, say)."""


class TokenRevoked(TokenError):
    """The OAuth server refused the refresh token: an admin must set new tokens."""


# Called once when the refresh token is refused: (error code, the server's words).
OnRevoked = Callable[[int, str], Awaitable[None]]


class TokenStore:
    """Hands out the current access token and renews it when Zalo says it expired."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        http: Callable[[], aiohttp.ClientSession],
        on_revoked: OnRevoked,
    ) -> None:
        if not settings.zalo_oa_app_id or settings.zalo_app_secret is None:
            raise ValueError("Zalo OA tokens need HOTLINE_ZALO_OA_APP_ID and _APP_SECRET")
        self._sessions = sessions
        self._settings = settings
        self._app_id = settings.zalo_oa_app_id
        self._app_secret = settings.zalo_app_secret.get_secret_value()
        self._url = settings.zalo_oauth_url.rstrip("/") + REFRESH_PATH
        self._http = http
        self._on_revoked = on_revoked
        self._lock = asyncio.Lock()
        self._access: str | None = None

    async def access_token(self) -> str:
        """The access token to use now (read from the database once, then kept)."""
        if self._access is None:
            row = await self._load()
            if row.revoked_at is not None:
                raise TokenRevoked(row.revoked_reason or "refresh token refused")
            self._access = row.access_token
        return self._access

    async def _load(self) -> OAuthToken:
        """The stored pair; the configured one when none is stored yet, or when the stored
        one was refused and an admin has configured a new one since."""
        seed_access = _secret(self._settings.zalo_oa_access_token)
        seed_refresh = _secret(self._settings.zalo_oa_refresh_token)
        async with self._sessions() as session, session.begin():
            row = await session.get(OAuthToken, PROVIDER, populate_existing=True)
            if row is None:
                # Several first sends (in several processes) may get here at once: one
                # stores the pair, the others take it.
                await session.execute(
                    insert_for(session, OAuthToken)
                    .values(
                        provider=PROVIDER,
                        access_token=seed_access,
                        refresh_token=seed_refresh,
                        updated_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["provider"])
                )
                row = await session.get(OAuthToken, PROVIDER, populate_existing=True)
                if row is None:
                    raise RuntimeError("the Zalo OA token row was not stored")
            elif row.revoked_at is not None and seed_refresh and seed_refresh != row.refresh_token:
                log.info("Zalo OA: new configured tokens replace the refused ones")
                row.access_token, row.refresh_token = seed_access, seed_refresh
                row.revoked_at = row.revoked_reason = row.refreshing_until = None
                row.updated_at = utcnow()
            return row

    async def refresh(self, failed: str) -> str:
        """A new access token in place of `failed`, renewed once however many callers ask.

        A caller whose token was already replaced (here or by another process) gets the
        new one without a second renewal.
        """
        async with self._lock:
            if self._access is not None and self._access != failed:
                return self._access
            loop = asyncio.get_running_loop()
            give_up = loop.time() + WAIT_FOR_OTHER
            while True:
                row = await self._load()
                if row.revoked_at is not None:
                    raise TokenRevoked(row.revoked_reason or "refresh token refused")
                if row.access_token != failed:
                    self._access = row.access_token
                    return row.access_token
                if await self._take_lease(failed):
                    break
                if loop.time() > give_up:
                    raise TokenError("another process is still renewing the token")
                await asyncio.sleep(0.2)
            self._access = await self._renew(row.refresh_token)
            return self._access

    async def _take_lease(self, failed: str) -> bool:
        now = utcnow()
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(OAuthToken)
                .where(
                    OAuthToken.provider == PROVIDER,
                    OAuthToken.access_token == failed,
                    or_(OAuthToken.refreshing_until.is_(None), OAuthToken.refreshing_until < now),
                )
                .values(refreshing_until=now + LEASE)
                .execution_options(synchronize_session=False)
            )
            return getattr(result, "rowcount", 0) == 1

    async def _renew(self, refresh_token: str) -> str:
        """Ask the OAuth server for a new pair and store it (the lease is held)."""
        form = {
            "app_id": self._app_id,
            "refresh_token": refresh_token,
            "grant_type": "refresh_token",
        }
        try:
            async with self._http().post(
                self._url,
                data=form,
                headers={"secret_key": self._app_secret},
                timeout=aiohttp.ClientTimeout(total=20),
            ) as response:
                data = parse_json(await response.read())
            if not isinstance(data, dict):
                raise BadJSON("not an object")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            await self._store(refreshing_until=None)
            raise TokenError(f"token refresh failed: {type(exc).__name__}") from exc
        access = data.get("access_token")
        if isinstance(access, str) and access:
            # Seconds, as text ("90000") or as a number.
            given = str(data.get("expires_in") or "")
            expires_in = float(given) if given.isascii() and given.isdigit() else 0
            await self._store(
                access_token=access,
                refresh_token=str(data.get("refresh_token") or refresh_token),
                expires_at=utcnow() + timedelta(seconds=expires_in) if expires_in else None,
                refreshing_until=None,
                updated_at=utcnow(),
            )
            log.info("Zalo OA access token renewed")
            return access
        code = error_code(data.get("error"))
        words = str(data.get("error_description") or data.get("error_name") or "refused")
        reason = f"error {code}: {words}"
        await self._store(revoked_at=utcnow(), revoked_reason=reason, refreshing_until=None)
        if code == REFRESH_TOKEN_REUSED:
            log.error(
                "Zalo OA: the refresh token was refused as already used (error -14020). "
                "Zalo OA messages are held until an admin sets new HOTLINE_ZALO_OA_ACCESS_TOKEN "
                "and HOTLINE_ZALO_OA_REFRESH_TOKEN and restarts the service."
            )
        else:
            log.error(
                "Zalo OA: token refresh refused (%s). Zalo OA messages are held until an "
                "admin sets new HOTLINE_ZALO_OA_ACCESS_TOKEN and HOTLINE_ZALO_OA_REFRESH_TOKEN "
                "and restarts the service.",
                reason,
            )
        await self._on_revoked(code, words)
        raise TokenRevoked(reason)

    async def _store(self, **values: Any) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(OAuthToken)
                .where(OAuthToken.provider == PROVIDER)
                .values(**values)
                .execution_options(synchronize_session=False)
            )


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""
