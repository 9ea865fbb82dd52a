"""Engines and session factories; SQLite gets WAL and foreign keys."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import event, inspect, pool, text
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from backend.config import Settings
from backend.crypto import Keyring, agree, install

log = logging.getLogger(__name__)

WRITER_DRIVER = "sqlite+inline"


class _InlineCursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:
        """SQLAlchemy's asyncio results call this; rows are read on this thread anyway."""


class _InlineConnection(sqlite3.Connection):
    def cursor(self, factory: Any = _InlineCursor) -> Any:
        return super().cursor(factory)


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    """SQLite called on the event loop's own thread, for the chat writer only.

    A statement on a local SQLite file takes microseconds; handing it to a worker thread
    (what aiosqlite does, several times per statement) costs a hundred times more and
    waits for the GIL under load. The writer takes the write lock without waiting
    (busy_timeout 0, `BEGIN IMMEDIATE`), so it never blocks the loop on another
    connection: on SQLITE_BUSY it backs off with an await and tries again.
    """

    driver = "inline"
    is_async = True
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool


registry.register("sqlite.inline", __name__, "InlineSQLiteDialect")


def sqlite_timestamp(value: datetime) -> str:
    """A timestamp as SQLAlchemy stores it in SQLite: naive UTC text, microseconds."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def is_busy(exc: BaseException) -> bool:
    """Whether exc is SQLite refusing a lock that another connection holds."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig)


# PostgreSQL's SQLSTATEs for a transaction that may well work if run again: serialization
# failure, deadlock, a lock or statement timeout, and the server going away.
_RETRY_STATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"})


def is_retryable(exc: BaseException) -> bool:
    """Whether exc is a failure of the database, or of a race between processes, that a
    later attempt may not meet: never a mistake in what was asked of it."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, OperationalError | IntegrityError):
        # IntegrityError: another process inserted the same key first.
        return True
    for orig in (exc.orig, exc.orig.__cause__ if exc.orig is not None else None):
        if getattr(orig, "sqlstate", None) in _RETRY_STATES or isinstance(orig, OSError):
            return True
    return False


T = TypeVar("T")


async def write_retrying(
    attempt: Callable[[], Awaitable[T]], *, busy_patience: float = 30.0, retries: int = 0
) -> T:
    """Run a write transaction (attempt), again while SQLite's write lock is held by
    another connection (for up to busy_patience seconds, without blocking the loop), and
    up to `retries` more times after a failure that may pass (is_retryable)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + busy_patience
    delay = 0.001
    while True:
        try:
            return await attempt()
        except DBAPIError as exc:
            if is_busy(exc):
                if loop.time() > give_up:
                    raise
            elif is_retryable(exc) and retries > 0 and not exc.connection_invalidated:
                retries -= 1
                delay = max(delay, 0.05)
            else:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _sqlite_pragmas(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
        cur.close()


def create_engine(
    url: str, *, pgbouncer: bool = False, intake_timeouts: tuple[int, int] = (2000, 10_000)
) -> AsyncEngine:
    """An async engine for the URL, with the SQLite pragmas this app relies on.

    PostgreSQL: behind PgBouncer in transaction mode (pgbouncer), a server connection
    serves another client after each transaction, so no statement is prepared for
    later (asyncpg's cache and SQLAlchemy's are off). intake_timeouts: the lock and
    statement timeouts (ms) that limit_waits() sets on the intake path's transactions.
    """
    # A statement's parameters (an identity, before it is sealed) never go into the
    # text of an error, and so never into a log.
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        _sqlite_pragmas(engine, 30_000)
        return engine
    connect_args: dict[str, Any] = {}
    if pgbouncer:
        connect_args = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    engine = create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        connect_args=connect_args,
        hide_parameters=True,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _remember_timeouts(_dbapi_conn: Any, record: Any) -> None:
        record.info[_INTAKE_TIMEOUTS] = intake_timeouts

    return engine


def engine_for(settings: Settings) -> AsyncEngine:
    """The configured database's engine."""
    return create_engine(
        settings.database_url,
        pgbouncer=settings.database_pgbouncer,
        intake_timeouts=(
            settings.database_lock_timeout_ms,
            settings.database_statement_timeout_ms,
        ),
    )


_INTAKE_TIMEOUTS = "hotline_intake_timeouts"
# Transaction-local (the third argument), so it holds behind PgBouncer too.
_SET_TIMEOUTS = text(
    "SELECT set_config('lock_timeout', :lock, true), "
    "set_config('statement_timeout', :statement, true)"
)


async def limit_waits(conn: AsyncConnection) -> None:
    """On PostgreSQL, bound how long this transaction waits for a lock and runs one
    statement (the intake path): a lock held elsewhere then gives a fast failure, and
    the platform sends the update again, rather than a stalled webhook."""
    limits = conn.info.get(_INTAKE_TIMEOUTS)
    if limits is not None:
        lock, statement = limits
        await conn.execute(_SET_TIMEOUTS, {"lock": str(lock), "statement": str(statement)})


def create_writer_engine(url: str) -> AsyncEngine | None:
    """The chat writer's own engine on SQLite (see InlineSQLiteDialect); None elsewhere.

    PostgreSQL's driver already runs on the event loop, so the writer shares the app's
    engine there.
    """
    if not is_sqlite(url):
        return None
    inline = URL.create(WRITER_DRIVER, database=make_url(url).database)
    engine = create_async_engine(
        inline,
        connect_args={"timeout": 0, "factory": _InlineConnection},
        # One connection, taken in turns (awaited, not busy-polled): its users are the
        # process's own writers, which would only make each other wait for the lock.
        pool_size=1,
        max_overflow=0,
        hide_parameters=True,
    )
    _sqlite_pragmas(engine, 0)

    @event.listens_for(engine.sync_engine, "connect")
    def _manual_transactions(dbapi_conn: Any, _record: Any) -> None:
        # The sqlite3 module would open a deferred transaction on the first write; the
        # writer wants the write lock up front, so that no later statement can be busy.
        dbapi_conn.isolation_level = None
        # A checkpoint copies the WAL into the database inside some commit: not inside
        # the writer's, which would hold up the loop. See checkpoint_forever().
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def checkpoint_forever(engine: AsyncEngine, interval: float = 0.5) -> None:
    """Copy the SQLite WAL into the database every interval, off the event loop.

    The chat writer does not checkpoint (it runs on the loop); this does, on the app's
    threaded engine. PASSIVE never waits for readers or the writer.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except DBAPIError as exc:
            log.warning("WAL checkpoint failed: %s", exc.orig)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def open_keys(engine: AsyncEngine, settings: Settings) -> Keyring:
    """Load the data keys, check them against the database, and install them for this
    process (raises DataKeyError, with what to do, when they do not fit)."""
    ring = settings.keyring()
    async with engine.begin() as conn:
        await conn.run_sync(agree, ring)
    install(ring)
    return ring


# The tables that held identities in the clear before they were sealed (a Zalo follow's
# key named its user in processed_updates).
SEALED_TABLES = (
    "reporter_identities",
    "conversations",
    "inbound_events",
    "outbox",
    "photos",
    "processed_updates",
)


async def schema_revision(settings: Settings) -> str | None:
    """The database's migration revision; None before the first migration."""
    engine = engine_for(settings)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_revision)
    finally:
        await engine.dispose()


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    found = conn.scalar(text("SELECT version_num FROM alembic_version"))
    return None if found is None else str(found)


async def compact_sealed_tables(settings: Settings) -> None:
    """Rewrite the sealed tables whole: PostgreSQL keeps a dropped column's values and an
    updated row's old version in the table's files until then, and SQLite its freed
    pages (zeroed here)."""
    engine = engine_for(settings)
    try:
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if is_sqlite(settings.database_url):
                await auto.execute(text("PRAGMA secure_delete = ON"))
                await auto.execute(text("VACUUM"))
                await auto.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            else:
                await auto.execute(text(f"VACUUM FULL {', '.join(SEALED_TABLES)}"))
    finally:
        await engine.dispose()
