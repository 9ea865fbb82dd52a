"""`hotline rotate-data-key`: every sealed value sealed again under the current data key.

It runs beside the service, in batches of its own short transactions. A value is
replaced only if it is still the one that was read (compare and set), so a value the
service changes meanwhile is never overwritten with an older one; it is sealed under the
current key anyway, by whoever wrote it. Killed at any point, a run leaves each value
under the old key or the new one, both readable, and the next run goes on from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Column, String, Table, and_, func, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.crypto import (
    LOOKUP_PURPOSE,
    LOOKUP_SECRET,
    Keyring,
    Sealed,
    sealed_id,
)
from backend.db import write_retrying
from backend.models import Base, InstanceSecret

BATCH = 500
LOOKUP_NAME = "look-up key"
# More tries for a batch that met a serialization failure or a lock timeout.
RETRIES = 5


@dataclass(frozen=True, slots=True)
class SealedColumn:
    table: Table
    column: Column[str]
    purpose: str

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"


def sealed_columns() -> Iterator[SealedColumn]:
    """Every column of the schema whose values are sealed."""
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, Sealed):
                yield SealedColumn(table, column, column.type.purpose)


async def rotate(
    engine: AsyncEngine,
    ring: Keyring,
    *,
    batch: int = BATCH,
    progress: Callable[[str, int], None] = lambda _name, _count: None,
) -> dict[str, int]:
    """Seal every value not under ring's current key again under it; {column: count}.

    A value under a key the ring does not know stops the run (DataKeyError, naming the
    column), before anything of that batch is written.
    """
    done: dict[str, int] = {}
    for col in sealed_columns():
        done[col.name] = await _rotate_column(engine, ring, col, batch, progress)
    secrets = cast(Table, InstanceSecret.__table__)
    secret = SealedColumn(secrets, secrets.c.value, LOOKUP_PURPOSE)
    # The look-up key last, once nothing else is left under an older key: until then a
    # process started with the new key alone is refused at start (backend.crypto.agree),
    # so none meets a value it cannot open.
    if set(await left(engine, ring)) <= {LOOKUP_NAME}:
        done[LOOKUP_NAME] = await _rotate_column(
            engine, ring, secret, batch, progress, only=secrets.c.name == LOOKUP_SECRET
        )
    return done


async def _rotate_column(
    engine: AsyncEngine,
    ring: Keyring,
    col: SealedColumn,
    batch: int,
    progress: Callable[[str, int], None],
    only: object = None,
) -> int:
    table = col.table
    (key,) = table.primary_key.columns
    raw = type_coerce(col.column, String)
    stale = and_(col.column.is_not(None), ~raw.startswith(f"{ring.current_id}."))
    if only is not None:
        stale = and_(stale, only)  # type: ignore[arg-type]
    count = 0
    after: object = None
    while True:
        query = select(key, raw).where(stale).order_by(key).limit(batch)
        if after is not None:
            # A value changed meanwhile by a process still sealing under the old key is
            # passed over here, and counted by left() at the end.
            query = query.where(key > after)

        async def attempt(query: Any = query) -> tuple[list[Any], int]:
            # Tried again whole when SQLite's write lock or a race gets in the way.
            async with engine.begin() as conn:
                rows = list((await conn.execute(query)).all())
                changed = 0
                for row_key, old in rows:
                    new = ring.seal(ring.open(str(old), col.purpose), col.purpose)
                    result = await conn.execute(
                        update(table)
                        .where(key == row_key, raw == old)
                        .values({col.column.name: type_coerce(new, String)})
                    )
                    changed += result.rowcount or 0
                return rows, changed

        rows, changed = await write_retrying(attempt, retries=RETRIES)
        if not rows:
            return count
        count += changed
        progress(col.name, count)
        after = rows[-1][0]
        if len(rows) < batch:
            return count


async def left(engine: AsyncEngine, ring: Keyring) -> dict[str, int]:
    """{column: how many values} not under ring's current key."""
    found: dict[str, int] = {}
    async with engine.connect() as conn:
        lookup = await conn.scalar(
            select(InstanceSecret.value).where(InstanceSecret.name == LOOKUP_SECRET)
        )
        if lookup is not None and sealed_id(lookup) != ring.current_id:
            found[LOOKUP_NAME] = 1
        for col in sealed_columns():
            raw = type_coerce(col.column, String)
            n = await conn.scalar(
                select(func.count()).where(
                    col.column.is_not(None), ~raw.startswith(f"{ring.current_id}.")
                )
            )
            if n:
                found[col.name] = int(n)
    return found
