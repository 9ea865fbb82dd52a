"""The public map's indexes: the open cases by state and the recently answered ones by the
answer's time, each holding every column the map reads, over the tickets it may show.

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

# As backend.models.MAP_COLUMNS and MAP_WHERE were when this ran.
COLUMNS = ["state", "lat", "lon", "category_code", "ward_code", "created_at", "code"]
WHERE = "hidden_at IS NULL AND case_id IS NULL"


def upgrade() -> None:
    for name, columns in (
        ("ix_tickets_map_open", COLUMNS),
        ("ix_tickets_map_answered", ["answered_at", *COLUMNS]),
    ):
        op.create_index(
            name,
            "tickets",
            columns,
            unique=False,
            sqlite_where=sa.text(WHERE),
            postgresql_where=sa.text(WHERE),
        )


def downgrade() -> None:
    op.drop_index("ix_tickets_map_answered", table_name="tickets")
    op.drop_index("ix_tickets_map_open", table_name="tickets")
