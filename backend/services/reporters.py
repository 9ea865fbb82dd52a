"""Reporters: a pseudonym for staff, a sealed identity, and consent records."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Consent, Reporter, ReporterIdentity

# The consent text shown to residents; bump when its wording changes.
CONSENT_TEXT_VERSION = "2026-11-v1"


async def reporter_for_chat(session: AsyncSession, channel: str, chat_id: str) -> Reporter:
    """The reporter behind a chat, created on first contact."""
    reporter, _ = await find_or_create_reporter(session, channel, chat_id)
    return reporter


async def find_or_create_reporter(
    session: AsyncSession, channel: str, chat_id: str
) -> tuple[Reporter, bool]:
    """The reporter behind a chat, and whether it was created just now."""
    found = await session.scalar(
        select(Reporter)
        .join(ReporterIdentity, ReporterIdentity.reporter_id == Reporter.id)
        .where(ReporterIdentity.channel == channel, ReporterIdentity.chat_id == chat_id)
    )
    if found is not None:
        return found, False
    # 32 random bits: a clash is unlikely and the unique index refuses one if it happens.
    reporter = Reporter(pseudonym=secrets.token_hex(4).upper())
    session.add(reporter)
    await session.flush()
    session.add(ReporterIdentity(reporter_id=reporter.id, channel=channel, chat_id=chat_id))
    return reporter, True


async def record_consent(session: AsyncSession, reporter_id: int, language: str) -> Consent:
    consent = Consent(reporter_id=reporter_id, text_version=CONSENT_TEXT_VERSION, language=language)
    session.add(consent)
    return consent


async def has_consent(session: AsyncSession, reporter_id: int) -> bool:
    found = await session.scalar(
        select(Consent.id).where(
            Consent.reporter_id == reporter_id,
            Consent.text_version == CONSENT_TEXT_VERSION,
            Consent.withdrawn_at.is_(None),
        )
    )
    return found is not None


async def set_phone(session: AsyncSession, reporter_id: int, phone: str | None) -> None:
    identity = await session.get(ReporterIdentity, reporter_id)
    if identity is not None and phone is not None:
        identity.phone = phone
