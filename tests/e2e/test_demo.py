"""The demo runs only when asked (`hotline serve --demo`, HOTLINE_DEMO=1), never in
production; its accounts keep their passwords across restarts; without it there is no
/demo route; the simulator is part of the product and refuses malformed input."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.cli import server_app
from backend.config import Settings
from backend.models import Unit, User
from backend.services.accounts import password_matches
from backend.services.demo import DemoRefused
from backend.services.workflow import ROLES
from tests.e2e.conftest import free_port
from tests.e2e.staff_http import sign_in, web_settings
from tests.factories import make_user

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """What `hotline serve` runs (server_app), on the settings' port; yields the base URL."""
    assert settings.public_url is not None
    port = int(settings.public_url.rsplit(":", 1)[1])
    runner = web.AppRunner(server_app(settings), access_log=None)
    try:
        # A start that fails half-way still closes what it opened.
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield settings.public_url
    finally:
        await runner.cleanup()


def printed(out: str) -> dict[str, str]:
    return dict(re.findall(r"^  (demo-[a-z0-9-]+) +([a-z2-7]{16}) ", out, re.MULTILINE))


async def test_without_the_switch_there_is_no_demo(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = web_settings(database_url, tmp_path, demo=False)
    app = server_app(settings)
    assert not [r for r in app.router.resources() if r.canonical.startswith("/demo")]
    async with serving(settings) as base, aiohttp.ClientSession() as http:
        for path in ("/demo/chat", "/demo/api/messages"):
            async with http.get(base + path) as r:
                assert r.status == 404
        async with http.post(base + "/demo/api/send", json={"text": "/start"}) as r:
            assert r.status == 404
    assert "demo" not in capsys.readouterr().out.lower()


async def test_demo_passwords_stay_the_same_across_restarts(
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = web_settings(database_url, tmp_path, demo=True)
    async with serving(settings):
        first = printed(capsys.readouterr().out)
    async with serving(settings):
        second = printed(capsys.readouterr().out)
    assert first == second
    assert set(first) == {
        "demo-operator",
        "demo-supervisor",
        "demo-police",
        "demo-admin",
        "demo-operator-79",
        "demo-supervisor-79",
        "demo-staff-14812",
        "demo-leader-14812",
        "demo-staff-26740",
        "demo-leader-26740",
    }
    async with sessions() as s:
        users = {u.username: u for u in await s.scalars(select(User).where(User.demo))}
    # Every staff role, and the wards of the README's examples, each with its unit.
    assert {u.role for u in users.values()} == set(ROLES) - {"reporter", "system"}
    async with sessions() as s:
        codes = {uid: code for uid, code in await s.execute(select(Unit.id, Unit.code))}
    units = {u.username: codes.get(u.unit_id or 0) for u in users.values()}
    assert units["demo-staff-26740"] == units["demo-leader-26740"] == "W26740"
    assert (units["demo-operator-79"], units["demo-police"]) == ("P79", "C38")
    for username, password in first.items():
        assert password_matches(users[username].password_hash, password)
        assert not users[username].must_change_password


async def test_the_demo_refuses_a_database_with_real_accounts(
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with sessions() as s, s.begin():
        real = await make_user(s, "admin", None, password="the real admin's own")
        real.username = "demo-admin"
    with pytest.raises(DemoRefused, match="1 staff account"):
        async with serving(web_settings(database_url, tmp_path, demo=True)):
            pass
    assert printed(capsys.readouterr().out) == {}
    async with sessions() as s:
        admin = (await s.scalars(select(User).where(User.username == "demo-admin"))).one()
        assert await s.scalar(select(func.count()).select_from(User)) == 1
    assert not admin.demo and password_matches(admin.password_hash, "the real admin's own")
    env = {
        **os.environ,
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_MEDIA_DIR": str(tmp_path / "media"),
    }
    hotline = str(Path(sys.executable).parent / "hotline")
    done = await asyncio.create_subprocess_exec(
        hotline, "serve", "--demo", "--port", "1", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await done.communicate()
    assert done.returncode == 2 and "not the demo's" in stderr.decode()


async def test_accounts_the_demo_admin_makes_are_demo_accounts(
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = web_settings(database_url, tmp_path, demo=True)
    async with (
        serving(settings) as base,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        csrf = await sign_in(
            http, base, "demo-admin", printed(capsys.readouterr().out)["demo-admin"]
        )
        form = {"csrf": csrf, "username": "trainee", "role": "admin"}
        async with http.post(f"{base}/admin/users", data=form) as r:
            page = await r.text()
        once = re.search(r'class="ok secret".*?<code>([^<]+)</code>', page, re.DOTALL)
        assert r.status == 200 and once is not None
        # A trainee uses it as given: a shared demo password is never to be changed.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as newcomer:
            await sign_in(newcomer, base, "trainee", once.group(1))
            async with newcomer.get(f"{base}/queue", allow_redirects=False) as r:
                assert r.status == 200
    async with sessions() as s:
        trainee = (await s.scalars(select(User).where(User.username == "trainee"))).one()
    assert trainee.demo and trainee.role == "admin"
    # Without the demo it is nobody: its one-time password is refused like a wrong one.
    async with (
        serving(web_settings(database_url, tmp_path, demo=False)) as base,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        async with http.get(f"{base}/login") as r:
            token = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert token is not None
        login = {"csrf": token.group(1), "username": "trainee", "password": once.group(1)}
        async with http.post(f"{base}/login", data=login, allow_redirects=False) as r:
            assert r.status == 401


async def test_the_simulator_refuses_malformed_input_with_a_client_error(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        serving(web_settings(database_url, tmp_path, demo=True)) as base,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        async with http.get(base + "/demo/chat") as r:
            assert r.status == 200
        send = base + "/demo/api/send"
        for body in (
            b"{not json",
            b'{"lat": Infinity, "lon": 1}',
            b'{"lat": 1e400, "lon": 1}',
            b'{"button": "x", "message_id": "one"}',
            b'{"lat": "north", "lon": 105}',
            b'{"text": ["a"]}',
            b"[" * 5000,
            b'"text"',
        ):
            async with http.post(
                send, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                assert r.status == 400, body
                assert "JSON" in await r.text()
        async with http.post(send, json={"text": "/start"}) as r:
            assert r.status == 200


def test_production_refuses_the_demo(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="demo"):
        Settings(environment="production", demo=True)
    env = {
        **os.environ,
        "HOTLINE_ENVIRONMENT": "production",
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_MEDIA_DIR": str(tmp_path / "media"),
    }
    for argv, extra in ((["serve", "--demo"], {}), (["serve"], {"HOTLINE_DEMO": "1"})):
        done = subprocess.run(  # noqa: S603 - our own console script
            [str(Path(sys.executable).parent / "hotline"), *argv, "--port", str(free_port())],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "the demo does not run in production" in done.stderr


def test_product_code_never_imports_the_tests() -> None:
    """The demo's stand-in is part of the product: an installed package has no tests/."""
    for package in ("backend", "bot", "handlers"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                assert not any(n == "tests" or n.startswith("tests.") for n in names), path


def test_the_demo_never_runs_beside_a_real_chat_channel() -> None:
    """Real residents would reach a service whose shared demo accounts may unseal them."""
    for channel in (
        {"telegram_token": "123456:REAL-token"},
        {"zalo_bot_token": "zalo-bot-token"},
        {
            "zalo_oa_app_id": "1",
            "zalo_oa_secret_key": "k",
            "zalo_app_secret": "s",
            "zalo_oa_access_token": "t",
        },
    ):
        with pytest.raises(ValidationError, match="simulated chat only"):
            Settings(demo=True, **channel)  # type: ignore[arg-type]
        Settings(demo=False, **channel)  # type: ignore[arg-type]
