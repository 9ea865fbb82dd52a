"""Dialect-aware INSERT … ON CONFLICT, for idempotent imports and counters."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Base


def dialect_insert(dialect: str, target: type[Base] | Table) -> Any:
    """An INSERT construct for target that supports on_conflict_* on the named backend."""
    if dialect == "postgresql":
        return postgresql.insert(target)
    if dialect == "sqlite":
        return sqlite.insert(target)
    raise NotImplementedError(f"no upsert for {dialect}")


def insert_for(session: AsyncSession, target: type[Base] | Table) -> Any:
    """An INSERT construct for target that supports on_conflict_* on this session's backend."""
    return dialect_insert(session.get_bind().dialect.name, target)


@cache
def upsert_statement(
    dialect: str, table: Table, columns: tuple[str, ...], keys: tuple[str, ...]
) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE of the other columns, built once per shape.

    Kept and reused: SQLAlchemy then skips building and cache-keying the statement, which
    costs more than executing it on a hot path.
    """
    stmt = dialect_insert(dialect, table)
    updates = {c: stmt.excluded[c] for c in columns if c not in keys}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=updates)


async def upsert(
    session: AsyncSession,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
) -> None:
    """Insert rows, or update every non-key column where the key exists.

    Runs as one Core executemany on the table: the ORM's bulk path costs far more per row.
    """
    if not rows:
        return
    stmt = upsert_statement(
        session.get_bind().dialect.name,
        cast(Table, model.__table__),
        tuple(rows[0]),
        tuple(keys),
    )
    await session.execute(stmt, list(rows))
