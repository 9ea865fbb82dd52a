"""Dialect-aware INSERT … ON CONFLICT, for idempotent imports and counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Base


def insert_for(session: AsyncSession, model: type[Base]) -> Any:
    """An INSERT construct for model that supports on_conflict_* on this session's backend."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"no upsert for {dialect}")


async def upsert(
    session: AsyncSession,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
) -> None:
    """Insert rows, or update every non-key column where the key exists."""
    if not rows:
        return
    stmt = insert_for(session, model)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=updates)
    await session.execute(stmt, list(rows))
