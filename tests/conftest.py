"""Test fixtures: a migrated database per test (SQLite file, or PostgreSQL when
HOTLINE_TEST_DATABASE_URL is set), built from a template made once per session."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.cli import load_units, migrate
from backend.config import Settings
from backend.crypto import install, keyring_from
from backend.db import create_engine, create_writer_engine, session_factory
from tests.fakes.s3 import MotoS3
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.zalo_bot import FakeZaloBot
from tests.fakes.zalo_oa import FakeZaloOA

# Every process the tests start seals under this key (a test that needs another says so).
TEST_DATA_KEY = base64.b64encode(bytes(range(32))).decode()
os.environ.setdefault("HOTLINE_DATA_KEY", TEST_DATA_KEY)
install(keyring_from(os.environ["HOTLINE_DATA_KEY"]))

PG_URL = os.environ.get("HOTLINE_TEST_DATABASE_URL")
TEMPLATE_DB = "hotline_template"


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    assert PG_URL is not None
    conn = await asyncpg.connect(_dsn(PG_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _build(url: str) -> None:
    settings = Settings(database_url=url)
    await migrate(settings)
    await load_units(settings)


@pytest.fixture(scope="session")
def template_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database with the schema, the categories and every unit, made once."""
    if PG_URL:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)"))
        asyncio.run(_admin(f"CREATE DATABASE {TEMPLATE_DB}"))
        url = make_url(PG_URL).set(database=TEMPLATE_DB).render_as_string(hide_password=False)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('template') / 'template.db'}"
    asyncio.run(_build(url))
    return url


@pytest.fixture
def database_url(template_url: str, tmp_path: Path) -> Iterator[str]:
    """A fresh copy of the template for one test."""
    if PG_URL:
        name = f"t_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    else:
        source = Path(str(make_url(template_url).database))
        target = tmp_path / "hotline.db"
        shutil.copyfile(source, target)
        yield f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def writer(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The chat writer's engine, as the server builds it (its own on SQLite)."""
    own = create_writer_engine(database_url)
    yield own if own is not None else engine
    if own is not None:
        await own.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        # No geocoder unless a test starts the Nominatim stand-in.
        nominatim_url="",
        media_dir=tmp_path / "media",
        outbox_poll_interval=0.2,
        # The monthly duty acts on the machine's date; its tests run it with their own.
        stats_duty_enabled=False,
    )


@pytest.fixture
async def api() -> AsyncIterator[FakeTelegram]:
    """The Bot API stand-in, listening on 127.0.0.1."""
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def oa() -> AsyncIterator[FakeZaloOA]:
    """The Zalo OA openapi and oauth stand-in, listening on 127.0.0.1."""
    fake = FakeZaloOA()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def zbot() -> AsyncIterator[FakeZaloBot]:
    """The Zalo Bot Platform stand-in, listening on 127.0.0.1."""
    fake = FakeZaloBot()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3]:
    """moto's S3 server on 127.0.0.1, started once for the session."""
    server = MotoS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: MotoS3) -> str:
    """A new, empty bucket on the S3 stand-in."""
    name = f"media-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name
