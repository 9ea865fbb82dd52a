"""Settings for every process, read from HOTLINE_* environment variables."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "placeholder"})


class Settings(BaseSettings):
    """One object for the whole configuration; secrets are SecretStr."""

    model_config = SettingsConfigDict(env_prefix="HOTLINE_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./var/hotline.db"
    media_dir: Path = Path("./var/media")

    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_mode: Literal["polling", "webhook"] = "polling"
    telegram_webhook_secret: SecretStr | None = None
    public_url: str | None = None
    # Telegram asks for about one message a second per chat and 30 a second overall.
    telegram_rate_global: float = 30.0
    telegram_rate_per_chat: float = 1.0
    telegram_poll_timeout: int = 30

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

    # Without a Telegram token, outside production: run the built-in Bot API stand-in
    # with the chat simulator at /demo/chat and seeded demo staff accounts.
    demo_chat: bool = True

    outbox_enabled: bool = True
    outbox_max_attempts: int = 8
    outbox_poll_interval: float = 1.0

    # A province's deadline policy on top of the shipped defaults (TOML, see
    # backend/data/deadlines.toml); how often overdue tickets are looked for (seconds).
    deadlines_file: Path | None = None
    deadline_interval: float = 60.0
    deadline_worker_enabled: bool = True

    # Largest photo accepted from a chat, in bytes (the Bot API serves files up to 20 MB).
    max_photo_bytes: int = 20 * 1024 * 1024

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.environment == "production":
            for name in ("telegram_token", "telegram_webhook_secret"):
                value = getattr(self, name)
                if value is not None and value.get_secret_value().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"HOTLINE_{name.upper()} is a placeholder")
        return self

    def webhook_secret(self) -> str:
        """The secret_token for setWebhook.

        Without a configured one it is derived from the bot token, so every server
        process of one deployment agrees on it without sharing state.
        """
        if self.telegram_webhook_secret is not None:
            return self.telegram_webhook_secret.get_secret_value()
        if self.telegram_token is None:
            raise ValueError("no Telegram token: no webhook secret")
        token = self.telegram_token.get_secret_value().encode()
        return hmac.new(token, b"hotline-telegram-webhook", hashlib.sha256).hexdigest()
