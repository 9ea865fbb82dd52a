"""Settings for every process, read from HOTLINE_* environment variables."""

from __future__ import annotations

import hashlib
import hmac
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.crypto import DataKeyError, Keyring, keyring_from

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "placeholder"})


class Settings(BaseSettings):
    """One object for the whole configuration; secrets are SecretStr."""

    model_config = SettingsConfigDict(env_prefix="HOTLINE_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./var/hotline.db"
    # PostgreSQL behind PgBouncer in transaction mode: no prepared-statement cache.
    database_pgbouncer: bool = False
    # PostgreSQL: how long the intake path waits for a lock, and for any one statement,
    # before it gives up (the platform then redelivers), in milliseconds.
    database_lock_timeout_ms: int = 2000
    database_statement_timeout_ms: int = 10000
    # How often a process looks whether another changed the reference data (boundaries,
    # the deadline policy), in seconds.
    reference_check_interval: float = 5.0
    media_dir: Path = Path("./var/media")
    # Where photos are kept: empty for media_dir on local disk, a local folder
    # (file:///path or a plain path), or s3://bucket/prefix for an S3-compatible store
    # (MinIO, Ceph, cloud object storage) reached at s3_endpoint_url with these keys.
    media_url: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # Where updates wait on local disk while the database is slower than Zalo waits.
    spool_dir: Path = Path("./var/spool")

    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_mode: Literal["polling", "webhook"] = "polling"
    telegram_webhook_secret: SecretStr | None = None
    public_url: str | None = None
    # Telegram asks for about one message a second per chat and 30 a second overall.
    telegram_rate_global: float = 30.0
    telegram_rate_per_chat: float = 1.0
    telegram_poll_timeout: int = 30

    # Zalo Official Account (OA API v3). Off unless the app id, the OA secret key (webhook
    # signatures), the app secret (token refresh) and a token are all set. The tokens seed
    # the database once; refreshed pairs are kept there.
    zalo_oa_app_id: str | None = None
    zalo_oa_secret_key: SecretStr | None = None
    zalo_app_secret: SecretStr | None = None
    zalo_oa_access_token: SecretStr | None = None
    zalo_oa_refresh_token: SecretStr | None = None
    zalo_oa_api_url: str = "https://openapi.zalo.me"
    zalo_oauth_url: str = "https://oauth.zaloapp.com"
    # A consultation message reaches a user only this long after their last message.
    zalo_oa_window_hours: float = 48.0
    zalo_oa_rate_global: float = 10.0
    zalo_oa_rate_per_chat: float = 1.0

    # Zalo Bot Platform (Telegram-like). Off without a token.
    zalo_bot_token: SecretStr | None = None
    zalo_bot_api_url: str = "https://bot-api.zaloplatforms.com"
    zalo_bot_mode: Literal["polling", "webhook"] = "polling"
    zalo_bot_webhook_secret: SecretStr | None = None
    zalo_bot_poll_timeout: int = 30
    zalo_bot_rate_global: float = 10.0
    zalo_bot_rate_per_chat: float = 1.0

    # The geocoder (Nominatim's API). Empty: typed addresses are matched against the
    # ward and province names only. Public Nominatim asks for an identifying user agent
    # and at most one request a second.
    nominatim_url: str = "https://nominatim.openstreetmap.org"
    geocoder_user_agent: str = "pollution-hotline/0.1 (Vietnam pollution reports)"
    geocoder_timeout: float = 5.0
    geocoder_interval: float = 1.0

    # The provinces (2-digit codes, JSON list) this deployment serves; empty: all of them.
    # A report from elsewhere gets an out-of-area message with these hotline numbers.
    served_provinces: list[str] = []
    out_of_area_hotlines: str = ""

    # Duplicate suggestions: open cases of the same category within this many metres
    # (per category in duplicate_radii, a JSON object), reported in the last N days.
    duplicate_radius_m: float = 150.0
    duplicate_radii: dict[str, float] = {}
    duplicate_days: int = 30
    # Map tiles for the dashboard ({z}/{x}/{y}); OpenStreetMap unless configured.
    map_tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    # The public map's queries (/map, /map/data, a ward's figures) each process runs at
    # once; one that waits longer than map_query_wait seconds for its turn is answered
    # 503 with Retry-After, so that a flood of views cannot take the database from staff.
    map_queries_at_once: int = Field(default=4, ge=1, le=256)
    map_query_wait: float = Field(default=10.0, gt=0, le=300)

    # The demo (`hotline serve --demo`, or HOTLINE_DEMO=1; never in production): training
    # accounts for every role and, without a Telegram token, the built-in Bot API
    # stand-in with the chat simulator at /demo/chat. Off by default.
    demo: bool = False

    # Reverse proxies (addresses or networks, JSON list) whose X-Forwarded-For is
    # believed; without them the client address is the connection's peer.
    trusted_proxies: list[IPv4Network | IPv6Network] = []
    # Where to report a vulnerability (a mailto: or https: URI), published at
    # /.well-known/security.txt (RFC 9116); without it there is no such file.
    security_contact: str | None = Field(default=None, pattern=r"^(mailto:|https://)\S+$")

    outbox_enabled: bool = True
    outbox_max_attempts: int = 8
    outbox_poll_interval: float = 1.0

    # A province's deadline policy on top of the shipped defaults (TOML, see
    # backend/data/deadlines.toml); how often overdue tickets are looked for (seconds).
    deadlines_file: Path | None = None
    deadline_interval: float = 60.0
    deadline_worker_enabled: bool = True

    # Monthly statistics: the period (calendar month, or the 25th-to-25th cut), the day
    # supervisors are reminded and the day the report is made and kept (local days), and
    # how often the worker looks whether that day has come (seconds).
    stats_period: Literal["month", "cut25"] = "month"
    stats_reminder_day: int = Field(default=20, ge=1, le=28)
    stats_report_day: int = Field(default=25, ge=1, le=28)
    stats_interval: float = 600.0
    stats_duty_enabled: bool = True

    # Retention (see backend/services/retention.py and the README's table): a reporter
    # with all reports finished and no sign of life for this many months is pseudonymised;
    # delivered message texts and handled update ids go after these many days; the pass
    # runs this often (seconds), in one process at a time.
    retention_identity_months: int = Field(default=12, ge=1)
    retention_outbox_days: int = Field(default=30, ge=1)
    retention_processed_days: int = Field(default=30, ge=2)
    retention_webhook_days: int = Field(default=30, ge=1)
    retention_interval: float = 3600.0

    # The key that seals reporters' identities at rest (base64, 32 bytes; `hotline
    # new-data-key` prints one). Required in production. In development without it, the
    # key in data_key_file (`make run` makes one) is used. During a rotation the keys
    # before it (comma-separated) still open what they sealed: see the README.
    data_key: SecretStr | None = None
    data_key_previous: SecretStr | None = None
    data_key_file: Path = Path("./var/data.key")

    # Signed webhooks to partner systems (see the README): how long a partner has to
    # answer (seconds), how long a delivery is retried before it is marked failed
    # (hours), how many attempts a refusal other than 408/429 (a 4xx, a redirect) gets,
    # how many deliveries one process has under way, and how often it looks for due
    # ones. A partner's URL must be https and reach a public address unless these
    # opt-ins allow plain http or private and loopback addresses (a partner on the
    # same network, the tests).
    webhooks_enabled: bool = True
    webhook_timeout: float = Field(default=10.0, gt=0, le=120)
    webhook_retry_hours: float = Field(default=24.0, gt=0)
    webhook_refused_attempts: int = Field(default=3, ge=1)
    webhook_concurrency: int = Field(default=8, ge=1, le=100)
    webhook_poll_interval: float = Field(default=1.0, gt=0)
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False

    # Largest photo accepted from a chat, in bytes (the Bot API serves files up to 20 MB).
    max_photo_bytes: int = 20 * 1024 * 1024

    # Open311 GeoReport v2 (/open311/v2/): requests posted per partner key per hour and
    # per day, and reads per minute per key (or, without a key, per client address).
    open311_posts_per_hour: int = Field(default=60, ge=1)
    open311_posts_per_day: int = Field(default=500, ge=1)
    open311_reads_per_minute: int = Field(default=120, ge=1)
    # Posts per minute from one client address, whatever the key (or none): a flood of
    # guessed keys or junk bodies is cut before any look-up.
    open311_posts_per_address_per_minute: int = Field(default=60, ge=1)
    # What discovery names as the contact and where to ask for a key.
    open311_contact: str = ""
    open311_key_service: str = ""
    # Limits on abuse in the chats (backend/services/abuse.py): the new reports one
    # reporter may send on one channel per hour and per day (a day starts at midnight in
    # Vietnam), and additions to their reports (photos or words sent later), more
    # generous. Counted in the database, so they hold across server processes.
    reports_per_hour: int = Field(default=5, ge=1, le=10_000)
    reports_per_day: int = Field(default=20, ge=1, le=100_000)
    additions_per_hour: int = Field(default=20, ge=1, le=10_000)
    additions_per_day: int = Field(default=60, ge=1, le=100_000)
    # The web report form (/report): reports filed per client address (an IPv6 /64 counts
    # as one) per hour and per day, in every process together; and the least time between
    # the form being shown and sent (seconds): a script posting at once is refused, a
    # person filling the form never meets it.
    report_form_per_hour: int = Field(default=5, ge=1)
    report_form_per_day: int = Field(default=20, ge=1)
    report_form_min_seconds: float = Field(default=3.0, ge=0)

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.environment == "production" and self.demo:
            raise ValueError("the demo does not run in production: unset HOTLINE_DEMO")
        if self.demo and (self.telegram_token or self.zalo_oa_on or self.zalo_bot_token):
            # Real residents would reach a service whose shared demo accounts can
            # unseal them.
            raise ValueError(
                "the demo talks to its own simulated chat only: unset "
                "HOTLINE_TELEGRAM_TOKEN and the HOTLINE_ZALO_* settings, or run without it"
            )
        if self.environment == "production":
            for name in (
                "data_key",
                "telegram_token",
                "telegram_webhook_secret",
                "zalo_oa_secret_key",
                "zalo_app_secret",
                "zalo_bot_token",
                "zalo_bot_webhook_secret",
            ):
                value = getattr(self, name)
                if value is not None and value.get_secret_value().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"HOTLINE_{name.upper()} is a placeholder")
        if self.environment == "production" and self.data_key is None:
            raise ValueError(
                "HOTLINE_DATA_KEY is not set: production keeps reporters' identities sealed "
                "under it (`hotline new-data-key` prints one; keep it apart from backups)"
            )
        if self.data_key is not None:
            self.keyring()  # a malformed key is refused at start, before anything is sealed
        return self

    def keyring(self) -> Keyring:
        """The data keys (the look-up key is then agreed with the database, see
        backend.crypto.agree)."""
        previous = (
            self.data_key_previous.get_secret_value().split(",") if self.data_key_previous else []
        )
        if self.data_key is not None:
            return keyring_from(self.data_key.get_secret_value(), previous)
        if self.environment == "development" and self.data_key_file.is_file():
            return keyring_from(self.data_key_file.read_text(), previous)
        raise DataKeyError(
            "no data key: set HOTLINE_DATA_KEY (`hotline new-data-key` prints one), or run "
            f"`make run`, which makes a development key in {self.data_key_file}"
        )

    @property
    def served_over_https(self) -> bool:
        """Whether the public URL is https (any case): HSTS and Secure cookies then."""
        return urlsplit(self.public_url or "").scheme.lower() == "https"

    @property
    def zalo_oa_on(self) -> bool:
        return (
            bool(self.zalo_oa_app_id)
            and self.zalo_oa_secret_key is not None
            and self.zalo_app_secret is not None
            and (self.zalo_oa_access_token is not None or self.zalo_oa_refresh_token is not None)
        )

    def webhook_secret(self) -> str:
        """The secret_token for Telegram's setWebhook."""
        return _webhook_secret(self.telegram_webhook_secret, self.telegram_token, "telegram")

    def zalo_bot_webhook_secret_value(self) -> str:
        """The secret_token for the Zalo Bot Platform's setWebhook."""
        return _webhook_secret(self.zalo_bot_webhook_secret, self.zalo_bot_token, "zalo-bot")


def _webhook_secret(configured: SecretStr | None, token: SecretStr | None, name: str) -> str:
    """The configured secret, else one derived from the bot token, so every server
    process of one deployment agrees on it without sharing state."""
    if configured is not None:
        return configured.get_secret_value()
    if token is None:
        raise ValueError(f"no {name} token: no webhook secret")
    key = token.get_secret_value().encode()
    return hmac.new(key, f"hotline-{name}-webhook".encode(), hashlib.sha256).hexdigest()
