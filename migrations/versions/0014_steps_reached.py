"""The steps a case reached (verified, handled) kept across a transfer or a reopen, for
the statistics, filled in from the audit trail for the cases there are; and what an
answer was due by.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.models

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(
            sa.Column("was_verified", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(
            sa.Column("was_handled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(
            sa.Column("answered_due_at", backend.models.UTCDateTime(timezone=True), nullable=True)
        )
    # Verification ended in some round; pollution confirmed and then answered.
    op.execute(
        "UPDATE tickets SET was_verified = TRUE WHERE verified_at IS NOT NULL OR EXISTS ("
        " SELECT 1 FROM audit_events a WHERE a.ticket_id = tickets.id"
        " AND a.action IN ('confirm', 'not_confirmed'))"
    )
    op.execute(
        "UPDATE tickets SET was_handled = TRUE WHERE (confirmed AND answered_at IS NOT NULL)"
        " OR EXISTS (SELECT 1 FROM audit_events c JOIN audit_events a"
        " ON a.ticket_id = c.ticket_id AND a.action = 'answer' AND a.id > c.id"
        " WHERE c.ticket_id = tickets.id AND c.action = 'confirm'"
        # …in the same round: no transfer, reopen or new verdict between the two.
        " AND NOT EXISTS (SELECT 1 FROM audit_events r WHERE r.ticket_id = c.ticket_id"
        " AND r.id > c.id AND r.id < a.id"
        " AND r.action IN ('transfer', 'reopen', 'confirm', 'not_confirmed')))"
    )


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("answered_due_at")
        batch.drop_column("was_handled")
        batch.drop_column("was_verified")
