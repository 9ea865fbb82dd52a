"""Security: passwords to change at first login, demo accounts, known devices, uploaded
photos by uploader, and values kept per installation.

Every password there is so far was given by `create-user`, an admin reset or the demo:
so every account must choose its own at its next login. The accounts the demo made
before it became opt-in are marked as demo accounts, which log in only while the demo
runs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_DEMO_ACCOUNTS = ("demo-operator", "demo-staff", "demo-leader")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("demo", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    users = sa.table(
        "users",
        sa.column("username", sa.String),
        sa.column("password_hash", sa.String),
        sa.column("must_change_password", sa.Boolean),
        sa.column("demo", sa.Boolean),
    )
    op.execute(users.update().where(users.c.username.in_(OLD_DEMO_ACCOUNTS)).values(demo=True))
    op.execute(
        users.update()
        .where(users.c.password_hash.is_not(None), users.c.demo.is_(sa.false()))
        .values(must_change_password=True)
    )

    op.create_table(
        "known_devices",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", backend.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", backend.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_known_devices_user_id_users")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_known_devices")),
    )
    with op.batch_alter_table("known_devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_known_devices_user_id"), ["user_id"], unique=False)

    op.create_table(
        "media",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", backend.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["uploaded_by"], ["users.id"], name=op.f("fk_media_uploaded_by_users")
        ),
        sa.PrimaryKeyConstraint("sha256", "uploaded_by", name=op.f("pk_media")),
    )

    op.create_table(
        "instance_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("created_at", backend.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_instance_secrets")),
    )


def downgrade() -> None:
    op.drop_table("instance_secrets")
    op.drop_table("media")
    with op.batch_alter_table("known_devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_known_devices_user_id"))
    op.drop_table("known_devices")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("demo")
        batch_op.drop_column("must_change_password")
