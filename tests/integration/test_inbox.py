"""The inbox: an update is answered only once it is durable (in the database, or in the
spool when the database is slower than the platform waits), and handled in order."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.crypto import DataKeyError, keyring_from, keys, new_key
from backend.models import InboundEvent
from backend.services.presence import Presence
from backend.services.units import WardIndex
from bot.dispatcher import Dispatcher
from bot.inbox import Inbox, NotStored
from bot.spool import PURPOSE, Spool
from handlers.turn import Services


@pytest.fixture
async def inbox(
    engine: AsyncEngine,
    writer: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> AsyncIterator[Inbox]:
    presence = Presence(sessions)
    await presence.beat()
    dispatcher = Dispatcher(writer, Services(wards=WardIndex([])), {})
    box = Inbox(
        engine,
        presence,
        dispatcher,
        spool=Spool(tmp_path / "spool", presence.id),
        poll_interval=0.1,
    )
    dispatcher.start()
    yield box
    await box.stop()
    await dispatcher.stop()


async def stored(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count()).select_from(InboundEvent)) or 0


async def test_an_update_the_database_refuses_is_spooled_then_stored_once_it_can(
    inbox: Inbox, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE inbound_events RENAME TO inbound_events_away"))
    started = time.monotonic()
    await inbox.accept("zalo_oa", "msg-1", "user-1", {"n": 1}, spool=True)
    # While the first waits in the spool, the next goes there too, behind it.
    await inbox.accept("zalo_oa", "msg-2", "user-1", {"n": 2}, spool=True)
    assert time.monotonic() - started < 2.0
    # Without the spool, the platform is told to send it again.
    with pytest.raises(NotStored):
        await inbox.accept("telegram", "1", "user-1", {"n": 3})
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE inbound_events_away RENAME TO inbound_events"))
    assert inbox._spool is not None
    assert await inbox._spool.drain(inbox._dispatcher.store_rows) == 2
    async with sessions() as session:
        keys = list(await session.scalars(select(InboundEvent.event_key).order_by(InboundEvent.id)))
    assert keys == ["msg-1", "msg-2"]
    # The same update again is stored once, and at once now.
    await inbox.accept("zalo_oa", "msg-1", "user-1", {"n": 1}, spool=True)
    assert await stored(sessions) == 2


async def test_a_spool_left_by_a_killed_process_is_stored_by_the_next(
    inbox: Inbox, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    # What a process wrote before it was killed: the last line cut short.
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    ring = keys()
    whole = {"channel": "zalo_oa", "key": "m1", "chat_id": "7261934085512743", "body": {}}
    cut = ring.seal_json({**whole, "key": "m2"}, PURPOSE)
    (spool_dir / "deadbeef-1.jsonl").write_bytes(
        f"{ring.seal_json(whole, PURPOSE)}\n{cut[: len(cut) // 2]}".encode()
    )
    # Sealed, like the database's copy: nothing of the update shows in the file.
    assert b"7261934085512743" not in (spool_dir / "deadbeef-1.jsonl").read_bytes()
    assert inbox._spool is not None
    assert await inbox._spool.drain(inbox._dispatcher.store_rows) == 1
    assert await stored(sessions) == 1
    assert list(spool_dir.iterdir()) == []


async def test_a_spool_file_under_a_key_this_process_lacks_is_kept_not_skipped(
    inbox: Inbox, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    update = {"channel": "zalo_oa", "key": "m1", "chat_id": "u1", "body": {"a": 1}}
    other = keyring_from(new_key())
    (spool_dir / "0ld-1.jsonl").write_bytes(f"{other.seal_json(update, PURPOSE)}\n".encode())
    mine = {**update, "key": "m2"}
    (spool_dir / "n3w-1.jsonl").write_bytes(f"{keys().seal_json(mine, PURPOSE)}\n".encode())
    assert inbox._spool is not None
    with pytest.raises(DataKeyError, match=r"0ld-1\.jsonl"):
        await inbox._spool.drain(inbox._dispatcher.store_rows)
    # The other file was stored; this one waits for a process with its key.
    assert await stored(sessions) == 1
    assert [p.name for p in spool_dir.iterdir()] == ["0ld-1.jsonl"]
