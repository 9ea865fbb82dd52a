"""The public side and other systems: hiding a case from the public, publishable
photos, muted reporters, shared rate counts, Open311 partner keys and signed webhooks.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.models

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, backend.models.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(_when("hidden_at"))
        batch.add_column(sa.Column("hidden_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("photos") as batch:
        batch.add_column(
            sa.Column("public", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(_when("due_by"))
    op.create_table(
        "reporter_mutes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reporter_id", sa.Integer(), nullable=False),
        _when("until", nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("muted_by", sa.Integer(), nullable=True),
        _when("created_at", nullable=False),
        _when("lifted_at"),
        sa.ForeignKeyConstraint(
            ["reporter_id"], ["reporters.id"], name=op.f("fk_reporter_mutes_reporter_id_reporters")
        ),
        sa.ForeignKeyConstraint(
            ["muted_by"], ["users.id"], name=op.f("fk_reporter_mutes_muted_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reporter_mutes")),
    )
    op.create_index(
        op.f("ix_reporter_mutes_reporter_id"), "reporter_mutes", ["reporter_id"], unique=False
    )
    op.create_table(
        "rate_counts",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("window", BIG_ID, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(length=32), nullable=True),
        _when("expires_at", nullable=False),
        sa.PrimaryKeyConstraint("name", "window", name=op.f("pk_rate_counts")),
    )
    op.create_index(op.f("ix_rate_counts_expires_at"), "rate_counts", ["expires_at"], unique=False)
    op.create_table(
        "partner_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("province_code", sa.String(length=2), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_hint", sa.String(length=12), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        _when("created_at", nullable=False),
        _when("revoked_at"),
        sa.ForeignKeyConstraint(
            ["province_code"],
            ["provinces.code"],
            name=op.f("fk_partner_keys_province_code_provinces"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_partner_keys_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_partner_keys_key_hash")),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("province_code", sa.String(length=2), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        _when("created_at", nullable=False),
        _when("disabled_at"),
        sa.ForeignKeyConstraint(
            ["province_code"], ["provinces.code"], name=op.f("fk_webhooks_province_code_provinces")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_webhooks_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("next_attempt_at", nullable=False),
        sa.Column("lease_owner", sa.String(length=32), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _when("created_at", nullable=False),
        _when("delivered_at"),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhooks.id"], name=op.f("fk_webhook_deliveries_webhook_id_webhooks")
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_webhook_deliveries_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_webhook_id"), "webhook_deliveries", ["webhook_id"], unique=False
    )
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
    op.drop_index(op.f("ix_webhook_deliveries_webhook_id"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_table("partner_keys")
    op.drop_index(op.f("ix_rate_counts_expires_at"), table_name="rate_counts")
    op.drop_table("rate_counts")
    op.drop_index(op.f("ix_reporter_mutes_reporter_id"), table_name="reporter_mutes")
    op.drop_table("reporter_mutes")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("due_by")
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("public")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("hidden_reason")
        batch.drop_column("hidden_at")
