"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.cli import migrate
from backend.config import Settings
from backend.crypto import keys
from backend.db import create_engine, session_factory
from backend.migrate import upgrade
from backend.models import Base, Conversation, InboundEvent, OutboxMessage, ReporterIdentity
from tests.conftest import PG_URL, _admin
from tests.rawbytes import named, raw_database


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == []


@pytest.fixture
def empty_url(tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it (not even the schema)."""
    if PG_URL is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    name = f"e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def test_an_installation_from_before_sealing_is_sealed_by_the_upgrade(
    empty_url: str,
) -> None:
    """What the tables held in the clear before 0013 is sealed by it, and found again."""
    await asyncio.to_thread(upgrade, empty_url, "0012")
    engine = create_engine(empty_url)
    chat, phone = "5123456789012", "+84912345670"
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO reporters (id, pseudonym, created_at)"
                    " VALUES (1, 'AB12CD34', CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO reporter_identities (reporter_id, channel, chat_id, phone)"
                    " VALUES (1, 'telegram', :chat, :phone)"
                ),
                {"chat": chat, "phone": phone},
            )
            await conn.execute(
                text(
                    "INSERT INTO conversations (channel, chat_id, state, data, language,"
                    " reporter_id, updated_at) VALUES ('telegram', :chat, 'description',"
                    " :data, 'vi', 1, CURRENT_TIMESTAMP)"
                ),
                {"chat": chat, "data": json.dumps({"phone": phone})},
            )
            await conn.execute(
                text(
                    "INSERT INTO outbox (channel, chat_id, payload, status, attempts,"
                    " next_attempt_at, created_at) VALUES ('telegram', :chat, :payload,"
                    " 'sent', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"chat": chat, "payload": json.dumps({"type": "reply", "text": phone})},
            )
            await conn.execute(
                text(
                    "INSERT INTO inbound_events (channel, event_key, chat_id, body,"
                    " received_at) VALUES ('telegram', 'u1', :chat, :body, CURRENT_TIMESTAMP)"
                ),
                {"chat": chat, "body": json.dumps({"message": {"chat": {"id": int(chat)}}})},
            )
            await conn.execute(
                text(
                    "INSERT INTO processed_updates (channel, update_id, processed_at)"
                    " VALUES ('zalo_oa', 'u1', CURRENT_TIMESTAMP)"
                )
            )
            for table, column in (
                ("inbound_events", "event_key"),
                ("processed_updates", "update_id"),
            ):
                await conn.execute(
                    text(f"UPDATE {table} SET {column} = :k"),  # noqa: S608
                    {"k": f"follow:{chat}:1796177444259"},
                )
        began = time.time() - 1
        await engine.dispose()
        # As `hotline migrate` upgrades it: the tables that held identities are rewritten.
        await migrate(Settings(environment="test", database_url=empty_url))
        # (PostgreSQL's WAL from before the upgrade still holds what was written then,
        # as do older backups: the README says so.)
        raw = await raw_database(empty_url, engine, began, wal=False)
        assert named(raw, [chat, phone]) == []
        assert b"AB12CD34" in raw, "the search sees the rows"
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
        ring = keys()
        async with session_factory(engine)() as s:
            identity = await s.scalar(
                select(ReporterIdentity).where(
                    ReporterIdentity.chat_key == ring.chat_key("telegram", chat)
                )
            )
            assert identity is not None
            assert (identity.chat_id, identity.phone) == (chat, phone)
            conv = await s.scalar(select(Conversation))
            assert conv is not None and conv.data == {"phone": phone}
            assert conv.chat_key == ring.chat_key("telegram", chat)
            sent = await s.scalar(select(OutboxMessage))
            assert sent is not None and sent.address == chat and sent.payload["text"] == phone
            stored = await s.scalar(select(InboundEvent))
            assert stored is not None and stored.address == chat
            assert stored.body == {"message": {"chat": {"id": int(chat)}}}
    finally:
        await engine.dispose()
