"""ORM tables: places, handling units, categories, reporters, tickets, chat state, outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backend.crypto import Sealed, SealedJSON, keys


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


# --- places and who handles them -------------------------------------------------------


class Province(Base):
    """A province or centrally-run city (tỉnh / thành phố), 2-digit code."""

    __tablename__ = "provinces"

    code: Mapped[str] = mapped_column(String(2), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    short_name: Mapped[str] = mapped_column(String(100))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)


class Ward(Base):
    """A commune, ward or special zone (xã / phường / đặc khu), 5-digit code."""

    __tablename__ = "wards"

    code: Mapped[str] = mapped_column(String(5), primary_key=True)
    province_code: Mapped[str] = mapped_column(ForeignKey("provinces.code"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    short_name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    area_km2: Mapped[float | None] = mapped_column(Float)
    # Name without tone marks, spaces or punctuation, for typed look-ups.
    search_key: Mapped[str] = mapped_column(String(100), index=True)


class Unit(Base):
    """A handling unit: a People's Committee, a department, the police (apart from areas)."""

    __tablename__ = "units"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    # ward_committee · province_department · police · ministry
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    province_code: Mapped[str | None] = mapped_column(ForeignKey("provinces.code"), index=True)
    ward_code: Mapped[str | None] = mapped_column(ForeignKey("wards.code"), unique=True)


class Category(Base):
    """A kind of pollution and who handles it by default."""

    __tablename__ = "categories"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name_vi: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    # ward · province · police
    default_handler: Mapped[str] = mapped_column(String(32))
    notify_police: Mapped[bool] = mapped_column(Boolean, default=False)
    sort_order: Mapped[int] = mapped_column(Integer)


# --- reporters ----------------------------------------------------------------------------


class Reporter(Base):
    """A resident who reports; staff only ever see the pseudonym (Điều 5)."""

    __tablename__ = "reporters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the identity was erased (/forgetme, a request by phone or letter, or the
    # retention period): the pseudonym and the consent records stay as proof.
    erased_at: Mapped[datetime | None] = mapped_column(default=None)


class ReporterIdentity(Base):
    """Who the reporter is. Sealed: read only by triage roles, each read audited."""

    __tablename__ = "reporter_identities"

    reporter_id: Mapped[int] = mapped_column(ForeignKey("reporters.id"), primary_key=True)
    channel: Mapped[str | None] = mapped_column(String(16))
    # Sealed (backend.crypto); found by the keyed look-ups beside them, never by value.
    chat_id: Mapped[str | None] = mapped_column(Sealed("reporter_identities.chat_id"))
    chat_key: Mapped[str | None] = mapped_column(String(64))
    display_name: Mapped[str | None] = mapped_column(Sealed("reporter_identities.display_name"))
    phone: Mapped[str | None] = mapped_column(Sealed("reporter_identities.phone"))
    phone_key: Mapped[str | None] = mapped_column(String(64), index=True)

    __table_args__ = (UniqueConstraint("channel", "chat_key"),)


class Consent(Base):
    """Explicit consent to process personal data, with the text version shown."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reporter_id: Mapped[int] = mapped_column(ForeignKey("reporters.id"), index=True)
    text_version: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(default=None)


# --- tickets ------------------------------------------------------------------------------


class WardBoundary(Base):
    """A ward's polygon (WKB, WGS84), imported from GeoJSON by the operator."""

    __tablename__ = "ward_boundaries"

    ward_code: Mapped[str] = mapped_column(ForeignKey("wards.code"), primary_key=True)
    geometry: Mapped[bytes] = mapped_column(LargeBinary)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class GeocodeCache(Base):
    """Answers from the geocoder, kept so an address is looked up once."""

    __tablename__ = "geocode_cache"

    # search (address → point) · reverse (point → address)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    query_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    # None when the geocoder found nothing.
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# The public map's index: the columns it reads, over the tickets it may show (neither
# hidden nor merged into a case).
MAP_INDEX = "ix_tickets_map"
MAP_COLUMNS = (
    "state",
    "answered_at",
    "lat",
    "lon",
    "category_code",
    "ward_code",
    "created_at",
    "code",
    # Always null here; held so SQLite reads the index alone (a covering index).
    "hidden_at",
    "case_id",
)
MAP_WHERE = "hidden_at IS NULL AND case_id IS NULL"


class Ticket(Base):
    """One report (thông tin) and where it stands in the QĐ 174 procedure."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    category_code: Mapped[str] = mapped_column(ForeignKey("categories.code"))
    ward_code: Mapped[str] = mapped_column(ForeignKey("wards.code"), index=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    reporter_id: Mapped[int | None] = mapped_column(ForeignKey("reporters.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    polluter: Mapped[str | None] = mapped_column(Text)
    # one_off (đột xuất) · recurring (thường xuyên)
    nature: Mapped[str] = mapped_column(String(16))
    # urgent (khẩn) · normal
    urgency: Mapped[str] = mapped_column(String(16))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    location_source: Mapped[str] = mapped_column(String(16))
    # The address the reporter typed, as the geocoder understood it.
    address: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the current step is due; None once nothing is pending. Overdue is due_at < now.
    due_at: Mapped[datetime | None] = mapped_column(index=True)
    # ward · province · ministry · police (Điều 6 competence)
    competence: Mapped[str | None] = mapped_column(String(16))
    # The case (vụ việc) this report was merged into; a case is its first report.
    case_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    complex: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    classified_at: Mapped[datetime | None] = mapped_column(default=None)
    assigned_at: Mapped[datetime | None] = mapped_column(default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    # The end of verification (xác minh) in the current round, and what it found: True
    # when the pollution was confirmed and handled, False when it was not confirmed.
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    confirmed: Mapped[bool | None] = mapped_column(Boolean, default=None)
    # Whether any round reached verification, and whether one handled confirmed pollution
    # through to an answer: the statistics count the steps a case reached, which a
    # transfer or a reopen does not undo.
    was_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    was_handled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    # What the answer was due by (the ticket page says whether it came in time).
    answered_due_at: Mapped[datetime | None] = mapped_column(default=None)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    reopen_until: Mapped[datetime | None] = mapped_column(default=None, index=True)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    rejection_reason: Mapped[str | None] = mapped_column(String(32))
    result_text: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(Integer)
    escalated_at: Mapped[datetime | None] = mapped_column(default=None)
    escalation_count: Mapped[int] = mapped_column(Integer, default=0)
    # Kept by the workflow for the monthly statistics: how often the ticket went to
    # another unit, and whether any step was finished after its due time.
    transfer_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Hidden from the public case page and map by staff, with why (audited as "hide").
    hidden_at: Mapped[datetime | None] = mapped_column(default=None)
    hidden_reason: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        Index("ix_tickets_open_due", "state", "due_at"),
        # Duplicate suggestions: one category, a bounding box of latitude and longitude.
        Index("ix_tickets_category_place", "category_code", "lat", "lon"),
        # The public map (services.public_map): the open cases by state, the recently
        # answered ones by state and the answer's time, with every column the map reads.
        Index(
            MAP_INDEX,
            *MAP_COLUMNS,
            sqlite_where=text(MAP_WHERE),
            postgresql_where=text(MAP_WHERE),
        ),
    )


class TicketCounter(Base):
    """The last sequence number given out per province and month (yymm)."""

    __tablename__ = "ticket_counters"

    province_code: Mapped[str] = mapped_column(String(2), primary_key=True)
    period: Mapped[str] = mapped_column(String(4), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class Photo(Base):
    """Evidence: a stored image, addressed by its sha256."""

    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    # evidence (from the report) · result (with the answer)
    kind: Mapped[str] = mapped_column(String(16), default="evidence")
    # Where and when the camera says it was taken (EXIF, read before stripping); sealed
    # evidence, not shown to ward staff.
    # {"lat", "lon", "taken_at"}, sealed (backend.crypto).
    exif: Mapped[dict[str, Any] | None] = mapped_column(SealedJSON("photos.exif"), default=None)
    # Shown on the public case page: an evidence photo is blurred there until staff mark
    # it publishable; a result photo is shown once staff chose to publish it.
    public: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Media(Base):
    """A photo a staff member uploaded (POST /api/v1/media), by its sha256: what an answer
    may refer to before the photo belongs to a ticket."""

    __tablename__ = "media"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstanceSecret(Base):
    """A random value made once per installation and kept (the demo accounts' password
    seed, so their passwords stay the same across restarts)."""

    __tablename__ = "instance_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A staff account: operator, ward staff, leader, supervisor, police liaison, admin."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    # operator · ward_staff · ward_leader · supervisor · police · admin
    role: Mapped[str] = mapped_column(String(32))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    # Where escalations and staff cards reach them.
    telegram_chat_id: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # argon2 hash; None until a password is set.
    password_hash: Mapped[str | None] = mapped_column(String(200))
    # The password was given by `create-user` or an admin reset: the first login must
    # set a new one.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # A training account made by the demo: it logs in only while the demo runs.
    demo: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class WebSession(Base):
    """A signed-in browser: the cookie holds a random token, the table only its hash."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class KnownDevice(Base):
    """A browser that signed in to an account before (its cookie holds a random token,
    the table its hash): failures from elsewhere do not slow its logins down."""

    __tablename__ = "known_devices"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginAttempt(Base):
    """Failed logins, to throttle guessing (by account and by address)."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    # A hash of the client address: enough to throttle, not a log of who came from where.
    client: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class TicketNote(Base):
    """Internal notes by staff: never shown to the reporter (apart from the public reply)."""

    __tablename__ = "ticket_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only trail of what happened to a ticket, by whom."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The ticket's due time when a step was taken (None: nothing was due, or not recorded):
    # the public case page says whether each step was on time.
    due_by: Mapped[datetime | None] = mapped_column(default=None)

    # What one actor did lately (the retention pass: a reporter's last rating or reopening).
    __table_args__ = (Index("ix_audit_events_actor", "actor", "created_at"),)

    @classmethod
    def of_act(
        cls, actor: str, action: str, note: str | None, now: datetime | None = None
    ) -> AuditEvent:
        """An act about no one ticket (a reporter's matter, a personal-data search, a
        partner's key or webhook): in the trail, off every ticket's timeline, which
        ward staff read."""
        return cls(
            ticket_id=None, actor=actor, action=action, note=note, created_at=now or utcnow()
        )


# --- chat runtime -------------------------------------------------------------------------


class Conversation(Base):
    """Dialogue state per (channel, chat); survives restarts and is shared by processes."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    # The chat's keyed look-up (backend.crypto.Keyring.chat_key), never its id.
    chat_key: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    # The draft holds what the resident wrote and their phone: sealed.
    data: Mapped[dict[str, Any]] = mapped_column(SealedJSON("conversations.data"), default=dict)
    language: Mapped[str] = mapped_column(String(8))
    reporter_id: Mapped[int | None] = mapped_column(ForeignKey("reporters.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("channel", "chat_key"),)


class ProcessedUpdate(Base):
    """Updates already handled, so a redelivered one is answered and not run again."""

    __tablename__ = "processed_updates"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    update_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """A message to deliver; delivery state only, never workflow state."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    # The chat's keyed look-up, and its id sealed (the sender opens it).
    chat_key: Mapped[str] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(Sealed("outbox.address"))
    # What it says (it may repeat the resident's phone or words): sealed.
    payload: Mapped[dict[str, Any]] = mapped_column(SealedJSON("outbox.payload"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    # pending · sent · failed · undeliverable (outside the platform's reply window: staff
    # phone the reporter) · called (they did)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The process sending it now (see Presence): a lease lasts while its owner lives.
    lease_owner: Mapped[str | None] = mapped_column(String(32), default=None)
    # The request id of the update that made it (logs follow an update to its replies).
    request_id: Mapped[str | None] = mapped_column(String(32), default=None)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    # The platform's id of the message once sent (a staff card is edited later).
    sent_message_id: Mapped[str | None] = mapped_column(String(64), default=None)

    @classmethod
    def to(
        cls, channel: str, chat_id: str, payload: dict[str, Any], **values: Any
    ) -> OutboxMessage:
        """A message for a chat: stored under its look-up, with its id sealed."""
        return cls(
            channel=channel,
            chat_key=keys().chat_key(channel, chat_id),
            address=chat_id,
            payload=payload,
            **values,
        )

    __table_args__ = (
        Index("ix_outbox_pending", "status", "next_attempt_at"),
        # The first pending message of each chat, which is the next one it gets.
        Index("ix_outbox_heads", "status", "channel", "chat_key", "id"),
        # A ticket's notices that could not reach the reporter (the ticket page lists them).
        Index("ix_outbox_ticket", "ticket_id", "status"),
        # A chat's messages, whatever their status (erasing a chat, withholding notices).
        Index("ix_outbox_chat", "channel", "chat_key"),
    )


class InboundEvent(Base):
    """A platform's event as it arrived, stored before it is answered and handled later.

    Zalo wants a webhook answered within 2 seconds; handling (a photo download, the
    dialogue) runs after. The newest row of a chat also dates its last message, which
    bounds Zalo OA's reply window.
    """

    __tablename__ = "inbound_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    # The platform's id of the event (Zalo's msg_id): a redelivery is stored once.
    event_key: Mapped[str] = mapped_column(String(128))
    # The chat's keyed look-up; its id and the update itself (names, a shared phone,
    # what was written) are sealed.
    chat_key: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(Sealed("inbound_events.address"))
    body: Mapped[dict[str, Any]] = mapped_column(SealedJSON("inbound_events.body"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None] = mapped_column(default=None)
    # The process handling it now (see Presence): a lease lasts while its owner lives.
    lease_owner: Mapped[str | None] = mapped_column(String(32), default=None)
    # The webhook request that stored it (logs follow an update to its replies).
    request_id: Mapped[str | None] = mapped_column(String(32), default=None)

    __table_args__ = (
        UniqueConstraint("channel", "event_key"),
        Index("ix_inbound_events_chat", "channel", "chat_key", "received_at"),
        # The updates waiting to be handled, by chat: a chat's oldest is found here.
        Index(
            "ix_inbound_events_waiting",
            "channel",
            "chat_key",
            "id",
            sqlite_where=text("handled_at IS NULL"),
            postgresql_where=text("handled_at IS NULL"),
        ),
    )


class OAuthToken(Base):
    """A channel's OAuth access/refresh pair (Zalo OA). A refresh rotates both, and a
    refresh token works once, so every process reads and renews the pair here."""

    __tablename__ = "oauth_tokens"

    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_token: Mapped[str] = mapped_column(Text)
    refresh_token: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # A process renewing the pair holds this lease; the others wait for its result.
    refreshing_until: Mapped[datetime | None] = mapped_column(default=None)
    # The platform refused the refresh token: new tokens must come from an admin.
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_reason: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- staff groups --------------------------------------------------------------------------


class StaffGroup(Base):
    """A unit's group chat (Telegram), where new tickets are posted as cards to claim."""

    __tablename__ = "staff_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("channel", "chat_id"),)


class LinkCode(Base):
    """A one-time code an admin gives out to link a group (`/link CODE`); stored hashed."""

    __tablename__ = "link_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class StaffCard(Base):
    """A ticket's card in a staff group: which outbox message carries it."""

    __tablename__ = "staff_cards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    outbox_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("outbox.id")
    )
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))


class MonthlyRun(Base):
    """A monthly duty done once (the reminder on the 20th, the report on the 25th), with
    the report it kept. The unique key is what makes a second process skip it."""

    __tablename__ = "monthly_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # remind · report
    duty: Mapped[str] = mapped_column(String(16))
    # month (calendar) · cut25 (the 25th-to-25th cut)
    period_kind: Mapped[str] = mapped_column(String(8))
    # yyyy-mm: the month the period ends in
    period: Mapped[str] = mapped_column(String(7))
    # "" for the whole country
    province_code: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    figures: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    xlsx: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)

    __table_args__ = (UniqueConstraint("duty", "period_kind", "period", "province_code"),)


# --- processes -----------------------------------------------------------------------------


class ProcessBeat(Base):
    """A running server process and when it last showed it was alive. A lease held by a
    process whose beat is older than a few seconds is free for the others."""

    __tablename__ = "processes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Duty(Base):
    """A job one process runs for all (Telegram polling, a channel's sending): held by
    its owner while the owner lives."""

    __tablename__ = "duties"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(32), default=None)
    since: Mapped[datetime] = mapped_column(default=utcnow)


class SharedLimit(Base):
    """A rate limit every process keeps together (the geocoder's one request a second):
    the next free slot and the end of a pause after a failure, in epoch seconds."""

    __tablename__ = "shared_limits"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float, default=0.0)
    down_until: Mapped[float] = mapped_column(Float, default=0.0)


class ReferenceVersion(Base):
    """A version per kind of reference data (ward boundaries, the deadline policy): a
    process that sees a newer one reloads it, without a restart. The deadline policy's
    TOML is kept here too, so a file changed on one machine reaches every process."""

    __tablename__ = "reference_versions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    content: Mapped[str | None] = mapped_column(Text, default=None)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- the public and other systems ---------------------------------------------------------


class ReporterMute(Base):
    """A reporter an operator muted for a while, with why: their messages get a neutral
    answer and start no report until it ends or is lifted."""

    __tablename__ = "reporter_mutes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reporter_id: Mapped[int] = mapped_column(ForeignKey("reporters.id"), index=True)
    until: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(Text)
    muted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(default=None)


class RateCount(Base):
    """How many times something was done in one window of a limit (a reporter's reports
    this hour, a web address's forms today, a partner key's requests): counted here so
    every process sees the same figure."""

    __tablename__ = "rate_counts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The window's start, in epoch seconds.
    window: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    count: Mapped[int] = mapped_column(Integer, default=0)
    # What the count stands for, where one matters: the code a web form's token filed.
    note: Mapped[str | None] = mapped_column(String(32))
    # When the row may be swept.
    expires_at: Mapped[datetime] = mapped_column(index=True)


class PartnerKey(Base):
    """An Open311 api_key issued to a partner system, scoped to a province. Only its
    SHA-256 is kept; the key itself is shown once, when it is issued."""

    __tablename__ = "partner_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    province_code: Mapped[str] = mapped_column(ForeignKey("provinces.code"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The key's first characters, so an admin can tell keys apart.
    key_hint: Mapped[str] = mapped_column(String(12))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Webhook(Base):
    """A partner's URL that hears of a province's tickets (created, status changed,
    answered, overdue), each delivery signed with the webhook's secret."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(Text)
    province_code: Mapped[str] = mapped_column(ForeignKey("provinces.code"))
    # The event types it hears: ["ticket.created", "ticket.status_changed", ...]
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(Sealed("webhooks.secret"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    """One event to deliver to one webhook: at least once, retried with backoff for a
    day, then failed and shown to admins. The body is kept as sent, so a retry is signed
    over the same bytes."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    # The event's id, the same on every attempt (the partner drops repeats by it).
    event_id: Mapped[str] = mapped_column(String(36))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    body: Mapped[str] = mapped_column(Text)
    # pending · delivered · failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The process delivering it now (see Presence): a lease lasts while its owner lives.
    lease_owner: Mapped[str | None] = mapped_column(String(32), default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_webhook_deliveries_pending", "status", "next_attempt_at"),)
