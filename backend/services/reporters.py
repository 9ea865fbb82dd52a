"""Reporters: a pseudonym for staff, a sealed identity, and consent records.

The statements are Core and built once: a chat's first message creates its reporter in
the intake's hot path, where the ORM's unit of work would cost more than the SQL.
"""

from __future__ import annotations

import re
import secrets
from typing import cast

import phonenumbers
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import keys
from backend.models import Consent, Reporter, ReporterIdentity, utcnow

# The consent text shown to residents; bump when its wording changes.
CONSENT_TEXT_VERSION = "2026-12-v5"
# The consent an operator reads out to a caller (the phone form's script).
PHONE_CONSENT_VERSION = "2026-12-phone-v2"

_reporters = cast(Table, Reporter.__table__)
_identities = cast(Table, ReporterIdentity.__table__)
_consents = cast(Table, Consent.__table__)

_FIND = select(_identities.c.reporter_id).where(
    _identities.c.channel == bindparam("channel"),
    _identities.c.chat_key == bindparam("chat_key"),
)
_CREATE = insert(_reporters).returning(_reporters.c.id)
_SEAL = insert(_identities)
_CONSENTED = (
    select(_consents.c.id)
    .where(
        _consents.c.reporter_id == bindparam("reporter_id"),
        _consents.c.text_version == bindparam("version"),
        _consents.c.withdrawn_at.is_(None),
    )
    .limit(1)
)
_CONSENT = insert(_consents)


def normalise_phone(text: str) -> str | None:
    """A valid Vietnamese number in E.164 form, or None."""
    try:
        number = phonenumbers.parse(text.strip(), "VN")
    except phonenumbers.NumberParseException:
        return None
    if (
        not phonenumbers.is_valid_number(number)
        or phonenumbers.region_code_for_number(number) != "VN"
    ):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# A message that is a phone number and nothing else ("0912 345 678", "+84-912.345.678").
_PHONE_ONLY = re.compile(r"\+?[0-9][0-9 ().\-]{7,19}")


def phone_only(text: str) -> str | None:
    """normalise_phone() of a text that is only a phone number; None for anything else
    (a sentence that happens to hold someone's number is not the reporter's phone)."""
    stripped = text.strip()
    return normalise_phone(stripped) if _PHONE_ONLY.fullmatch(stripped) else None


async def find_reporter(session: AsyncSession, channel: str, chat_id: str) -> int | None:
    """The reporter behind a chat, if it ever reported (never created here)."""
    found = await session.scalar(
        _FIND, {"channel": channel, "chat_key": keys().chat_key(channel, chat_id)}
    )
    return int(found) if found is not None else None


async def is_erased(session: AsyncSession, reporter_id: int) -> bool:
    """Whether the reporter's identity was erased (it is then no one's any more)."""
    at = await session.scalar(select(_reporters.c.erased_at).where(_reporters.c.id == reporter_id))
    return at is not None


async def find_or_create_reporter(
    session: AsyncSession, channel: str, chat_id: str
) -> tuple[int, bool]:
    """The id of the reporter behind a chat, and whether it was created just now."""
    found = await find_reporter(session, channel, chat_id)
    if found is not None:
        return found, False
    # 32 random bits: a clash is unlikely and the unique index refuses one if it happens.
    pseudonym = secrets.token_hex(4).upper()
    reporter_id = await session.scalar(_CREATE, {"pseudonym": pseudonym, "created_at": utcnow()})
    if reporter_id is None:
        raise RuntimeError("INSERT … RETURNING gave no id")
    await session.execute(
        _SEAL,
        {
            "reporter_id": reporter_id,
            "channel": channel,
            "chat_id": chat_id,
            "chat_key": keys().chat_key(channel, chat_id),
        },
    )
    return int(reporter_id), True


async def create_phone_reporter(
    session: AsyncSession, name: str | None, phone: str | None, address: str | None
) -> int:
    """A reporter who called the hotline: details sealed like a chat reporter's."""
    reporter_id = await session.scalar(
        _CREATE, {"pseudonym": secrets.token_hex(4).upper(), "created_at": utcnow()}
    )
    if reporter_id is None:
        raise RuntimeError("INSERT … RETURNING gave no id")
    display = " — ".join(part for part in (name, address) if part) or None
    await session.execute(
        _SEAL,
        {
            "reporter_id": reporter_id,
            "channel": "phone",
            "chat_id": None,
            "display_name": display,
            "phone": phone,
            "phone_key": keys().phone_key(phone) if phone else None,
        },
    )
    return int(reporter_id)


async def record_consent(
    session: AsyncSession, reporter_id: int, language: str, *, version: str = CONSENT_TEXT_VERSION
) -> None:
    await session.execute(
        _CONSENT,
        {
            "reporter_id": reporter_id,
            "text_version": version,
            "language": language,
            "granted_at": utcnow(),
        },
    )


async def has_consent(session: AsyncSession, reporter_id: int) -> bool:
    found = await session.scalar(
        _CONSENTED, {"reporter_id": reporter_id, "version": CONSENT_TEXT_VERSION}
    )
    return found is not None


async def set_phone(session: AsyncSession, reporter_id: int, phone: str | None) -> None:
    identity = await session.get(ReporterIdentity, reporter_id)
    if identity is not None and phone is not None:
        identity.phone = phone
        identity.phone_key = keys().phone_key(phone)
