"""A staff member's browser as the server sees it over plain HTTP: its own cookies, its own
source address on the loopback (127.0.0.0/8), and an X-Forwarded-For header when a
proxy is in front; plus the settings of a web-only server for such tests."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.services.accounts import create_user, set_password
from tests.e2e.conftest import free_port


def web_settings(
    database_url: str,
    tmp_path: Path,
    *,
    trusted_proxies: list[IPv4Network | IPv6Network] | None = None,
    demo: bool = False,
    **overrides: Any,
) -> Settings:
    """A server without chat channels or background duties, on a port of its own."""
    settings = Settings(
        environment="test",
        database_url=database_url,
        nominatim_url="",
        media_dir=tmp_path / "media",
        public_url=f"http://127.0.0.1:{free_port()}",
        outbox_poll_interval=0.2,
        deadline_worker_enabled=False,
        stats_duty_enabled=False,
        map_tile_url="",
        trusted_proxies=trusted_proxies or [],
        demo=demo,
    )
    return settings.model_copy(update=overrides)


def base_url(settings: Settings) -> str:
    return settings.public_url or ""


async def staff_account(
    sessions: async_sessionmaker[AsyncSession],
    username: str,
    password: str,
    role: str = "ward_staff",
    unit: str | None = "W14812",
) -> int:
    """An account whose owner has already chosen password; returns its id."""
    async with sessions() as s, s.begin():
        user = (await create_user(s, username, role, unit_code=unit)).user
        await set_password(s, user, password)
        return user.id


async def first_login_account(
    sessions: async_sessionmaker[AsyncSession], username: str, role: str = "ward_staff"
) -> str:
    """A new account as `hotline create-user` makes it; returns its one-time password."""
    async with sessions() as s, s.begin():
        return (await create_user(s, username, role, unit_code="W14812")).one_time_password


async def sign_in(http: aiohttp.ClientSession, base: str, username: str, password: str) -> str:
    """Log in through the form with http (a cookie jar that keeps the session); returns
    the session's CSRF token, as its pages carry it."""
    async with http.get(f"{base}/login") as r:
        login_token = form_token(await r.text(), "/login")
    form = {"csrf": login_token, "username": username, "password": password}
    async with http.post(f"{base}/login", data=form, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
    async with http.get(f"{base}/queue") as r:
        return form_token(await r.text(), "/logout")


@dataclass(frozen=True)
class Answer:
    status: int
    location: str
    retry_after: str | None
    text: str
    set_cookie: list[str]


def form_token(page: str, action: str) -> str:
    """The CSRF token in the page's form that posts to action (the header of a signed-in
    page has the logout form too)."""
    form = page.split(f'action="{action}', 1)[1]
    return form.split('name="csrf" value="', 1)[1].split('"', 1)[0]


class Visitor:
    """One browser: a cookie jar, and a connection from `source` (a loopback address)."""

    def __init__(self, source: str = "127.0.0.1") -> None:
        self.source = source
        self.http: aiohttp.ClientSession

    async def __aenter__(self) -> Visitor:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(self.source, 0)),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.http.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        async with self.http.request(
            method, url, data=data, headers=headers, allow_redirects=False
        ) as r:
            return Answer(
                status=r.status,
                location=r.headers.get("Location", ""),
                retry_after=r.headers.get("Retry-After"),
                text=await r.text(),
                set_cookie=r.headers.getall("Set-Cookie", []),
            )

    async def get(self, url: str, *, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("GET", url, headers=headers)

    async def log_in(
        self,
        base: str,
        username: str,
        password: str,
        *,
        forwarded_for: str | None = None,
        lang: str | None = None,
    ) -> Answer:
        """The login form filled in and sent, as a person does it."""
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        page = await self.get(f"{base}/login", headers=headers)
        assert page.status == 200, page.status
        form = {"username": username, "password": password, "csrf": form_token(page.text, "/login")}
        action = f"{base}/login?lang={lang}" if lang else f"{base}/login"
        return await self.request("POST", action, data=form, headers=headers)

    async def post_form(self, base: str, page: str, action: str, form: dict[str, str]) -> Answer:
        """A form on `page` sent to `action` with that page's CSRF token."""
        shown = await self.get(f"{base}{page}")
        assert shown.status == 200, (page, shown.status)
        return await self.request(
            "POST", f"{base}{action}", data={**form, "csrf": form_token(shown.text, action)}
        )
