"""Identities sealed at rest: chats are stored under keyed look-ups, and chat ids, phones,
names, drafts, raw updates and photos' EXIF are sealed (backend.crypto). Rows already
stored are sealed here, under HOTLINE_DATA_KEY.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from backend import crypto

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _seal_existing(conn: sa.Connection) -> None:
    """Seal what the tables held in the clear (nothing, on a new installation)."""
    tables = (
        "reporter_identities",
        "conversations",
        "inbound_events",
        "outbox",
        "photos",
        "processed_updates",
    )
    if not any(conn.scalar(sa.text(f"SELECT 1 FROM {t} LIMIT 1")) for t in tables):  # noqa: S608
        return
    # A key that did not seal this database refuses here, before anything is sealed.
    ring = crypto.agree(conn, crypto.keys(), first_use=True)
    rows = conn.execute(
        sa.text(
            "SELECT reporter_id, channel, chat_id, display_name, phone FROM reporter_identities"
        )
    ).all()
    for reporter_id, channel, chat_id, name, phone in rows:
        conn.execute(
            sa.text(
                "UPDATE reporter_identities SET chat_id = :c, chat_key = :ck,"
                " display_name = :n, phone = :p, phone_key = :pk WHERE reporter_id = :r"
            ),
            {
                "r": reporter_id,
                "c": None if chat_id is None else ring.seal(chat_id, "reporter_identities.chat_id"),
                "ck": None if chat_id is None else ring.chat_key(channel, chat_id),
                "n": None if name is None else ring.seal(name, "reporter_identities.display_name"),
                "p": None if phone is None else ring.seal(phone, "reporter_identities.phone"),
                "pk": None if phone is None else ring.phone_key(phone),
            },
        )
    for row_id, channel, chat_id, data in conn.execute(
        sa.text("SELECT id, channel, chat_id, data FROM conversations")
    ).all():
        conn.execute(
            sa.text("UPDATE conversations SET chat_key = :k, data = :d WHERE id = :i"),
            {
                "i": row_id,
                "k": ring.chat_key(channel, chat_id),
                "d": ring.seal_json(_json(data) or {}, "conversations.data"),
            },
        )
    for row_id, channel, chat_id, body in conn.execute(
        sa.text("SELECT id, channel, chat_id, body FROM inbound_events")
    ).all():
        conn.execute(
            sa.text(
                "UPDATE inbound_events SET chat_key = :k, address = :a, body = :b WHERE id = :i"
            ),
            {
                "i": row_id,
                "k": ring.chat_key(channel, chat_id),
                "a": ring.seal(chat_id, "inbound_events.address"),
                "b": ring.seal_json(_json(body), "inbound_events.body"),
            },
        )
    for row_id, channel, chat_id, payload in conn.execute(
        sa.text("SELECT id, channel, chat_id, payload FROM outbox")
    ).all():
        conn.execute(
            sa.text("UPDATE outbox SET chat_key = :k, address = :a, payload = :p WHERE id = :i"),
            {
                "i": row_id,
                "k": ring.chat_key(channel, chat_id) if chat_id else "",
                "a": ring.seal(chat_id, "outbox.address") if chat_id else None,
                "p": ring.seal_json(_json(payload), "outbox.payload"),
            },
        )

    # A Zalo OA follow's key named its user: now a keyed hash, as bot.zalo_oa makes it.
    def follow_key(key: str) -> str:
        return "follow:" + ring.lookup("follow", key.removeprefix("follow:"))

    for row_id, key in conn.execute(
        sa.text("SELECT id, event_key FROM inbound_events WHERE event_key LIKE 'follow:%:%'")
    ).all():
        conn.execute(
            sa.text("UPDATE inbound_events SET event_key = :k WHERE id = :i"),
            {"i": row_id, "k": follow_key(key)},
        )
    for channel, key in conn.execute(
        sa.text(
            "SELECT channel, update_id FROM processed_updates WHERE update_id LIKE 'follow:%:%'"
        )
    ).all():
        conn.execute(
            sa.text(
                "UPDATE processed_updates SET update_id = :k WHERE channel = :c AND update_id = :o"
            ),
            {"c": channel, "o": key, "k": follow_key(key)},
        )
    for row_id, lat, lon, taken in conn.execute(
        sa.text(
            "SELECT id, exif_lat, exif_lon, exif_taken_at FROM photos"
            " WHERE exif_lat IS NOT NULL OR exif_taken_at IS NOT NULL"
        )
    ).all():
        conn.execute(
            sa.text("UPDATE photos SET exif = :e WHERE id = :i"),
            {
                "i": row_id,
                "e": ring.seal_json({"lat": lat, "lon": lon, "taken_at": taken}, "photos.exif"),
            },
        )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    as_text = {"postgresql_using": "{}::text"} if postgres else {}

    def to_text(batch: Any, column: str, old: Any) -> None:
        using = {k: v.format(column) for k, v in as_text.items()}
        batch.alter_column(column, existing_type=old, type_=sa.Text(), **using)

    with op.batch_alter_table("reporter_identities") as batch:
        batch.add_column(sa.Column("chat_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("phone_key", sa.String(length=64), nullable=True))
        to_text(batch, "chat_id", sa.String(length=64))
        to_text(batch, "display_name", sa.String(length=200))
        to_text(batch, "phone", sa.String(length=32))
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("chat_key", sa.String(length=64), nullable=True))
        to_text(batch, "data", sa.JSON())
    with op.batch_alter_table("inbound_events") as batch:
        batch.add_column(sa.Column("chat_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("address", sa.Text(), nullable=True))
        to_text(batch, "body", sa.JSON())
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("chat_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("address", sa.Text(), nullable=True))
        to_text(batch, "payload", sa.JSON())
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("exif", sa.Text(), nullable=True))

    _seal_existing(op.get_bind())

    with op.batch_alter_table("reporter_identities") as batch:
        batch.drop_constraint("uq_reporter_identities_channel", type_="unique")
        batch.create_unique_constraint("uq_reporter_identities_channel", ["channel", "chat_key"])
        batch.create_index("ix_reporter_identities_phone_key", ["phone_key"], unique=False)
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint("uq_conversations_channel", type_="unique")
        batch.drop_column("chat_id")
        batch.alter_column("chat_key", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint("uq_conversations_channel", ["channel", "chat_key"])
    with op.batch_alter_table("inbound_events") as batch:
        batch.drop_index("ix_inbound_events_chat")
        batch.drop_index("ix_inbound_events_waiting")
        batch.drop_column("chat_id")
        batch.alter_column("chat_key", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("address", existing_type=sa.Text(), nullable=False)
        batch.create_index("ix_inbound_events_chat", ["channel", "chat_key", "received_at"])
        batch.create_index(
            "ix_inbound_events_waiting",
            ["channel", "chat_key", "id"],
            sqlite_where=sa.text("handled_at IS NULL"),
            postgresql_where=sa.text("handled_at IS NULL"),
        )
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_heads")
        batch.drop_index("ix_outbox_chat")
        batch.drop_column("chat_id")
        batch.alter_column("chat_key", existing_type=sa.String(length=64), nullable=False)
        batch.create_index("ix_outbox_heads", ["status", "channel", "chat_key", "id"])
        batch.create_index("ix_outbox_chat", ["channel", "chat_key"])
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("exif_taken_at")
        batch.drop_column("exif_lon")
        batch.drop_column("exif_lat")


def downgrade() -> None:
    raise NotImplementedError("sealed identities cannot be unsealed by a downgrade")
