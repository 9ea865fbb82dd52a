"""Runs updates through the dialogue with group commit: persist, then acknowledge.

One writer task per process takes every update that arrived while the previous batch
was committing and handles them all in one transaction. Each submitter is answered only
after its batch is committed, so "persist, then acknowledge" holds while the commit cost
is shared by the whole batch.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol, cast

from sqlalchemy import Insert, Select, Table, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from backend.crypto import keys
from backend.db import (
    InlineSQLiteDialect,
    is_retryable,
    limit_waits,
    sqlite_timestamp,
    write_retrying,
)
from backend.models import Conversation, InboundEvent, OutboxMessage, ProcessedUpdate, utcnow
from backend.services.abuse import takes_photo
from backend.services.quiet import Quiet
from backend.services.upsert import dialect_insert, upsert_statement
from bot.batching import Batches, Pending
from bot.spool import Stored
from handlers.core import DRAFT_PHOTO_STEPS
from handlers.core import step as dialogue_step
from handlers.events import (
    ERASE_AFTER_SEND,
    Ack,
    Capabilities,
    ConversationState,
    Incoming,
    Reply,
)
from handlers.i18n import pick_language, translate
from handlers.jobs import job_body, run_job
from handlers.turn import Services, Turn

log = logging.getLogger(__name__)

Key = tuple[str, str]

# How long a batch waits for SQLite's write lock before it counts as failed (seconds).
BUSY_PATIENCE = 30.0
# More tries in the process for a transaction that failed on a lock, a race or a
# serialization failure, before the update is left for a later attempt.
RETRIES = 3

_STATE_COLUMNS = ("channel", "chat_key", "state", "data", "language", "reporter_id", "updated_at")


@dataclass(frozen=True, slots=True)
class _Statements:
    """The hot path's statements: Core on the tables, built once and reused.

    Building and cache-keying a statement, or going through the ORM, costs more than
    executing it on SQLite, so each batch only binds values to these. load() and save()
    run on the sync connection, each in one hop from the event loop.
    """

    claim: Any
    states: Select[Any]
    save_states: Any
    outbox: Insert
    handled: Any
    store_rows: Any
    heads: Any
    # PostgreSQL: a new chat's row made before it is locked, so that two processes
    # starting the same chat take turns on it (a lock needs a row).
    placeholder: Any | None

    def store(self, conn: Connection, items: Sequence[Stored], now: datetime) -> dict[Key, int]:
        rows = conn.execute(self.store_rows, [_stored_row(i, now) for i in items])
        return {(str(c), str(k)): int(i) for i, c, k in rows}

    def waiting_heads(self, conn: Connection, chats: Mapping[str, list[str]]) -> dict[Key, int]:
        heads: dict[Key, int] = {}
        for channel, chat_ids in chats.items():
            named = _chat_keys(channel, chat_ids)
            for chat_key, head in conn.execute(
                self.heads, {"b_channel": channel, "ids": list(named)}
            ):
                heads[(channel, named[chat_key])] = int(head)
        return heads

    def load(self, conn: Connection, events: Sequence[Incoming], now: datetime) -> _Loaded:
        """Record the batch's updates as handled, and load the chats of the new ones.

        The record is an INSERT … ON CONFLICT DO NOTHING: the rows it returns are the
        updates not seen before (another process handling the same update waits for it
        and then skips it). The whole batch is one transaction, so a failure forgets it.
        """
        updates = {(e.channel, e.update_id) for e in events}
        claimed = conn.execute(
            self.claim,
            [{"channel": c, "update_id": u, "processed_at": now} for c, u in updates],
        )
        loaded = _Loaded(fresh={(c, u) for c, u in claimed})
        to_load = loaded.chats_to_load(events)
        if self.placeholder is not None and to_load:
            languages = {(e.channel, e.chat_id): pick_language(e.language) for e in events}
            ring = keys()
            conn.execute(
                self.placeholder,
                [
                    {
                        "channel": channel,
                        "chat_key": ring.chat_key(channel, chat_id),
                        "state": "idle",
                        "data": {},
                        "language": languages[(channel, chat_id)],
                        "updated_at": now,
                    }
                    # In one order everywhere, so that two batches never wait on each other.
                    for channel, chat_ids in sorted(to_load)
                    for chat_id in sorted(chat_ids)
                ],
            )
        day_ago = now - SEEN_EVERY
        for channel, chat_ids in to_load:
            named = _chat_keys(channel, chat_ids)
            rows = conn.execute(
                self.states, {"channel": channel, "ids": list(named), "day_ago": day_ago}
            )
            for chat_key, state, language, data, reporter_id, stale in rows:
                loaded.add(channel, named[chat_key], state, language, data, reporter_id, stale)
        return loaded

    def save(
        self,
        conn: Connection,
        conversations: list[dict[str, Any]],
        outbox: list[dict[str, Any]],
        handled: list[int],
        now: datetime,
    ) -> None:
        if conversations:
            conn.execute(self.save_states, conversations)
        if outbox:
            conn.execute(self.outbox, outbox)
        if handled:
            conn.execute(self.handled, {"ids": handled, "now": now})


# A chat's state is stored again when a message comes and it was last stored longer ago
# than this, though nothing changed: its `updated_at` dates the chat's last sign of life
# (the retention pass reads it) at this cost, at most one write a chat a day.
SEEN_EVERY = timedelta(days=1)


class _SQLiteStatements:
    """The same work in plain sqlite3 calls on the chat writer's own SQLite connection.

    Through SQLAlchemy each of these statements costs about 0.1 ms of Python besides
    the SQL; here the whole batch is a handful of sqlite3 calls (bench/intake.py). The
    values are stored exactly as SQLAlchemy stores them (see sqlite_timestamp).
    """

    _CLAIM = (
        "INSERT INTO processed_updates (channel, update_id, processed_at) VALUES {} "
        "ON CONFLICT DO NOTHING RETURNING channel, update_id"
    )
    _STATES = (
        "SELECT chat_key, state, language, data, reporter_id, updated_at < ? FROM conversations "
        "WHERE channel = ? AND chat_key IN ({})"
    )
    _SAVE_STATE = (
        "INSERT INTO conversations (channel, chat_key, state, data, language, reporter_id,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel, chat_key) DO UPDATE"
        " SET state = excluded.state, data = excluded.data, language = excluded.language,"
        " reporter_id = excluded.reporter_id, updated_at = excluded.updated_at"
    )
    _OUTBOX = (
        "INSERT INTO outbox (channel, chat_key, address, payload, status, attempts, created_at,"
        " next_attempt_at, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    _HANDLED = "UPDATE inbound_events SET handled_at = ?, lease_owner = NULL WHERE id IN ({})"
    _STORE = (
        "INSERT INTO inbound_events (channel, event_key, chat_key, address, body, received_at,"
        " request_id) VALUES {} ON CONFLICT DO NOTHING RETURNING id, channel, event_key"
    )
    _HEADS = (
        "SELECT chat_key, min(id) FROM inbound_events WHERE handled_at IS NULL AND channel = ?"
        " AND chat_key IN ({}) GROUP BY chat_key"
    )

    def store(self, conn: Connection, items: Sequence[Stored], now: datetime) -> dict[Key, int]:
        stamp = sqlite_timestamp(now)
        ring = keys()
        rows = self._raw(conn).execute(
            self._STORE.format(", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(items))),
            [
                v
                for i in items
                for v in (
                    i.channel,
                    i.key,
                    ring.chat_key(i.channel, i.chat_id),
                    ring.seal(i.chat_id, "inbound_events.address"),
                    ring.seal_json(i.body, "inbound_events.body"),
                    stamp,
                    i.request_id,
                )
            ],
        )
        return {(str(c), str(k)): int(i) for i, c, k in rows}

    def waiting_heads(self, conn: Connection, chats: Mapping[str, list[str]]) -> dict[Key, int]:
        raw = self._raw(conn)
        heads: dict[Key, int] = {}
        for channel, chat_ids in chats.items():
            named = _chat_keys(channel, chat_ids)
            rows = raw.execute(self._HEADS.format(", ".join("?" * len(named))), [channel, *named])
            for chat_key, head in rows:
                heads[(channel, named[chat_key])] = int(head)
        return heads

    @staticmethod
    def _raw(conn: Connection) -> sqlite3.Connection:
        raw = conn.connection.driver_connection
        if not isinstance(raw, sqlite3.Connection):
            raise TypeError("the SQLite fast path needs the inline writer connection")
        return raw

    def load(self, conn: Connection, events: Sequence[Incoming], now: datetime) -> _Loaded:
        raw = self._raw(conn)
        updates = list({(e.channel, e.update_id) for e in events})
        stamp = sqlite_timestamp(now)
        claimed = raw.execute(
            self._CLAIM.format(", ".join(["(?, ?, ?)"] * len(updates))),
            [v for channel, update_id in updates for v in (channel, update_id, stamp)],
        ).fetchall()
        loaded = _Loaded(fresh={(str(c), str(u)) for c, u in claimed})
        ring = keys()
        for channel, chat_ids in loaded.chats_to_load(events):
            named = _chat_keys(channel, chat_ids)
            rows = raw.execute(
                self._STATES.format(", ".join("?" * len(named))),
                [sqlite_timestamp(now - SEEN_EVERY), channel, *named],
            )
            for chat_key, state, language, data, reporter_id, stale in rows:
                opened = ring.open_json(data, "conversations.data") if data else {}
                loaded.add(channel, named[chat_key], state, language, opened, reporter_id, stale)
        return loaded

    def save(
        self,
        conn: Connection,
        conversations: list[dict[str, Any]],
        outbox: list[dict[str, Any]],
        handled: list[int],
        now: datetime,
    ) -> None:
        raw = self._raw(conn)
        ring = keys()
        if handled:
            raw.execute(
                self._HANDLED.format(", ".join("?" * len(handled))),
                [sqlite_timestamp(now), *handled],
            )
        if conversations:
            raw.executemany(
                self._SAVE_STATE,
                [
                    (
                        c["channel"],
                        c["chat_key"],
                        c["state"],
                        ring.seal_json(c["data"], "conversations.data"),
                        c["language"],
                        c["reporter_id"],
                        sqlite_timestamp(c["updated_at"]),
                    )
                    for c in conversations
                ],
            )
        if outbox:
            raw.executemany(
                self._OUTBOX,
                [
                    (
                        o["channel"],
                        o["chat_key"],
                        ring.seal(o["address"], "outbox.address"),
                        ring.seal_json(o["payload"], "outbox.payload"),
                        o["status"],
                        o["attempts"],
                        sqlite_timestamp(o["created_at"]),
                        sqlite_timestamp(o["next_attempt_at"]),
                        o["request_id"],
                    )
                    for o in outbox
                ],
            )


@dataclass(slots=True)
class _Loaded:
    fresh: set[tuple[str, str]]
    states: dict[tuple[str, str], ConversationState] = field(default_factory=dict)
    # The stored state of each chat, to write back only those that changed.
    before: dict[tuple[str, str], tuple[str, str, Any, int | None]] = field(default_factory=dict)
    stale: set[tuple[str, str]] = field(default_factory=set)

    def chats_to_load(self, events: Sequence[Incoming]) -> list[tuple[str, list[str]]]:
        """(channel, chat ids) of the new updates: one lookup per channel (a batch rarely
        has more than one); `channel = ? AND id IN (…)` searches the unique index, where
        a row-value IN makes SQLite scan."""
        return [
            (channel, chat_ids)
            for channel, group in _by_channel(events).items()
            if (
                chat_ids := list({e.chat_id for e in group if (channel, e.update_id) in self.fresh})
            )
        ]

    def add(
        self,
        channel: str,
        chat_id: str,
        state: str,
        language: str,
        data: dict[str, Any],
        reporter_id: int | None,
        stale: object = False,
    ) -> None:
        """A stored chat state: one copy for the dialogue to change, one to compare with.
        stale: last stored more than SEEN_EVERY ago (it is stored again, to date the
        chat's last sign of life for the retention pass)."""
        self.states[(channel, chat_id)] = ConversationState(
            state=state, language=language, data=data, reporter_id=reporter_id
        )
        self.before[(channel, chat_id)] = (state, language, copy.deepcopy(data), reporter_id)
        if stale:
            self.stale.add((channel, chat_id))

    def changed(self, chat: tuple[str, str], st: ConversationState) -> bool:
        return chat in self.stale or self.before.get(chat) != (
            st.state,
            st.language,
            st.data,
            st.reporter_id,
        )


def _chat_keys(channel: str, chat_ids: Sequence[str]) -> dict[str, str]:
    """{stored look-up: chat id} of a channel's chats."""
    ring = keys()
    return {ring.chat_key(channel, chat_id): chat_id for chat_id in chat_ids}


def _stored_row(item: Stored, now: datetime) -> dict[str, Any]:
    return {
        "channel": item.channel,
        "event_key": item.key,
        "chat_key": keys().chat_key(item.channel, item.chat_id),
        "address": item.chat_id,
        "body": item.body,
        "received_at": now,
        "request_id": item.request_id,
    }


def _by_channel(events: Sequence[Incoming]) -> dict[str, list[Incoming]]:
    groups: dict[str, list[Incoming]] = {}
    for event in events:
        groups.setdefault(event.channel, []).append(event)
    return groups


class _BatchSQL(Protocol):
    def store(self, conn: Connection, items: Sequence[Stored], now: datetime) -> dict[Key, int]:
        """Insert the updates not stored before: {(channel, key): id} of those."""
        ...

    def waiting_heads(self, conn: Connection, chats: Mapping[str, list[str]]) -> dict[Key, int]:
        """The oldest waiting update of each chat ({channel: chat ids})."""
        ...

    def load(self, conn: Connection, events: Sequence[Incoming], now: datetime) -> _Loaded: ...

    def save(
        self,
        conn: Connection,
        conversations: list[dict[str, Any]],
        outbox: list[dict[str, Any]],
        handled: list[int],
        now: datetime,
    ) -> None: ...


@cache
def _statements(dialect: str, driver: str = "") -> _BatchSQL:
    if dialect == "sqlite" and driver == InlineSQLiteDialect.driver:
        return _SQLiteStatements()
    processed = cast(Table, ProcessedUpdate.__table__)
    conversations = cast(Table, Conversation.__table__)
    inbound = cast(Table, InboundEvent.__table__)
    e = inbound.c
    c = conversations.c
    states = select(
        c.chat_key,
        c.state,
        c.language,
        c.data,
        c.reporter_id,
        (c.updated_at < bindparam("day_ago")).label("stale"),
    ).where(c.channel == bindparam("channel"), c.chat_key.in_(bindparam("ids", expanding=True)))
    if dialect == "postgresql":
        # Another process may be answering the same chat: take turns per chat.
        states = states.with_for_update()
    claim = (
        dialect_insert(dialect, processed)
        .on_conflict_do_nothing(index_elements=["channel", "update_id"])
        .returning(processed.c.channel, processed.c.update_id)
    )
    return _Statements(
        claim=claim,
        states=states,
        save_states=upsert_statement(
            dialect, conversations, _STATE_COLUMNS, ("channel", "chat_key")
        ),
        outbox=insert(cast(Table, OutboxMessage.__table__)),
        handled=update(inbound)
        .where(inbound.c.id.in_(bindparam("ids", expanding=True)))
        .values(handled_at=bindparam("now"), lease_owner=None),
        store_rows=dialect_insert(dialect, inbound)
        .on_conflict_do_nothing(index_elements=["channel", "event_key"])
        .returning(e.id, e.channel, e.event_key),
        heads=select(e.chat_key, func.min(e.id))
        .where(
            e.handled_at.is_(None),
            e.channel == bindparam("b_channel"),
            e.chat_key.in_(bindparam("ids", expanding=True)),
        )
        .group_by(e.chat_key),
        placeholder=dialect_insert(dialect, conversations).on_conflict_do_nothing(
            index_elements=["channel", "chat_key"]
        )
        if dialect == "postgresql"
        else None,
    )


StepFn = Callable[[Turn, Incoming], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Item:
    # What the dialogue takes; None for an update only to store (its photo is fetched
    # first, by the inbox's worker).
    event: Incoming | None
    # The stored inbound event it was read from, marked handled in the same transaction.
    inbound_id: int | None
    # An update to store in the same transaction, handled there too when its chat has
    # nothing older waiting.
    stored: Stored | None = None
    # The request that brought the update: its replies carry it (see backend.logs).
    request_id: str | None = None


class Dispatcher:
    """Idempotent, transactional handling of chat updates, in arrival order."""

    def __init__(
        self,
        engine: AsyncEngine,
        services: Services,
        capabilities: Mapping[str, Capabilities],
        *,
        on_commit: Callable[[], None] = lambda: None,
        on_waiting: Callable[[], None] = lambda: None,
        step: StepFn = dialogue_step,
        max_batch: int = 256,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._services = services
        self._capabilities = capabilities
        self._on_commit = on_commit
        self.on_waiting = on_waiting
        self._step = step
        self._batches: Batches[_Item] = Batches("dispatcher", self._process, max_batch)
        self._quiet = Quiet("dispatcher")
        self.batches = 0

    @property
    def channels(self) -> list[str]:
        """The channels whose updates this dispatcher handles."""
        return list(self._capabilities)

    def submit(
        self, event: Incoming, inbound_id: int | None = None, request_id: str | None = None
    ) -> asyncio.Future[None]:
        """Queue an event; the future resolves once its outcome is committed, and fails
        when the database did not take it (the event is then not handled: try again)."""
        return self._batches.submit(_Item(event, inbound_id, request_id=request_id))

    async def takes_photo(self, channel: str, chat_id: str) -> bool:
        """Whether a photo from this chat can be taken now, asked before it is downloaded
        (see backend.services.abuse.takes_photo)."""
        services = self._services
        async with self._sessions() as session:
            return await takes_photo(
                session, channel, chat_id, services.limits, services.now(), DRAFT_PHOTO_STEPS
            )

    def submit_stored(self, stored: Stored, ready: Incoming | None) -> asyncio.Future[None]:
        """Store an update, and handle it in the same transaction when it is ready (read
        without fetching anything) and its chat has no older update waiting; otherwise
        it waits for the inbox's worker. The future resolves once it is stored."""
        return self._batches.submit(_Item(ready, None, stored, stored.request_id))

    async def run_job(self, channel: str, chat_id: str, body: Mapping[str, Any]) -> Incoming:
        """Do a job a turn stored (see handlers.turn.Job): its outcome, to submit."""
        return await run_job(self._services, channel, chat_id, body)

    async def handle(self, event: Incoming) -> None:
        await self.submit(event)

    def start(self) -> None:
        self._batches.start()

    async def stop(self) -> None:
        await self._batches.stop()

    async def _process(self, batch: Sequence[Pending[_Item]]) -> None:
        items = [p.item for p in batch]
        waiting = False
        try:
            waiting = await self._commit(items)
            self._quiet.recovered()
        except Exception as exc:
            if len(batch) > 1:
                # One bad update must not sink its neighbours: try them one by one.
                log.warning("batch of %d failed; trying updates one by one", len(batch))
                for p in batch:
                    try:
                        waiting = await self._commit([p.item]) or waiting
                    except Exception as one:
                        waiting = await self._settle_failure(p, one) or waiting
            else:
                waiting = await self._settle_failure(batch[0], exc)
        self.batches += 1
        for p in batch:
            if not p.done.done():
                p.done.set_result(None)
        self._on_commit()
        if waiting:
            self.on_waiting()

    async def _settle_failure(self, pending: Pending[_Item], exc: Exception) -> bool:
        """A failure the database may not meet again (a lock, a race, an outage) fails
        the submitter, who tries again later; nothing is marked done. Any other failure
        is the update's own: it is recorded as handled, with an apology to the resident.
        An update to store is then stored alone, for the worker to try; returns whether
        one was (it waits)."""
        stored = pending.item.stored
        if stored is not None and not is_retryable(exc):
            try:
                await self.store_rows([stored])
                pending.done.set_result(None)
            except Exception as failed:
                pending.done.set_exception(failed)
                return False
            return True
        if is_retryable(exc) or pending.item.event is None:
            self._quiet.failed(exc, "could not commit an update; it will be tried again")
            pending.done.set_exception(exc)
            return False
        event = pending.item.event
        log.error(
            "update %s/%s could not be handled; state unchanged",
            event.channel,
            event.update_id,
            exc_info=exc,
        )
        try:
            await self._commit_failure(pending.item)
        except Exception as failed:
            pending.done.set_exception(failed)
        return False

    async def store_rows(self, items: Sequence[Stored]) -> None:
        """Store updates (each once) for the inbox's worker, in one transaction."""
        if not items:
            return

        async def attempt() -> None:
            async with self._engine.begin() as conn:
                await limit_waits(conn)
                sql = _statements(conn.dialect.name, conn.dialect.driver)
                await conn.run_sync(sql.store, items, utcnow())

        await write_retrying(attempt, busy_patience=BUSY_PATIENCE, retries=RETRIES)

    async def _commit(self, items: Sequence[_Item]) -> bool:
        """Run the batch in one transaction; returns whether it left updates waiting for
        the inbox's worker. SQLite's write lock held by another connection is waited for
        (BUSY_PATIENCE); other failures worth another try (a deadlock, a serialization
        failure, a race on a new key, a lock timeout) are tried RETRIES more times."""

        async def attempt() -> bool:
            async with self._engine.begin() as conn:
                await limit_waits(conn)
                # The dialogue's services get a session on the same transaction.
                session = AsyncSession(bind=conn, expire_on_commit=False)
                try:
                    return await self._apply(conn, session, items)
                finally:
                    await session.close()

        return await write_retrying(attempt, busy_patience=BUSY_PATIENCE, retries=RETRIES)

    async def _apply(
        self, conn: AsyncConnection, session: AsyncSession, items: Sequence[_Item]
    ) -> bool:
        """The batch's work in its transaction; returns whether updates were left waiting
        for the inbox's worker (stored ones not ready, or jobs)."""
        # A handful of statements per batch, whatever its size: each round trip to the
        # database costs more than the dialogue logic of one update.
        sql = _statements(conn.dialect.name, conn.dialect.driver)
        now = utcnow()
        runnable, waiting = await self._store(conn, sql, items, now)
        events = [
            (item.event, item.request_id, item.inbound_id)
            for item in runnable
            if item.event is not None
        ]
        handled = [item.inbound_id for item in runnable if item.inbound_id is not None]
        if not events:
            return waiting
        loaded = await conn.run_sync(sql.load, [e for e, _, _ in events], now)
        states = loaded.states
        touched: dict[tuple[str, str], ConversationState] = {}
        outbox: list[dict[str, Any]] = []
        jobs: list[Stored] = []
        ring = keys()
        for event, request_id, inbound_id in events:
            key = (event.channel, event.update_id)
            if key not in loaded.fresh:
                continue  # handled before, or twice in this batch
            loaded.fresh.discard(key)
            chat = (event.channel, event.chat_id)
            state = states.get(chat) or ConversationState(
                state="idle", language=pick_language(event.language)
            )
            turn = Turn(
                session=session,
                conv=state,
                caps=self._capabilities.get(event.channel, Capabilities()),
                services=self._services,
                channel=event.channel,
                chat_id=event.chat_id,
                update_id=event.update_id,
            )
            await self._step(turn, event)
            await turn.drop_hidden_pages()
            for job in turn.jobs:
                job_key = f"{event.update_id}:{job.kind}"
                body = job_body(job.kind, job_key, job.args)
                jobs.append(Stored(event.channel, job_key, event.chat_id, body, request_id))
            states[chat] = state
            if turn.erased:
                # Forgotten: the chat's state is not stored again (should it write again,
                # later in this batch too, it is a new contact).
                touched.pop(chat, None)
            else:
                touched[chat] = state
            outbox.extend(
                {
                    "channel": event.channel,
                    "chat_key": ring.chat_key(event.channel, event.chat_id),
                    "address": event.chat_id,
                    "payload": reply.to_payload(),
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                    "request_id": request_id,
                }
                for reply in turn.out
            )
            if turn.erased:
                # Every reply to the chat so far in this batch, this turn's and earlier
                # turns': once out, neither its text nor the chat is kept, nor the chat's
                # updates up to this one.
                through = {"update": inbound_id, "at": now.isoformat()}
                for row in outbox:
                    if (row["channel"], row["address"]) == chat:
                        row["payload"][ERASE_AFTER_SEND] = through
        conversations = [
            {
                "channel": channel,
                "chat_key": ring.chat_key(channel, chat_id),
                "state": st.state,
                "data": st.data,
                "language": st.language,
                "reporter_id": st.reporter_id,
                "updated_at": now,
            }
            for (channel, chat_id), st in touched.items()
            if loaded.changed((channel, chat_id), st)
        ]
        # The dialogue's ORM work goes first: outbox rows may refer to what it created.
        await session.flush()
        await conn.run_sync(sql.save, conversations, outbox, handled, now)
        if jobs:
            await conn.run_sync(sql.store, jobs, now)
        return waiting or bool(jobs)

    async def _store(
        self, conn: AsyncConnection, sql: _BatchSQL, items: Sequence[_Item], now: datetime
    ) -> tuple[list[_Item], bool]:
        """Store the batch's updates to store; return what to handle now: the events
        submitted as such, and the stored updates that are ready and first in their chat
        (each chat's, in order, up to the first that is not ready); and whether any
        stored update was left waiting for the worker."""
        to_store = [item for item in items if item.stored is not None]
        if not to_store:
            return list(items), False
        ids = await conn.run_sync(sql.store, [i.stored for i in to_store if i.stored], now)
        new: dict[Key, list[tuple[int, _Item]]] = {}
        for item in to_store:
            assert item.stored is not None  # noqa: S101 - filtered above
            row_id = ids.pop((item.stored.channel, item.stored.key), None)
            if row_id is not None:
                chat = (item.stored.channel, item.stored.chat_id)
                new.setdefault(chat, []).append((row_id, item))
        chats: dict[str, list[str]] = {}
        for channel, chat_id in new:
            chats.setdefault(channel, []).append(chat_id)
        heads = await conn.run_sync(sql.waiting_heads, chats) if chats else {}
        now_ready: dict[int, _Item] = {}
        for chat, rows in new.items():
            rows.sort(key=lambda r: r[0])
            if rows[0][0] != heads.get(chat):
                continue  # older updates of this chat wait: the worker takes it
            for row_id, item in rows:
                if item.event is None:
                    break
                now_ready[id(item)] = _Item(item.event, row_id, request_id=item.request_id)
        waiting = len(now_ready) < sum(len(rows) for rows in new.values())
        runnable = [
            now_ready[id(item)] if item.stored is not None else item
            for item in items
            if item.stored is None or id(item) in now_ready
        ]
        return runnable, waiting

    async def _commit_failure(self, item: _Item) -> None:
        """Record an update that cannot be handled, and say so, leaving the state as it was."""
        event = item.event
        if event is None:
            return
        async with self._sessions() as session, session.begin():
            if item.inbound_id is not None:
                await session.execute(
                    update(InboundEvent)
                    .where(InboundEvent.id == item.inbound_id)
                    .values(handled_at=utcnow(), lease_owner=None)
                    .execution_options(synchronize_session=False)
                )
            exists = await session.get(ProcessedUpdate, (event.channel, event.update_id))
            if exists is not None:
                return
            # The language alone: the draft need not open for the apology to go out.
            stored_language = await session.scalar(
                select(Conversation.language).where(
                    Conversation.channel == event.channel,
                    Conversation.chat_key == keys().chat_key(event.channel, event.chat_id),
                )
            )
            language = stored_language or pick_language(event.language)
            replies: list[Ack | Reply] = []
            if event.callback_id is not None:
                replies.append(Ack(event.callback_id))
            replies.append(Reply(text=translate(language, "error.internal")))
            session.add_all(
                OutboxMessage.to(event.channel, event.chat_id, r.to_payload()) for r in replies
            )
            session.add(ProcessedUpdate(channel=event.channel, update_id=event.update_id))
