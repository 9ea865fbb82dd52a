"""Which errors in reading a stored update it waits out (tried again later) and which
skip it: the database or the photo store not answering is waited out, whatever form the
driver gives it; a bug in reading one update is not."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from backend.services.media_store import MediaUnavailable
from bot.inbox import waits_out


async def test_a_pool_that_gives_no_connection_in_time_is_waited_out(tmp_path: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path}/x.db", pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    try:
        async with engine.connect() as held:
            await held.execute(text("select 1"))
            with pytest.raises(SQLAlchemyError) as caught:
                async with engine.connect() as again:
                    await again.execute(text("select 1"))
        assert waits_out(caught.value)
    finally:
        await engine.dispose()


async def test_a_database_that_refuses_connections_is_waited_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres")
    try:
        with pytest.raises(Exception) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
        assert waits_out(caught.value), repr(caught.value)
    finally:
        await engine.dispose()


def test_a_photo_store_down_is_waited_out_and_a_bug_is_not() -> None:
    assert waits_out(MediaUnavailable("the store did not answer"))
    assert not waits_out(KeyError("photo"))
    assert not waits_out(ValueError("not a media key"))
