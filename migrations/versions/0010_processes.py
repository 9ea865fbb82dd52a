"""Processes and their leases: a beat per server process, duties held by one process
(a channel's sending, Telegram polling), and outbox rows and inbound events leased by
the process that works on them, for as long as it lives.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "processes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", backend.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", backend.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
    )
    op.create_table(
        "duties",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=True),
        sa.Column("since", backend.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_duties")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=32), nullable=True))
        batch_op.drop_column("lease_until")
        batch_op.create_index(
            batch_op.f("ix_outbox_heads"), ["status", "channel", "chat_id", "id"], unique=False
        )
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=32), nullable=True))
        batch_op.drop_index(batch_op.f("ix_inbound_events_pending"))
        batch_op.create_index(
            batch_op.f("ix_inbound_events_waiting"),
            ["channel", "chat_id", "id"],
            unique=False,
            sqlite_where=sa.text("handled_at IS NULL"),
            postgresql_where=sa.text("handled_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_events_waiting"))
        batch_op.create_index(
            batch_op.f("ix_inbound_events_pending"), ["handled_at", "id"], unique=False
        )
        batch_op.drop_column("lease_owner")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_heads"))
        batch_op.add_column(
            sa.Column("lease_until", backend.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.drop_column("lease_owner")
    op.drop_table("duties")
    op.drop_table("processes")
