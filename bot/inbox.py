"""Platform events stored as they arrive, answered at once, and handled after.

Zalo drops a webhook that takes more than 2 seconds to answer. So the webhook only
stores the event (once per platform id) and answers; a worker then reads the stored
events in order, fetches their photos, and hands them to the dispatcher. A process that
stops loses nothing: the next one handles what was left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import InboundEvent, utcnow
from backend.services.upsert import insert_for
from bot.dispatcher import Dispatcher
from bot.tasks import cancel
from handlers.events import Incoming

log = logging.getLogger(__name__)

# Reads a stored event into what the dialogue takes, through the channel's schema
# (bot/updates.py), as its webhook does: None for nothing for it, or one that does not fit.
Reader = Callable[[Mapping[str, Any]], Awaitable[Incoming | None]]

# How long a webhook waits for the event to be stored before it answers anyway.
STORE_PATIENCE = 1.5
# Handled events are kept this long: the newest one of a chat dates its last message.
KEEP = timedelta(days=8)
BATCH = 100


class Inbox:
    """Stores events before they are answered; hands them to the dialogue in order."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        dispatcher: Dispatcher,
        *,
        poll_interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._dispatcher = dispatcher
        self._poll_interval = poll_interval
        self._readers: dict[str, Reader] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._late: set[asyncio.Task[None]] = set()
        self._pruned_at: datetime | None = None

    def add_reader(self, channel: str, reader: Reader) -> None:
        self._readers[channel] = reader

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox")

    async def stop(self) -> None:
        if self._late:
            await asyncio.wait(self._late, timeout=5.0)
            for task in list(self._late):
                log.error("an event answered before it was stored is lost at stop")
                await cancel(task)
        await cancel(self._task)
        self._task = None

    async def accept(
        self,
        channel: str,
        key: str,
        chat_id: str,
        body: Mapping[str, Any],
        patience: float = STORE_PATIENCE,
    ) -> bool:
        """Store an event (a repeated key is stored once). True once it is stored; False
        when the database took longer than `patience` (or failed): it is then stored in
        the background, trying again until it works, and the caller answers the platform
        without waiting. Only a process that stops meanwhile loses it."""
        task = asyncio.create_task(self._store(channel, key, chat_id, dict(body)))
        try:
            await asyncio.wait_for(asyncio.shield(task), patience)
        except TimeoutError:
            log.warning("%s event answered before it was stored: the database is slow", channel)
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            return False
        return True

    async def _store(self, channel: str, key: str, chat_id: str, body: dict[str, Any]) -> None:
        delay = 0.5
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    await session.execute(
                        insert_for(session, InboundEvent)
                        .values(
                            channel=channel,
                            event_key=key,
                            chat_id=chat_id,
                            body=body,
                            received_at=utcnow(),
                        )
                        .on_conflict_do_nothing(index_elements=["channel", "event_key"])
                    )
                break
            except Exception:
                log.exception("could not store a %s event; trying again", channel)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._wake.set()

    async def last_inbound(self, channel: str, chat_id: str) -> datetime | None:
        """When this chat last sent anything (events are kept for KEEP)."""
        async with self._sessions() as session:
            return await session.scalar(
                select(func.max(InboundEvent.received_at)).where(
                    InboundEvent.channel == channel, InboundEvent.chat_id == chat_id
                )
            )

    async def _run(self) -> None:
        while True:
            try:
                handled = await self.pump()
            except Exception:
                log.exception("inbox pump failed")
                handled = 0
            if handled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                self._wake.clear()

    async def pump(self) -> int:
        """Hand the stored events not handled yet to the dialogue; returns how many."""
        async with self._sessions() as session:
            rows = list(
                await session.execute(
                    select(InboundEvent.id, InboundEvent.channel, InboundEvent.body)
                    .where(
                        InboundEvent.handled_at.is_(None),
                        InboundEvent.channel.in_(list(self._readers)),
                    )
                    .order_by(InboundEvent.id)
                    .limit(BATCH)
                )
            )
        if not rows:
            await self._prune()
            return 0
        # Photos download side by side; the dispatcher then keeps the arrival order.
        events = await asyncio.gather(*(self._read(channel, body) for _, channel, body in rows))
        await asyncio.gather(*(self._dispatcher.submit(e) for e in events if e is not None))
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(InboundEvent)
                .where(InboundEvent.id.in_([row_id for row_id, _, _ in rows]))
                .values(handled_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        return len(rows)

    async def _read(self, channel: str, body: Mapping[str, Any]) -> Incoming | None:
        try:
            return await self._readers[channel](body)
        except Exception:
            # A malformed event must not hold up the ones after it.
            log.exception("a stored %s event could not be read; skipped", channel)
            return None

    async def _prune(self) -> None:
        now = utcnow()
        if self._pruned_at is not None and now - self._pruned_at < timedelta(hours=1):
            return
        self._pruned_at = now
        async with self._sessions() as session, session.begin():
            await session.execute(
                delete(InboundEvent).where(
                    InboundEvent.handled_at.is_not(None), InboundEvent.received_at < now - KEEP
                )
            )
