"""The three webhooks as a platform (or anyone else) reaches them: the service with
Telegram, the Zalo OA and the Zalo Bot all in webhook mode, sample updates of each, JSON
written byte by byte (Infinity, 1e400, nesting thousands deep), and the right credentials
(secret tokens, Zalo's signature over the raw body) or wrong ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from backend.config import Settings
from bot.zalo_bot import SECRET_HEADER as BOT_SECRET_HEADER
from bot.zalo_oa import SIGNATURE_HEADER, expected_signature
from tests.e2e.staff_http import web_settings
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.zalo_bot import FakeZaloBot
from tests.fakes.zalo_oa import OA_ID, FakeZaloOA

TELEGRAM, ZALO_OA, ZALO_BOT = "telegram", "zalo_oa", "zalo_bot"
CHANNELS = (TELEGRAM, ZALO_OA, ZALO_BOT)
PATHS = {
    TELEGRAM: "/telegram/webhook",
    ZALO_OA: "/zalo/oa/webhook",
    ZALO_BOT: "/zalo/bot/webhook",
}
TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# The event time every sample OA event carries (and is signed with).
OA_TIMESTAMP = "1763801234567"


def channel_settings(
    database_url: str,
    tmp_path: Path,
    *,
    telegram: FakeTelegram | None = None,
    oa: FakeZaloOA | None = None,
    bot: FakeZaloBot | None = None,
    mode: str = "polling",
) -> Settings:
    """A web-only server with the given channels on their stand-ins, taking updates by
    `mode` (polling or webhook; the Zalo OA has a webhook only)."""
    values: dict[str, Any] = {}
    if telegram is not None:
        values.update(
            telegram_token=SecretStr(telegram.token),
            telegram_api_url=telegram.url,
            telegram_mode=mode,
            telegram_poll_timeout=1,
            telegram_rate_per_chat=100.0,
        )
    if oa is not None:
        values.update(
            zalo_oa_app_id=oa.app_id,
            zalo_oa_secret_key=SecretStr(oa.oa_secret_key),
            zalo_app_secret=SecretStr(oa.app_secret),
            zalo_oa_access_token=SecretStr(oa.access_token),
            zalo_oa_refresh_token=SecretStr(oa.refresh_token),
            zalo_oa_api_url=oa.url,
            zalo_oauth_url=oa.url,
            zalo_oa_rate_per_chat=100.0,
        )
    if bot is not None:
        values.update(
            zalo_bot_token=SecretStr(bot.token),
            zalo_bot_api_url=bot.url,
            zalo_bot_mode=mode,
            zalo_bot_poll_timeout=1,
            zalo_bot_rate_per_chat=100.0,
        )
    settings = web_settings(database_url, tmp_path, **values)
    if oa is not None:
        oa.webhook_url = f"{settings.public_url}{PATHS[ZALO_OA]}"
    return settings


def all_webhooks(
    database_url: str, tmp_path: Path, api: FakeTelegram, oa: FakeZaloOA, zbot: FakeZaloBot
) -> Settings:
    """The service with the three channels on, each taking updates by webhook."""
    return channel_settings(database_url, tmp_path, telegram=api, oa=oa, bot=zbot, mode="webhook")


# --- sample updates, as each platform sends them ----------------------------------------


def telegram_update(n: int, text: str = "/start") -> dict[str, Any]:
    chat = 6_000 + n
    return {
        "update_id": 900_000 + n,
        "message": {
            "message_id": n,
            "date": 1_790_000_000,
            "chat": {"id": chat, "type": "private", "first_name": "Lan"},
            "from": {"id": chat, "is_bot": False, "first_name": "Lan", "language_code": "vi"},
            "text": text,
        },
    }


def oa_event(n: int, text: str = "/start") -> dict[str, Any]:
    user = f"85111164719{n:05d}"
    return {
        "app_id": "1234567890123456789",
        "user_id_by_app": f"app-{user}",
        "event_name": "user_send_text",
        "timestamp": OA_TIMESTAMP,
        "sender": {"id": user},
        "recipient": {"id": OA_ID},
        "message": {"msg_id": f"msg-{n:06d}", "text": text},
    }


def bot_update(n: int, text: str = "/start") -> dict[str, Any]:
    chat = f"a8f1c2d3{n:06d}"
    return {
        "ok": True,
        "result": {
            "event_name": "message.text.received",
            "message": {
                "from": {"id": chat, "display_name": "Lan", "is_bot": False},
                "chat": {"id": chat, "chat_type": "PRIVATE"},
                "message_id": f"m{n:08d}",
                "date": 1_790_000_000_000,
                "text": text,
            },
        },
    }


SAMPLES = {TELEGRAM: telegram_update, ZALO_OA: oa_event, ZALO_BOT: bot_update}


# --- JSON written byte by byte ----------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """Bytes written into the JSON as they are: Infinity, 1e400, [[[…]]] 5,000 deep."""

    token: bytes


def encode(value: Any) -> bytes:
    """value as JSON, with Raw parts as given (strings keep lone surrogates as bytes)."""
    if isinstance(value, Raw):
        return value.token
    if isinstance(value, dict):
        items = (encode(str(k)) + b":" + encode(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def nested(depth: int) -> Raw:
    return Raw(b"[" * depth + b"]" * depth)


# --- credentials ------------------------------------------------------------------------


def headers(
    settings: Settings,
    oa: FakeZaloOA,
    channel: str,
    body: bytes,
    *,
    valid: bool = True,
    timestamp: str = OA_TIMESTAMP,
) -> dict[str, str]:
    """The headers the platform sends with body (the OA signs it with timestamp), or
    wrong ones."""
    if channel == TELEGRAM:
        return {TELEGRAM_SECRET_HEADER: settings.webhook_secret() if valid else "wrong"}
    if channel == ZALO_BOT:
        return {BOT_SECRET_HEADER: settings.zalo_bot_webhook_secret_value() if valid else "x"}
    mac = expected_signature(oa.app_id, body, timestamp, oa.oa_secret_key)
    return {SIGNATURE_HEADER: f"mac={mac}" if valid else f"mac={mac[::-1]}"}
