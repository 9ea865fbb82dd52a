"""Versions of the reference data (see backend.services.reference): bumped in the
transaction that changes the data."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import ReferenceVersion, utcnow
from backend.services.upsert import dialect_insert

WARDS = "wards"
DEADLINES = "deadlines"


async def bump(session: AsyncSession, name: str, content: str | None = None) -> None:
    """Mark a kind of reference data as changed (in the caller's transaction), with its
    new content when the database keeps it."""
    insert = dialect_insert(session.get_bind().dialect.name, ReferenceVersion).values(
        name=name, version=1, content=content, changed_at=utcnow()
    )
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "version": ReferenceVersion.version + 1,
                "content": insert.excluded.content,
                "changed_at": insert.excluded.changed_at,
            },
        )
    )
