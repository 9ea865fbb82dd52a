"""Every channel's intake: store the platform's update, answer, and handle it after.

A webhook (or a poller) stores the raw update, once per platform id, and answers the
platform only when it is stored: the stores of the updates arriving together are one
transaction (group commit). Workers in any process then take a chat's stored updates
under a lease, read them (fetching their photos) and hand them to the dispatcher, in
order. The dispatcher marks them handled in the transaction that handles them.

A chat's updates are handled in order, by one process at a time: a process takes a chat
only when it can lease the chat's oldest unhandled update, and then takes all of them.
A lease lasts while its process lives (see Presence). An update that fails for a reason
that may pass (a lock, a race, an outage) stays unhandled and is tried again, later.

When the database is slower than a platform's patience (Zalo's 2 s), an update is made
durable in a local spool file first (see Spool), answered, and stored when it can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from secrets import token_hex
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, delete, func, or_, select, type_coerce, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from backend.crypto import keys
from backend.db import limit_waits, write_retrying
from backend.logs import request_id
from backend.models import InboundEvent, ProcessBeat, utcnow
from backend.services.media_store import MediaUnavailable
from backend.services.presence import Presence
from backend.services.quiet import Quiet
from bot.dispatcher import Dispatcher
from bot.spool import Spool, Stored
from bot.tasks import cancel
from handlers.events import Incoming
from handlers.jobs import JOB

log = logging.getLogger(__name__)

# Reads a stored update into what the dialogue takes, through the channel's schema
# (bot/updates.py): None for nothing for it, or one that does not fit.
Reader = Callable[[Mapping[str, Any]], Awaitable[Incoming | None]]

# How long a webhook waits for its update to be stored before the spool takes it.
STORE_PATIENCE = 1.5
# How long a webhook without a spool waits before it answers 503 (the platform retries).
STORE_LIMIT = 10.0
# Handled updates are kept this long: the newest one of a chat dates its last message.
KEEP = timedelta(days=8)
# Chats taken in one claim.
CHATS = 100
# Longest wait before a chat whose update failed is tried again (seconds).
MAX_BACKOFF = 60.0


class NotStored(Exception):
    """The database did not store the update in time: answer so that the platform sends
    it again."""


def waits_out(exc: BaseException) -> bool:
    """Whether an error in reading an update is one the update waits out, to be tried
    again, not skipped: the photo store or the database not answering (a database error,
    a pool's timeout, a refused connection)."""
    return isinstance(exc, (MediaUnavailable, SQLAlchemyError, OSError))


@dataclass(frozen=True, slots=True)
class _Leased:
    id: int
    channel: str
    # The chat's look-up names it here. Its id and the update are opened when read:
    # one sealed under a key this process lacks holds up its own chat only.
    chat_key: str
    sealed_address: str
    sealed_body: str
    request_id: str | None


class Inbox:
    """Stores updates before they are answered; hands them to the dialogue in order."""

    def __init__(
        self,
        engine: AsyncEngine,
        presence: Presence,
        dispatcher: Dispatcher,
        *,
        spool: Spool | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._dialect = engine.dialect.name
        self._presence = presence
        self._dispatcher = dispatcher
        self._spool = spool
        self._poll_interval = poll_interval
        self._readers: dict[str, Reader] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        # Chats being handled in this process now, and chats to leave alone until then.
        self._busy: set[tuple[str, str]] = set()
        self._cooling: dict[tuple[str, str], tuple[float, float]] = {}
        self._chats: set[asyncio.Task[None]] = set()
        self._pruned_at: datetime | None = None
        self._quiet = Quiet("inbox")
        self._store_quiet = Quiet("inbox store")

    def add_reader(self, channel: str, reader: Reader) -> None:
        self._readers[channel] = reader

    async def takes_photo(self, channel: str, chat_id: str) -> bool:
        """Whether a chat's photo is to be downloaded and stored: not when the dialogue
        would refuse it (a muted reporter, a chat over its allowance)."""
        return await self._dispatcher.takes_photo(channel, chat_id)

    def wake(self) -> None:
        """Look for waiting updates now (some were stored and left for the worker)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox")
        if self._spool is not None:
            self._drainer = asyncio.create_task(
                self._drain_forever(self._spool), name="inbox-spool"
            )

    async def stop(self) -> None:
        await cancel(self._drainer)
        self._drainer = None
        await cancel(self._task)
        self._task = None
        if self._chats:
            await asyncio.wait(self._chats, timeout=5.0)
            for task in list(self._chats):
                await cancel(task)

    # --- storing ---------------------------------------------------------------------------

    async def accept(
        self,
        channel: str,
        key: str,
        chat_id: str,
        body: Mapping[str, Any],
        *,
        spool: bool = False,
        ready: Incoming | None = None,
    ) -> None:
        """Store an update (a repeated key is stored once); return once it is durable.
        ready: the update as the dialogue takes it, when reading it fetches nothing: it
        is then handled in the transaction that stores it, when its chat can be.

        With `spool` (for a platform that neither waits long nor sends again), an update
        the database does not take within STORE_PATIENCE (or while older ones wait in
        the spool) is written to the spool, and the call returns. Without, the call waits
        up to STORE_LIMIT and raises NotStored when the update is not stored: the webhook
        then answers 503, and the platform sends it again.
        """
        # A polled update has no request of its own: it gets an id here, which its
        # handling and its replies carry.
        item = Stored(channel, key, chat_id, dict(body), request_id.get() or token_hex(8))
        local = self._spool if spool else None
        if local is not None and local.waiting():
            await local.append(item)
            return
        stored = self._dispatcher.submit_stored(item, ready)
        patience = STORE_PATIENCE if local is not None else STORE_LIMIT
        try:
            await asyncio.wait_for(asyncio.shield(stored), patience)
            return
        except TimeoutError:
            stored.add_done_callback(_consume)
            why = "the database is slow"
        except Exception as exc:
            self._store_quiet.failed(exc, "could not store an update")
            why = "the database failed"
        if local is None:
            raise NotStored(why)
        log.warning("a %s update went to the spool: %s", channel, why)
        await local.append(item)

    async def _drain_forever(self, spool: Spool) -> None:
        while True:
            try:
                if await spool.drain(self._dispatcher.store_rows):
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._store_quiet.failed(exc, "could not store the spooled updates")
            await asyncio.sleep(self._poll_interval)

    async def last_inbound(self, channel: str, chat_id: str) -> datetime | None:
        """When this chat last sent anything (updates are kept for KEEP)."""
        async with self._sessions() as session:
            return await session.scalar(
                select(func.max(InboundEvent.received_at)).where(
                    InboundEvent.channel == channel,
                    InboundEvent.chat_key == keys().chat_key(channel, chat_id),
                )
            )

    # --- handling --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self.pump()
                self._quiet.recovered()
            except Exception as exc:
                self._quiet.failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()

    async def pump(self) -> int:
        """Lease the chats whose updates wait and are free for this process, and start
        handling them; returns how many chats."""
        claimed = await self._claim()
        for chat, rows in claimed.items():
            self._busy.add(chat)
            task = asyncio.create_task(self._handle_chat(chat, rows))
            self._chats.add(task)
            task.add_done_callback(self._chats.discard)
        if not claimed and not self._busy:
            await self._prune()
        return len(claimed)

    async def drain(self, within: float = 30.0) -> None:
        """Handle everything waiting now (for tests and the benchmark)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while await self.pump() or self._chats:
            if self._chats:
                await asyncio.wait(self._chats, timeout=max(0.0, deadline - loop.time()))
            if loop.time() > deadline:
                raise TimeoutError("the inbox did not drain")

    async def _claim(self) -> dict[tuple[str, str], list[_Leased]]:
        return await write_retrying(self._claim_once, busy_patience=STORE_LIMIT)

    async def _claim_once(self) -> dict[tuple[str, str], list[_Leased]]:
        mono = asyncio.get_running_loop().time()
        self._cooling = {c: v for c, v in self._cooling.items() if v[0] > mono}
        skip = self._busy | set(self._cooling)
        take_over = self._presence.may_take_over()
        me, after = self._presence.id, self._presence.alive_after()
        sql = _claim_statements(self._dialect)
        channels = list({*self._readers, *self._dispatcher.channels})
        async with self._engine.begin() as conn:
            await limit_waits(conn)
            return await conn.run_sync(sql.claim, channels, skip, me, after, take_over)

    async def _handle_chat(self, chat: tuple[str, str], rows: list[_Leased]) -> None:
        """Read a chat's updates (their photos fetched side by side), then hand them to
        the dispatcher in order; stop at the first that fails, and try it again later."""
        try:
            events = await asyncio.gather(*(self._read(r) for r in rows))
            nothing = [r.id for r, e in zip(rows, events, strict=True) if e is None]
            handed = [
                self._dispatcher.submit(e, r.id, r.request_id)
                for r, e in zip(rows, events, strict=True)
                if e is not None
            ]
            outcomes = await asyncio.gather(*handed, return_exceptions=True)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if nothing:
                await self._mark_handled(nothing)
            if failed is not None:
                self._cool(chat)
                self._quiet.failed(failed, "could not handle an update; it will be tried again")
            else:
                self._cooling.pop(chat, None)
        except Exception as exc:
            self._cool(chat)
            self._quiet.failed(exc, "could not handle a chat's updates")
        finally:
            self._busy.discard(chat)
            self._wake.set()

    def _cool(self, chat: tuple[str, str]) -> None:
        """Leave a chat whose update failed alone for a while: 0.5, 1, 2 … s."""
        _, last = self._cooling.get(chat, (0.0, 0.25))
        wait = min(MAX_BACKOFF, last * 2)
        self._cooling[chat] = (asyncio.get_running_loop().time() + wait, wait)

    async def _read(self, row: _Leased) -> Incoming | None:
        request_id.set(row.request_id)  # this task's own context
        ring = keys()
        body = ring.open_json(row.sealed_body, "inbound_events.body")
        if JOB in body:
            # A job left by a turn: one that fails (the database, say) is tried again.
            address = ring.open(row.sealed_address, "inbound_events.address")
            return await self._dispatcher.run_job(row.channel, address, body)
        reader = self._readers.get(row.channel)
        if reader is None:
            log.warning("a stored %s update has no reader; skipped", row.channel)
            return None
        try:
            return await reader(body)
        except Exception as exc:
            if waits_out(exc):
                raise
            # An update that cannot be read must not hold up the ones after it.
            log.exception("a stored %s update could not be read; skipped", row.channel)
            return None

    async def _mark_handled(self, ids: list[int]) -> None:
        async def attempt() -> None:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    update(InboundEvent)
                    .where(InboundEvent.id.in_(ids))
                    .values(handled_at=utcnow(), lease_owner=None)
                    .execution_options(synchronize_session=False)
                )

        await write_retrying(attempt, busy_patience=STORE_LIMIT)

    async def _prune(self) -> None:
        now = utcnow()
        if self._pruned_at is not None and now - self._pruned_at < timedelta(hours=1):
            return
        self._pruned_at = now

        async def attempt() -> None:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    delete(InboundEvent).where(
                        InboundEvent.handled_at.is_not(None),
                        InboundEvent.received_at < now - KEEP,
                    )
                )

        await write_retrying(attempt, busy_patience=STORE_LIMIT)


@dataclass(frozen=True, slots=True)
class _ClaimSQL:
    """The claim's statements, built once (building costs more than running them)."""

    heads: Any
    alive: Any
    lease: Any
    lease_from_dead: Any
    release: Any

    def claim(
        self,
        conn: Connection,
        channels: list[str],
        skip: set[tuple[str, str]],
        me: str,
        after: datetime,
        take_over: bool,
    ) -> dict[tuple[str, str], list[_Leased]]:
        """Lease the waiting updates of up to CHATS chats whose oldest waiting update is
        free for this process (no one's, this process's, or a dead process's)."""
        found = list(conn.execute(self.heads, {"channels": channels}))
        if not found:
            return {}
        alive = set(conn.scalars(self.alive, {"after": after})) if take_over else set()
        chosen: dict[tuple[str, str], int] = {}
        for head, channel, chat_key, owner in found:
            chat = (channel, chat_key)
            if chat in skip:
                continue
            if owner is None or owner == me or (take_over and owner not in alive):
                chosen[chat] = head
                if len(chosen) >= CHATS:
                    break
        if not chosen:
            return {}
        by_channel: dict[str, list[str]] = {}
        for channel, chat_key in chosen:
            by_channel.setdefault(channel, []).append(chat_key)
        lease = self.lease_from_dead if take_over else self.lease
        got: dict[tuple[str, str], list[_Leased]] = {}
        for channel, chat_keys in by_channel.items():
            params = {"b_channel": channel, "b_ids": chat_keys, "b_me": me, "after": after}
            for row_id, ch, chat_key, address, body, rid in conn.execute(lease, params):
                leased = _Leased(row_id, ch, chat_key, address, body, rid)
                got.setdefault((ch, chat_key), []).append(leased)
        # A chat whose oldest update another process leased meanwhile is that process's:
        # hand back the newer ones this claim took.
        mine: dict[tuple[str, str], list[_Leased]] = {}
        lost: list[int] = []
        for chat, rows in got.items():
            rows.sort(key=lambda r: r.id)
            if rows[0].id == chosen.get(chat):
                mine[chat] = rows
            else:
                lost.extend(r.id for r in rows)
        if lost:
            conn.execute(self.release, {"b_ids": lost, "b_me": me})
        return mine


@cache
def _claim_statements(dialect: str) -> _ClaimSQL:
    e = cast(Table, InboundEvent.__table__).c
    waiting = e.handled_at.is_(None)
    heads = (
        select(e.id, e.channel, e.chat_key, e.lease_owner)
        .where(
            e.id.in_(
                select(func.min(e.id))
                .where(waiting, e.channel.in_(bindparam("channels", expanding=True)))
                .group_by(e.channel, e.chat_key)
            )
        )
        .order_by(e.id)
    )
    alive = select(ProcessBeat.id).where(ProcessBeat.seen_at > bindparam("after"))
    chats = (
        waiting,
        e.channel == bindparam("b_channel"),
        e.chat_key.in_(bindparam("b_ids", expanding=True)),
    )
    mine = or_(e.lease_owner.is_(None), e.lease_owner == bindparam("b_me"))
    returning = (
        e.id,
        e.channel,
        e.chat_key,
        type_coerce(e.address, String),
        type_coerce(e.body, String),
        e.request_id,
    )
    table = cast(Table, InboundEvent.__table__)

    def leasable(free: Any) -> Any:
        # Locked in id order, skipping rows another process is leasing this moment:
        # two processes leasing overlapping chats never wait on each other (no deadlock).
        # (SQLite has no row locks: its writers take turns.)
        return select(e.id).where(*chats, free).order_by(e.id).with_for_update(skip_locked=True)

    return _ClaimSQL(
        heads=heads,
        alive=alive,
        lease=update(table)
        .where(e.id.in_(leasable(mine)))
        .values(lease_owner=bindparam("b_me"))
        .returning(*returning),
        lease_from_dead=update(table)
        .where(e.id.in_(leasable(or_(mine, e.lease_owner.not_in(alive)))))
        .values(lease_owner=bindparam("b_me"))
        .returning(*returning),
        release=update(table)
        .where(e.id.in_(bindparam("b_ids", expanding=True)), e.lease_owner == bindparam("b_me"))
        .values(lease_owner=None),
    )


def _consume(future: asyncio.Future[Any]) -> None:
    """Read a late store's outcome, so that a failure is not reported as never retrieved."""
    if not future.cancelled():
        future.exception()
