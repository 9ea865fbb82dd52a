"""Personal data rights: the date a reporter's identity was erased, and the indexes that
erasing a chat and the retention pass look things up by.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reporters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("erased_at", backend.models.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_index("ix_audit_events_actor", "audit_events", ["actor", "created_at"])
    op.create_index("ix_outbox_chat", "outbox", ["channel", "chat_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_chat", table_name="outbox")
    op.drop_index("ix_audit_events_actor", table_name="audit_events")
    with op.batch_alter_table("reporters", schema=None) as batch_op:
        batch_op.drop_column("erased_at")
