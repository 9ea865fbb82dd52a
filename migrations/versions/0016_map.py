"""The public map's index: the open cases by state, the recently answered ones by state
and the answer's time, with every column the map reads, over the tickets it may show.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As backend.models.MAP_INDEX, MAP_COLUMNS and MAP_WHERE were when this ran.
NAME = "ix_tickets_map"
COLUMNS = [
    "state",
    "answered_at",
    "lat",
    "lon",
    "category_code",
    "ward_code",
    "created_at",
    "code",
    "hidden_at",
    "case_id",
]
WHERE = "hidden_at IS NULL AND case_id IS NULL"


def upgrade() -> None:
    op.create_index(
        NAME,
        "tickets",
        COLUMNS,
        unique=False,
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index(NAME, table_name="tickets")
